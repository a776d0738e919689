"""Listener filters, queues and markers, without sockets."""

from __future__ import annotations

import pytest

from qmpevents.client.listeners import (
    Dropped,
    EventFilter,
    EventListener,
    Gap,
    plain_data,
)
from qmpevents.errors import EventsDropped
from qmpevents.protocol.encoding import encode_event
from qmpevents.schema.decode import decode_event
from qmpevents.schema.events import Event, MigrationPass, MigrationPassData
from qmpevents.schema.types import Timestamp


def _pass(n: int) -> Event:
    return decode_event(encode_event("MIGRATION_PASS", 1, 2, {"pass": n}).rstrip())


def _listener(maxsize: int = 3, **options: object) -> tuple[EventListener, list[EventListener]]:
    left: list[EventListener] = []
    listener = EventListener(EventFilter(), maxsize=maxsize, leave=left.append, **options)  # type: ignore[arg-type]
    return listener, left


def test_name_filter_exact_glob_and_cache_bound() -> None:
    f = EventFilter(["QUORUM_*", "STOP", "VSERPORT_?HANGE"])
    assert f.accepts_name("QUORUM_FAILURE")
    assert f.accepts_name("STOP")
    assert f.accepts_name("VSERPORT_CHANGE")
    assert not f.accepts_name("quorum_failure")  # QMP names are case-sensitive
    for i in range(5000):
        f.accepts_name(f"NEW_{i}")
    assert len(f._cache) <= 1024


def test_where_reads_wire_names_and_nested_paths() -> None:
    dump = decode_event(
        encode_event(
            "DUMP_COMPLETED",
            1,
            2,
            {"result": {"status": "failed", "completed": 0, "total": 9}, "error": "x"},
        ).rstrip()
    )
    assert EventFilter(where={"result.status": "failed", "error": "x"}).accepts(dump)
    assert not EventFilter(where={"result.status": "completed"}).accepts(dump)
    assert not EventFilter(where={"error.deeper": 1}).accepts(dump)


def test_plain_data_of_an_event_built_in_python() -> None:
    built = MigrationPass(timestamp=Timestamp(1, 2), data=MigrationPassData(pass_=4))
    assert plain_data(built) == {"pass": 4}


def test_drop_oldest_keeps_a_gap_and_reports_the_count() -> None:
    listener, _ = _listener(maxsize=2, policy="drop-oldest")
    gap = Gap(1.0, 2.5)
    listener.mark(gap)
    for n in range(1, 5):
        listener.offer(_pass(n))
    assert listener.dropped == 3
    assert listener.get_nowait() == Dropped(3)
    assert listener.get_nowait() == gap
    item = listener.get_nowait()
    assert isinstance(item, MigrationPass) and item.data.pass_ == 4
    assert listener.get_nowait() is None
    assert gap.duration == 1.5


async def test_end_policy_leaves_and_raises_after_the_queue() -> None:
    listener, left = _listener(maxsize=1, policy="end")
    listener.offer(_pass(1))
    listener.offer(_pass(2))
    listener.offer(_pass(3))  # ignored: the listener has ended
    assert left == [listener]
    assert isinstance(await anext(listener), MigrationPass)
    with pytest.raises(EventsDropped, match=r"events\(\*\): queue full, 1 event"):
        await anext(listener)


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError):
        _listener(maxsize=0)
    with pytest.raises(ValueError, match="choose from block, drop-oldest, end"):
        _listener(policy="disconnect")
    with pytest.raises(ValueError, match="hard_limit"):
        _listener(maxsize=10, policy="block", hard_limit=5)


def test_block_policy_presses_at_maxsize_and_releases_at_a_quarter() -> None:
    calls: list[bool] = []
    listener, _ = _listener(
        maxsize=8, policy="block", hard_limit=12, pressure=lambda _l, full: calls.append(full)
    )
    listener.offer_many([_pass(n) for n in range(1, 8)])
    assert calls == []
    listener.offer(_pass(8))
    assert calls == [True]
    listener.offer_many([_pass(n) for n in range(9, 13)])  # the client still reads (a reply)
    assert calls == [True] and listener.dropped == 0
    listener.offer(_pass(13))  # past the hard limit: the oldest gives way, counted
    assert listener.dropped == 1
    taken = []
    while len(listener._queue) > 3:
        taken.append(listener.get_nowait())
    assert calls == [True] and isinstance(taken[0], Dropped)
    taken.append(listener.get_nowait())  # down to 2 = maxsize // 4: read again
    assert calls == [True, False]
    passes = [i.data.pass_ for i in taken[1:] if isinstance(i, MigrationPass)]
    assert passes == list(range(2, 12))


def test_an_ended_blocking_listener_never_holds_reading_back() -> None:
    calls: list[bool] = []
    listener, _ = _listener(maxsize=2, policy="block", pressure=lambda _l, f: calls.append(f))
    listener.offer_many([_pass(1), _pass(2)])
    listener.close()
    assert calls == [True, False]


async def test_once_listener_keeps_the_first_match_and_ignores_markers() -> None:
    listener, left = _listener(once=True)
    listener.mark(Gap(1.0, 2.0))
    listener.offer(_pass(1))
    listener.offer(_pass(2))
    assert left == [listener]
    first = await anext(listener)
    assert isinstance(first, MigrationPass) and first.data.pass_ == 1
    with pytest.raises(StopAsyncIteration):
        await anext(listener)


def test_plain_data_is_computed_once_per_event() -> None:
    event = _pass(7)
    first = plain_data(event)
    assert first == {"pass": 7}
    assert plain_data(event) is first  # every listener's filter shares it
    listeners = [_listener(policy="drop-oldest")[0] for _ in range(3)]
    for listener in listeners:
        listener.filter = EventFilter(where={"pass": 7})
        listener.offer(event)
    assert all(listener.get_nowait() is event for listener in listeners)

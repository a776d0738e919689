from __future__ import annotations

from pathlib import Path

import pytest

from qmpevents.collect.fanout import COLLECTOR_STOPPED, Fanout
from qmpevents.collect.history import History
from qmpevents.collect.records import ConnectionState, EventRecord, GapRecord, Record
from qmpevents.collect.sqlite_store import BatchPolicy, SQLiteStore
from qmpevents.schema.decode import decode_event
from tests.collect.conftest import raw_event
from tests.collect.test_metrics import CountingSink
from tests.helpers import FakeClock


class StuckSink(CountingSink):
    """A sink whose destination never accepts anything: it only buffers, bounded."""

    name = "stuck"
    limit = 3

    def submit(self, record: Record) -> None:
        if len(self.records) == self.limit:
            self.records.pop(0)
            self.dropped += 1
        self.records.append(record)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=1_780_000_000.0)


async def test_events_reach_every_sink_and_the_metrics(clock: FakeClock) -> None:
    good, stuck = CountingSink(), StuckSink()
    fanout = Fanout([good, stuck], clock=clock)
    await fanout.start()
    for i in range(10):
        record = fanout.record_event("web", decode_event(raw_event(i)))
    assert record.received_at == clock.now
    assert len(good.records) == 10  # the stuck sink held nobody up...
    assert (len(stuck.records), stuck.dropped) == (3, 7)  # ...and counted its own drops
    metrics = fanout.metrics
    assert metrics.value("qmpevents_events_total", vm="web", event="VSERPORT_CHANGE") == 10
    assert metrics.value("qmpevents_last_event_timestamp_seconds", vm="web") == clock.now
    assert metrics.value("qmpevents_sink_dropped_total", sink="stuck") == 7
    assert metrics.value("qmpevents_sink_queue_depth", sink="fake") == 10


class StateCountingSink(CountingSink):
    """A sink that keeps connection states too (as the SQLite history does)."""

    def __init__(self) -> None:
        super().__init__()
        self.states: list[ConnectionState] = []

    def submit_state(self, state: ConnectionState) -> None:
        self.states.append(state)


async def test_gaps_follow_the_connection(clock: FakeClock) -> None:
    sink, stateful = CountingSink(), StateCountingSink()
    fanout = Fanout([sink, stateful], clock=clock)
    fanout.record_attached("web")
    assert fanout.metrics.value("qmpevents_vm_connected", vm="web") == 0
    clock.advance(1)
    # not connected yet: nothing was missed, no gap
    assert fanout.record_disconnected("web", "connection refused") is None
    clock.advance(1)
    assert fanout.record_connected("web") is None
    connected_at = clock.now
    clock.advance(5)
    fanout.record_disconnected("web", "connection lost")
    clock.advance(1)
    fanout.record_disconnected("web", "connection refused")  # still the same gap
    clock.advance(2)
    assert fanout.record_connected("web") == GapRecord(
        "web", clock.now - 3, clock.now, "connection lost"
    )
    await fanout.aclose()
    start = 1_780_000_000.0  # the clock fixture's
    gaps = [
        GapRecord("web", start + 7, None, "connection lost"),
        GapRecord("web", start + 7, start + 10, "connection lost"),
        GapRecord("web", start + 10, None, COLLECTOR_STOPPED),
    ]
    assert sink.records == gaps
    assert stateful.records == []  # its gaps come with the states, once
    assert stateful.states == [
        ConnectionState("web", True, connected_at),
        ConnectionState("web", False, start + 7, gaps[0]),
        ConnectionState("web", True, start + 10, gaps[1]),
        ConnectionState("web", False, start + 10, gaps[2]),
    ]
    metrics = fanout.metrics
    assert metrics.value("qmpevents_gaps_total", vm="web") == 2
    assert metrics.value("qmpevents_reconnects_total", vm="web") == 1
    assert metrics.value("qmpevents_vm_connected", vm="web") == 0


async def test_a_vm_that_never_connected_gets_no_gap(clock: FakeClock) -> None:
    sink = StateCountingSink()
    fanout = Fanout([sink], clock=clock)
    fanout.record_attached("idle")
    assert fanout.record_disconnected("idle", "socket removed") is None  # detached
    fanout.forget("idle")
    fanout.record_attached("idle")  # back, and still never connected
    await fanout.aclose()
    assert (sink.records, sink.states) == ([], [])
    assert fanout.metrics.value("qmpevents_gaps_total", vm="idle") is None


async def test_a_restarted_collector_closes_the_gap_of_the_previous_run(
    clock: FakeClock, tmp_path: Path
) -> None:
    clock.advance(10)  # after the event's QEMU timestamp
    path = tmp_path / "events.db"
    batching = BatchPolicy(size=100, interval=0.05)
    first = Fanout([SQLiteStore(path, batching=batching)], clock=clock)
    await first.start()
    first.record_connected("web")
    first.record_event("web", decode_event(raw_event(1)))
    await first.aclose()
    stopped_at = clock.now

    clock.advance(60)
    with History(path) as history:
        left_open = history.open_gaps()
    second = Fanout([SQLiteStore(path, batching=batching)], open_gaps=left_open, clock=clock)
    await second.start()
    second.record_connected("web")
    second.record_gap("db", clock.now - 30, None, "collector killed")
    await second.aclose()

    with History(path) as history:
        web = history.query(vm="web")
        assert [type(r) for r in web] == [EventRecord, GapRecord, GapRecord]
        assert web[1] == GapRecord("web", stopped_at, stopped_at + 60, COLLECTOR_STOPPED)
        assert history.open_gaps() == [
            GapRecord("db", clock.now - 30, None, "collector killed"),
            GapRecord("web", clock.now, None, COLLECTOR_STOPPED),  # the second stop
        ]

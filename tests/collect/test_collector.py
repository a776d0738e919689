"""The collector in this process: QMP servers -> Collector -> SQLite and NATS, counted exactly."""

from __future__ import annotations

import asyncio
import collections
import itertools
import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qmpevents.collect.collector import NOT_RUNNING, SOCKET_REMOVED, Collector
from qmpevents.collect.config import CollectorConfig, VMSpec
from qmpevents.collect.fanout import COLLECTOR_STOPPED, Fanout
from qmpevents.collect.history import History
from qmpevents.collect.nats_sink import GAP_TOKEN
from qmpevents.collect.sqlite_store import SQLiteStore
from qmpevents.schema.decode import decode_event
from tests.collect.conftest import NatsServer, raw_event
from tests.collect.sources import Source, stored
from tests.collect.test_nats_sink import read_stream


async def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def sources(tmp_path: Path, count: int) -> list[Source]:
    return [await Source(f"vm{i}", tmp_path / f"vm{i}.qmp").start() for i in range(count)]


def config_for(tmp_path: Path, vms: list[Source], **options: object) -> CollectorConfig:
    return CollectorConfig(
        vms=tuple(VMSpec(s.name, str(s.path)) for s in vms),
        db=tmp_path / "events.db",
        batch_interval=0.05,
        **options,  # type: ignore[arg-type]
    )


async def all_connected(collector: Collector) -> None:
    await wait_for(lambda: all(e.connected for e in collector.endpoints.values()))


def received(collector: Collector, vm: str) -> int:
    """Events of ``vm`` the collector recorded so far (from its metrics)."""
    return sum(
        int(sample.value)
        for metric in collector.metrics.registry.collect()
        if metric.name == "qmpevents_events"
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["vm"] == vm
    )


async def test_every_event_of_every_vm_reaches_sqlite_and_nats(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    vms = await sources(tmp_path, 4)
    collector = Collector(config_for(tmp_path, vms, nats=nats_server.url))
    await collector.start()
    await all_connected(collector)
    for burst in range(5):
        for i, vm in enumerate(vms):
            vm.emit(20 + 7 * i + burst)  # different counts per VM
        await asyncio.sleep(0.01)
    await wait_for(lambda: all(received(collector, vm.name) == len(vm.sent) for vm in vms))
    await collector.aclose()

    events, gaps = stored(tmp_path / "events.db")
    messages = await read_stream(nats_server.url, sum(len(vm.sent) for vm in vms) + 8)
    published: dict[str, collections.Counter[bytes]] = collections.defaultdict(collections.Counter)
    for message in messages:
        if not message.subject.endswith(GAP_TOKEN):
            published[message.headers["Qmp-Vm"]][message.data] += 1  # type: ignore[index]
    for vm in vms:
        assert collections.Counter(r.raw for r in events[vm.name]) == vm.counts()
        assert published[vm.name] == vm.counts()
        by_name = collections.Counter(r.name for r in events[vm.name])
        for name, count in by_name.items():
            assert (
                collector.metrics.value("qmpevents_events_total", vm=vm.name, event=name) == count
            )
        # no gap before the first connection: only the stop's, still open
        assert [(g.reason, g.ended is None) for g in gaps[vm.name]] == [(COLLECTOR_STOPPED, True)]
    for vm in vms:
        await vm.close()


async def test_a_watched_socket_that_vanishes_and_comes_back(tmp_path: Path) -> None:
    watched = tmp_path / "run"
    watched.mkdir()
    (watched / "not-a-socket.qmp").write_text("ignored: only sockets are attached")
    collector = Collector(
        CollectorConfig(
            watch_dir=watched, watch_interval=0.02, db=tmp_path / "events.db", batch_interval=0.05
        )
    )
    await collector.start()
    first = await Source("web", watched / "web.qmp").start()
    await wait_for(lambda: "web" in collector.endpoints and collector.endpoints["web"].connected)
    assert list(collector.endpoints) == ["web"]
    first.emit(10)
    await wait_for(lambda: received(collector, "web") == 10)
    os.unlink(first.path)  # the socket goes while its server still runs
    # detached, and its series went with it
    await wait_for(lambda: "web" not in collector.endpoints and not collector.metrics.vms())
    second = await Source("web", watched / "web.qmp").start()
    await wait_for(lambda: "web" in collector.endpoints and collector.endpoints["web"].connected)
    second.emit(15)
    await wait_for(lambda: received(collector, "web") == 15)  # counted afresh
    await collector.aclose()

    events, gaps = stored(tmp_path / "events.db")
    assert collections.Counter(r.raw for r in events["web"]) == first.counts() + second.counts()
    reasons = [(g.reason, g.ended is not None) for g in gaps["web"]]
    assert reasons == [(SOCKET_REMOVED, True), (COLLECTOR_STOPPED, False)]
    removed = gaps["web"][0]
    assert removed.ended is not None and removed.ended > removed.started
    await first.close()
    await second.close()


async def test_nats_restart_loses_nothing_past_the_local_buffer(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    (vm,) = await sources(tmp_path, 1)
    collector = Collector(config_for(tmp_path, [vm], nats=nats_server.url))
    await collector.start()
    await all_connected(collector)
    assert collector.nats is not None
    nats = collector.nats
    vm.emit(50)
    await wait_for(lambda: nats.published >= 50)  # the events (no gap before a connection)
    nats_server.stop()
    for _ in range(10):
        vm.emit(20)
        await asyncio.sleep(0.02)
    await wait_for(lambda: nats.depth >= 200)
    nats_server.start()
    vm.emit(50)
    await wait_for(lambda: received(collector, "vm0") == 300)
    await wait_for(lambda: nats.depth == 0 and nats.last_error is None, timeout=30)
    await collector.aclose()

    messages = await read_stream(nats_server.url, 300)
    events = collections.Counter(m.data for m in messages if not m.subject.endswith(GAP_TOKEN))
    assert events == vm.counts() and len(vm.sent) == 300
    assert nats.dropped == 0
    await vm.close()


async def test_a_queue_overflow_is_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (vm,) = await sources(tmp_path, 1)
    collector = Collector(config_for(tmp_path, [vm], queue_size=5))
    await collector.start()
    await all_connected(collector)
    vm.emit(500)  # one read brings them all while the collector's task is not running
    await asyncio.sleep(0.2)
    await collector.aclose()

    events, _ = stored(tmp_path / "events.db")
    dropped = collector.metrics.value("qmpevents_listener_dropped_total", vm="vm0")
    assert dropped is not None and dropped > 0
    assert len(events["vm0"]) + dropped == 500
    assert "event(s) lost: the connection queue (5) overflowed" in caplog.text
    await vm.close()


async def test_a_restart_after_sigkill_records_the_time_not_running(tmp_path: Path) -> None:
    # What a killed collector leaves: a VM connected (no gap at all) with an event, one
    # never connected, one lost (its gap open), and one connected with no event.
    db = tmp_path / "events.db"
    store = SQLiteStore(db)
    store.open()
    fanout = Fanout([store], clock=itertools.count(1000).__next__)
    fanout.record_attached("idle")  # never connects: no gap, no state
    fanout.record_connected("gone")  # at 1000
    fanout.record_event("gone", decode_event(raw_event(1)))  # 1001
    fanout.record_connected("lost")  # 1002
    fanout.record_disconnected("lost", "connection lost: EOF")  # 1003
    fanout.record_connected("quiet")  # 1004
    store.close()
    with History(db) as history:
        assert [g.vm for g in history.open_gaps()] == ["lost"]
        assert history.left_connected() == [("gone", 1001), ("quiet", 1004)]

    vms = [await Source(name, tmp_path / f"{name}.qmp").start() for name in ("gone", "idle")]
    collector = Collector(config_for(tmp_path, vms))
    await collector.start()
    await all_connected(collector)
    await collector.aclose()
    _, gaps = stored(db)
    assert [(g.reason, g.started, g.ended is not None) for g in gaps["gone"]] == [
        (NOT_RUNNING, 1001, True),  # from the last event received to the new connection
        (COLLECTOR_STOPPED, gaps["gone"][1].started, False),
    ]
    # not attached now: its gap from the time it was last known to receive, still open
    assert [(g.reason, g.started, g.ended) for g in gaps["quiet"]] == [(NOT_RUNNING, 1004, None)]
    # a VM whose gap was still open keeps that one gap, not attached, still open
    assert [(g.reason, g.ended) for g in gaps["lost"]] == [("connection lost: EOF", None)]
    # never connected before the kill: nothing was missed, only this run's stop
    assert [g.reason for g in gaps["idle"]] == [COLLECTOR_STOPPED]
    for vm in vms:
        await vm.close()


async def test_a_vm_that_never_connects_has_no_gap_in_any_view(tmp_path: Path) -> None:
    (vm,) = await sources(tmp_path, 1)
    never = VMSpec("never", str(tmp_path / "never.qmp"))  # nothing listens there
    config = CollectorConfig(
        vms=(VMSpec(vm.name, str(vm.path)), never),
        db=tmp_path / "events.db",
        batch_interval=0.05,
        backoff=0.01,
        max_backoff=0.02,
    )
    collector = Collector(config)
    await collector.start()
    await wait_for(lambda: collector.endpoints["vm0"].connected)
    vm.emit(3)
    await wait_for(lambda: received(collector, "vm0") == 3)
    await asyncio.sleep(0.2)  # attempts at "never" fail meanwhile
    assert collector.metrics.value("qmpevents_vm_connected", vm="never") == 0
    assert collector.metrics.value("qmpevents_gaps_total", vm="never") is None
    assert collector.metrics.value("qmpevents_gaps_total", vm="vm0") is None
    await collector.aclose()

    db = tmp_path / "events.db"
    events, gaps = stored(db)
    assert "never" not in gaps and "never" not in events
    assert [g.reason for g in gaps["vm0"]] == [COLLECTOR_STOPPED]  # the stop, nothing before
    with History(db) as history:
        assert {r.vm for r in history.query()} == {"vm0"}
        assert {c.vm for c in history.stats()} == {"vm0"}
        assert history.left_connected() == []  # stopped: nobody left connected
    # a second run: still nothing for "never", vm0's stop gap closed by its connection
    collector = Collector(config)
    await collector.start()
    await wait_for(lambda: collector.endpoints["vm0"].connected)
    await collector.aclose()
    _, gaps = stored(db)
    assert "never" not in gaps
    assert [(g.reason, g.ended is None) for g in gaps["vm0"]] == [
        (COLLECTOR_STOPPED, False),
        (COLLECTOR_STOPPED, True),
    ]
    await vm.close()


async def test_a_status_line_per_connection_and_loss(tmp_path: Path) -> None:
    lines: list[tuple[str, bool, str]] = []
    missing = VMSpec("later", str(tmp_path / "later.qmp"))
    collector = Collector(
        CollectorConfig(vms=(missing,), db=tmp_path / "events.db", backoff=0.01, max_backoff=0.02),
        on_status=lambda vm, up, detail: lines.append((vm, up, detail)),
    )
    await collector.start()
    await asyncio.sleep(0.2)  # many failed attempts, one line
    source = await Source("later", tmp_path / "later.qmp").start()
    await all_connected(collector)
    await source.close()
    await wait_for(lambda: not collector.endpoints["later"].connected)
    await collector.aclose()
    assert [(vm, up) for vm, up, _ in lines[:3]] == [
        ("later", False),
        ("later", True),
        ("later", False),
    ]
    assert "cannot connect" in lines[0][2] and "connection lost" in lines[2][2]

from __future__ import annotations

from pathlib import Path

import pytest

from qmpevents.collect.fanout import COLLECTOR_STOPPED, Fanout
from qmpevents.collect.history import History
from qmpevents.collect.records import EventRecord, GapRecord, Record
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


async def test_gaps_follow_the_connection(clock: FakeClock) -> None:
    sink = CountingSink()
    fanout = Fanout([sink], clock=clock)
    fanout.record_disconnected("web", "not connected yet")
    clock.advance(1)
    fanout.record_disconnected("web", "connection refused")  # still the same gap
    clock.advance(1)
    assert fanout.record_connected("web") == GapRecord(
        "web", clock.now - 2, clock.now, "not connected yet"
    )
    clock.advance(5)
    fanout.record_disconnected("web", "connection lost")
    clock.advance(3)
    fanout.record_connected("web")
    await fanout.aclose()
    start = 1_780_000_000.0  # the clock fixture's
    assert sink.records == [
        GapRecord("web", start, None, "not connected yet"),
        GapRecord("web", start, start + 2, "not connected yet"),
        GapRecord("web", start + 7, None, "connection lost"),
        GapRecord("web", start + 7, start + 10, "connection lost"),
        GapRecord("web", start + 10, None, COLLECTOR_STOPPED),
    ]
    metrics = fanout.metrics
    assert metrics.value("qmpevents_gaps_total", vm="web") == 3
    assert metrics.value("qmpevents_reconnects_total", vm="web") == 1
    assert metrics.value("qmpevents_vm_connected", vm="web") == 0


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

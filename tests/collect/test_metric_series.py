"""Metric series are bounded: per-VM series leave with the VM, event names are capped."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from qmpevents.collect.collector import Collector
from qmpevents.collect.config import CollectorConfig
from qmpevents.collect.fanout import Fanout
from qmpevents.collect.metrics import CollectorMetrics
from qmpevents.schema.decode import decode_event
from tests.collect.sources import Source
from tests.collect.test_metrics import CountingSink

OTHER = "other"  # the label value of names past the cap


class NullSink(CountingSink):
    def submit(self, record: object) -> None:
        pass


def vms(metrics: CollectorMetrics) -> set[str]:
    return {
        sample.labels["vm"]
        for metric in metrics.registry.collect()
        for sample in metric.samples
        if "vm" in sample.labels
    }


def event_series(metrics: CollectorMetrics) -> dict[tuple[str, str], float]:
    return {
        (sample.labels["vm"], sample.labels["event"]): sample.value
        for metric in metrics.registry.collect()
        if metric.name == "qmpevents_events"
        for sample in metric.samples
        if sample.name == "qmpevents_events_total"
    }


def test_400k_distinct_event_names_of_one_vm_make_a_bounded_number_of_series() -> None:
    fanout = Fanout([NullSink()])
    names = ["STOP", "RESUME", "SOME_FUTURE_EVENT", "not-an-event", "X" * 65]
    names += [f"E{i}" for i in range(400_000)]
    template = b'{"timestamp": {"seconds": 1780000000, "microseconds": 0}, "event": "%s"}'
    for name in names:
        fanout.record_event("noisy", decode_event(template % name.encode()))
    series = event_series(fanout.metrics)
    assert len(series) <= 3 + 100 + 1  # known names + the cap + "other"
    assert sum(series.values()) == len(names)  # every event is still counted
    assert series[("noisy", "STOP")] == 1 and series[("noisy", "RESUME")] == 1
    assert series[("noisy", "SOME_FUTURE_EVENT")] == 1  # unknown but event-shaped: its own
    assert ("noisy", "not-an-event") not in series and ("noisy", "X" * 65) not in series
    assert series[("noisy", OTHER)] == len(names) - 3 - 99
    # the cap is per collector: another VM's new names are "other" too, known ones are not
    fanout.record_event("quiet", decode_event(template % b"E399999"))
    fanout.record_event("quiet", decode_event(template % b"WATCHDOG"))
    series = event_series(fanout.metrics)
    assert series[("quiet", OTHER)] == 1 and series[("quiet", "WATCHDOG")] == 1


async def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_the_series_of_a_vm_that_goes_away_are_removed(tmp_path: Path) -> None:
    watched = tmp_path / "run"
    watched.mkdir()
    stays = await Source("stays", watched / "stays.qmp").start()
    goes = await Source("goes", watched / "goes.qmp").start()
    collector = Collector(
        CollectorConfig(watch_dir=watched, watch_interval=0.02, db=tmp_path / "events.db")
    )
    await collector.start()
    try:
        await wait_for(
            lambda: (
                len(collector.endpoints) == 2
                and all(e.connected for e in collector.endpoints.values())
            )
        )
        stays.emit(3)
        goes.emit(3)
        await wait_for(lambda: sum(event_series(collector.metrics).values()) == 6)
        collector.metrics.listener_dropped.labels("goes").inc(0)  # as an overflow would
        assert vms(collector.metrics) == {"stays", "goes"}
        os.unlink(goes.path)  # discovery reports it vanished: the VM is detached
        await wait_for(lambda: "goes" not in collector.endpoints)
        await wait_for(lambda: vms(collector.metrics) == {"stays"})  # after the detach
        assert collector.metrics.value("qmpevents_vm_connected", vm="goes") is None
        assert collector.metrics.value("qmpevents_gaps_total", vm="goes") is None
        assert collector.metrics.value("qmpevents_last_event_timestamp_seconds", vm="goes") is None
        assert collector.metrics.value("qmpevents_vm_connected", vm="stays") == 1
        assert {vm for vm, _ in event_series(collector.metrics)} == {"stays"}
    finally:
        await collector.aclose()
        await stays.close()
        await goes.close()

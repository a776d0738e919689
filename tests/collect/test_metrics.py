from __future__ import annotations

import urllib.request

import pytest

from qmpevents.collect.metrics import CollectorMetrics, start_metrics_server
from qmpevents.collect.records import GapRecord, Record
from qmpevents.errors import ConfigError


class CountingSink:
    name = "fake"

    def __init__(self) -> None:
        self.records: list[Record] = []
        self.dropped = 0
        self.failures = 0
        self.rejected: dict[str, int] = {}

    @property
    def depth(self) -> int:
        return len(self.records)

    def submit(self, record: Record) -> None:
        self.records.append(record)

    async def start(self) -> None:
        pass

    async def aclose(self) -> None:
        pass


def test_each_collector_has_its_own_registry() -> None:
    first, second = CollectorMetrics(), CollectorMetrics()
    first.events.labels("vm", "STOP").inc()
    assert first.value("qmpevents_events_total", vm="vm", event="STOP") == 1
    assert second.value("qmpevents_events_total", vm="vm", event="STOP") is None


def test_sink_depth_and_drops_are_read_when_scraped() -> None:
    metrics = CollectorMetrics()
    sink = CountingSink()
    metrics.watch_sink(sink)
    assert metrics.value("qmpevents_sink_queue_depth", sink="fake") == 0
    sink.submit(GapRecord("vm", 1.0, None, "lost"))
    sink.dropped = 4
    assert metrics.value("qmpevents_sink_queue_depth", sink="fake") == 1
    assert metrics.value("qmpevents_sink_dropped_total", sink="fake") == 4


def test_the_http_endpoint_serves_the_metrics() -> None:
    metrics = CollectorMetrics()
    metrics.connected.labels("web").set(1)
    metrics.gaps.labels("web").inc(2)
    server = start_metrics_server(metrics, port=0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    finally:
        server.close()
    assert 'qmpevents_vm_connected{vm="web"} 1.0' in text
    assert 'qmpevents_gaps_total{vm="web"} 2.0' in text


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "example.org"])
def test_a_non_loopback_address_needs_an_explicit_opt_in(host: str) -> None:
    with pytest.raises(ConfigError, match="loopback"):
        start_metrics_server(CollectorMetrics(), host=host, port=0)

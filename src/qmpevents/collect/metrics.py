"""Prometheus metrics of a collector, on a registry of its own, and the HTTP endpoint.

Exposed (all prefixed ``qmpevents_``):

- ``events_total{vm,event}``: events received;
- ``vm_connected{vm}``: 1 while the VM's monitor is connected, else 0;
- ``reconnects_total{vm}``: connections after the first one;
- ``gaps_total{vm}``: intervals without a connection (recorded gaps);
- ``last_event_timestamp_seconds{vm}``: when the VM's last event was received;
- ``listener_dropped_total{vm}``: events lost before recording because the VM's
  connection queue overflowed (the collector could not keep up);
- ``sink_queue_depth{sink}`` and ``sink_dropped_total{sink}``: records waiting in
  each sink, and records it dropped because its buffer was full (read at scrape time).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from qmpevents.addresses import is_loopback
from qmpevents.collect.sink import Sink
from qmpevents.errors import ConfigError

__all__ = ["CollectorMetrics", "MetricsServer", "start_metrics_server"]


class _SinkGauges(Collector):
    """Reads depth and drops from the sinks when scraped, so sinks need not push them."""

    def __init__(self) -> None:
        self.sinks: list[Sink] = []

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "qmpevents_sink_queue_depth", "Records waiting in the sink", labels=["sink"]
        )
        dropped = CounterMetricFamily(
            "qmpevents_sink_dropped", "Records dropped by a full sink buffer", labels=["sink"]
        )
        for sink in self.sinks:
            depth.add_metric([sink.name], sink.depth)
            dropped.add_metric([sink.name], sink.dropped)
        yield depth
        yield dropped


class CollectorMetrics:
    """The metrics of one collector; ``registry`` is its own unless one is passed."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.events = Counter(
            "qmpevents_events", "Events received", ["vm", "event"], registry=self.registry
        )
        self.connected = Gauge(
            "qmpevents_vm_connected",
            "1 while the VM's QMP monitor is connected",
            ["vm"],
            registry=self.registry,
        )
        self.reconnects = Counter(
            "qmpevents_reconnects", "Connections after the first", ["vm"], registry=self.registry
        )
        self.gaps = Counter(
            "qmpevents_gaps", "Intervals without a connection", ["vm"], registry=self.registry
        )
        self.last_event = Gauge(
            "qmpevents_last_event_timestamp_seconds",
            "When the VM's last event was received (seconds since the epoch)",
            ["vm"],
            registry=self.registry,
        )
        self.listener_dropped = Counter(
            "qmpevents_listener_dropped",
            "Events lost because the VM's connection queue overflowed",
            ["vm"],
            registry=self.registry,
        )
        self._sinks = _SinkGauges()
        self.registry.register(self._sinks)

    def watch_sink(self, sink: Sink) -> None:
        """Expose ``sink``'s queue depth and drops under its ``name``."""
        self._sinks.sinks.append(sink)

    def value(self, name: str, **labels: str) -> float | None:
        """The current value of sample ``name`` with ``labels`` (``None`` if absent)."""
        return self.registry.get_sample_value(name, labels)


class MetricsServer:
    """The running HTTP endpoint (``/metrics``); :meth:`close` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread
        self.host = str(server.server_address[0])
        self.port = int(server.server_address[1])

    def close(self) -> None:
        """Stop serving and release the port. Idempotent."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()


def start_metrics_server(
    metrics: CollectorMetrics, host: str = "127.0.0.1", port: int = 9464, *, public: bool = False
) -> MetricsServer:
    """Serve ``metrics`` over HTTP on ``host:port`` from a daemon thread (port 0: any free).

    Only a loopback address is accepted unless ``public`` is set: metrics name every
    VM of the host, which is not for everyone on the network. Raises
    :class:`~qmpevents.errors.ConfigError` otherwise, and ``OSError`` if the port is taken.
    """
    if not public and not is_loopback(host):
        raise ConfigError(
            f"metrics on {host}:{port} would be reachable from the network; bind to a "
            "loopback address or opt in explicitly"
        )
    server, thread = start_http_server(port, addr=host, registry=metrics.registry)
    return MetricsServer(server, thread)

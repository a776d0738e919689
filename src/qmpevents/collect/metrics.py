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
  each sink, and records it dropped because its buffer was full or could not store
  before closing (read at scrape time);
- ``sink_failures_total{sink}``: failed attempts to store or publish (each logged);
- ``rejected_total{sink,reason}``: records a sink gave up on for their own sake
  (:mod:`.rejects`; SQLite: ``integrity``, ``data``, ``encoding``, ``invalid``;
  NATS: ``too_large``, ``subject``, ``refused``, ``invalid``);
- ``nats_backlog``: records committed to the SQLite journal and not yet published
  to NATS (the outbox, :mod:`.nats_outbox`; only with NATS). For the ``nats`` sink,
  ``sink_queue_depth`` is this backlog and ``sink_dropped_total`` stays 0: what is
  not published waits in the journal.

Label values are bounded and always valid UTF-8: the ``vm`` label is the VM name as
:func:`~.names.safe_name` keeps it, and the series of a VM are removed when the VM
goes away (:meth:`CollectorMetrics.forget_vm`); the ``event`` label is the event name
only for known names and the first 100 others (:mod:`.event_labels`), else ``other``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Protocol
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from qmpevents.addresses import is_loopback
from qmpevents.collect.event_labels import EventLabels
from qmpevents.collect.names import safe_name
from qmpevents.collect.sink import Sink
from qmpevents.errors import ConfigError

__all__ = ["Backlog", "CollectorMetrics", "MetricsServer", "start_metrics_server"]


class Backlog(Protocol):
    """An outbox: how many committed records it has not published yet."""

    @property
    def backlog(self) -> int:
        """Records waiting in the journal."""


class _SinkGauges(Collector):
    """Reads depth and drops from the sinks when scraped, so sinks need not push them."""

    def __init__(self) -> None:
        self.sinks: list[Sink] = []
        self.outbox: Backlog | None = None

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "qmpevents_sink_queue_depth", "Records waiting in the sink", labels=["sink"]
        )
        dropped = CounterMetricFamily(
            "qmpevents_sink_dropped",
            "Records dropped by a full sink buffer or not stored at close",
            labels=["sink"],
        )
        failures = CounterMetricFamily(
            "qmpevents_sink_failures", "Failed attempts to store or publish", labels=["sink"]
        )
        rejected = CounterMetricFamily(
            "qmpevents_rejected",
            "Records a sink can never store or publish, set aside",
            labels=["sink", "reason"],
        )
        for sink in self.sinks:
            depth.add_metric([sink.name], sink.depth)
            dropped.add_metric([sink.name], sink.dropped)
            failures.add_metric([sink.name], sink.failures)
            for reason, count in sorted(sink.rejected.items()):
                rejected.add_metric([sink.name, reason], count)
        yield from (depth, dropped, failures, rejected)
        if self.outbox is not None:
            yield GaugeMetricFamily(
                "qmpevents_nats_backlog",
                "Records committed to the SQLite journal and not yet published to NATS",
                value=self.outbox.backlog,
            )


class _VMSeries:
    """The cached series of one VM: its ``vm`` label, last-event gauge, event counters."""

    __slots__ = ("events", "label", "last_event", "other")

    def __init__(self, label: str, last_event: Gauge) -> None:
        self.label = label
        self.last_event = last_event
        self.events: dict[str, Counter] = {}  # event name -> its counter, admitted names only
        self.other: Counter | None = None


class CollectorMetrics:
    """The metrics of one collector; ``registry`` is its own unless one is passed.

    ``unknown_events`` is the number of event names outside the known ones that get
    a label value of their own (see :mod:`.event_labels`).
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, *, unknown_events: int = 100
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.event_labels = EventLabels(unknown_events)
        self._vms: dict[str, _VMSeries] = {}
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
        self.actions = Counter(
            "qmpevents_actions",
            "Matches of action rules, by outcome (ok, error, cancelled, debounced,"
            " rate-limited, suspended, dropped)",
            ["rule", "outcome"],
            registry=self.registry,
        )
        self.actions_suspended = Counter(
            "qmpevents_actions_suspended",
            "Times an action rule was suspended for a VM by its crash-loop guard",
            ["rule"],
            registry=self.registry,
        )
        self._sinks = _SinkGauges()
        self.registry.register(self._sinks)
        self._per_vm = (
            self.events,
            self.connected,
            self.reconnects,
            self.gaps,
            self.last_event,
            self.listener_dropped,
        )

    # --- per VM: called from the event loop -------------------------------------------

    def count_event(self, vm: str, name: str, received_at: float) -> None:
        """One event ``name`` of ``vm`` received at ``received_at`` (seconds since the epoch)."""
        series = self._vms.get(vm)
        if series is None:
            label = safe_name(vm)
            series = self._vms[vm] = _VMSeries(label, self.last_event.labels(label))
        counter = series.events.get(name)
        if counter is None:
            counter = self._event_counter(series, name)
        counter.inc()
        series.last_event.set(received_at)

    def _event_counter(self, series: _VMSeries, name: str) -> Counter:
        label = self.event_labels.label(name)
        if label == name:
            counter = series.events[name] = self.events.labels(series.label, label)
            return counter
        if series.other is None:  # never cache a name that is not admitted: unbounded
            series.other = self.events.labels(series.label, label)
        return series.other

    def set_connected(self, vm: str, connected: bool) -> None:
        """``vm``'s monitor is connected now, or not."""
        self.connected.labels(safe_name(vm)).set(1 if connected else 0)

    def count_reconnect(self, vm: str) -> None:
        """``vm`` connected again."""
        self.reconnects.labels(safe_name(vm)).inc()

    def count_gap(self, vm: str) -> None:
        """A gap of ``vm`` was recorded."""
        self.gaps.labels(safe_name(vm)).inc()

    def forget_vm(self, vm: str) -> None:
        """Remove every series of ``vm`` (it went away); it starts afresh if it comes back."""
        self._vms.pop(vm, None)
        labels = {"vm": safe_name(vm)}
        for metric in self._per_vm:
            metric.remove_by_labels(labels)

    def vms(self) -> set[str]:
        """The ``vm`` label values that have a series now."""
        return {
            sample.labels["vm"]
            for metric in self.registry.collect()
            for sample in metric.samples
            if "vm" in sample.labels
        }

    def watch_sink(self, sink: Sink) -> None:
        """Expose ``sink``'s queue depth and drops under its ``name``."""
        self._sinks.sinks.append(sink)

    def watch_outbox(self, outbox: Backlog) -> None:
        """Expose ``outbox``'s backlog as ``qmpevents_nats_backlog``."""
        self._sinks.outbox = outbox

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

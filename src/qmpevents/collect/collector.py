"""The collector: many VMs' events into SQLite (and NATS JetStream), with Prometheus metrics.

:class:`Collector` ties the pieces together: the VMs of the configuration and of a
watched directory (:mod:`.discovery`), one :class:`~.endpoints.Endpoint` each, the
:class:`~.fanout.Fanout` and its sinks, and the metrics endpoint.

QEMUs may also connect to the collector (``listen``: unix sockets, see
:class:`~qmpevents.sources.ListenSource`): each VM is attached when it first
connects, under its ``-name``, and stays attached (a reconnection is the same VM,
its absence a gap). A name already attached otherwise (a configured target, a
watched socket) is not attached twice: that QEMU is dropped, with one log line.

Gaps: a VM's gap is the time it was lost, from a loss (or a stop) while connected
to its next connection; the time before a VM's first connection is none (nothing
was missed), so a VM that never connects has no gap. The history keeps each VM's
connection state (table ``connections``, written with the gaps and events, in
order), and across runs it says which VMs a previous run left with an open gap
(closed by their first connection now) and which it was still connected to when it
died without closing anything (SIGKILL, crash). Each of the latter gets an open gap
``"collector was not running"`` from the last moment that run is known to have
received from the VM (:meth:`~.history.History.left_connected`); every event the
dead run received but had not committed falls inside that gap.

Stopping (:meth:`Collector.stop`, SIGTERM or SIGINT under :meth:`Collector.run`):
connections are closed after recording what they received, the fan-out opens a gap
``"collector stopped"`` for each connected VM and SQLite commits all of it; then the
NATS outbox stops (at once when NATS is away, else after at most a short drain: what
it has not published stays in the journal for the next start), then the HTTP server
(``http``: the timeline page, its API and ``/metrics``, :mod:`.web_app`) and the
metrics endpoint close.
The signal handlers stay installed until then: a second SIGTERM or SIGINT (GNU
``timeout`` sends two; an impatient Ctrl-C) is logged and does not cut the flush
short; only SIGKILL does. :meth:`Collector.not_stored` then says what each sink
could not store (dropped, rejected, or still waiting at its close timeout); records
waiting in the NATS outbox are not among them: they are in the journal.

NATS (:mod:`.nats_outbox`): the fan-out gives records to SQLite only; SQLite is the
journal, and the outbox publishes what it committed, in order, behind a cursor kept
in the same database, so a NATS outage or a restart loses nothing that was committed.
Each message carries the collector's ``host`` (:mod:`.fleet_publish`), to a stream
of ``replicas`` copies; a central archive (:mod:`.archive`) reads them all.

At start, a history that cannot be opened for writing is refused
(:class:`~qmpevents.errors.ConfigError`) rather than retried for ever; once running,
storage failures are retried (see :mod:`.sqlite_store`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sqlite3
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from qmpevents.client.backoff import Backoff
from qmpevents.collect.actions.runner import ActionRunner
from qmpevents.collect.actions.store import ActionStore
from qmpevents.collect.config import CollectorConfig, VMSpec
from qmpevents.collect.discovery import DirectoryWatcher
from qmpevents.collect.endpoints import ConnectPolicy, Endpoint, StatusCallback
from qmpevents.collect.fanout import Fanout
from qmpevents.collect.fleet_publish import HostOutbox
from qmpevents.collect.history import History
from qmpevents.collect.metrics import CollectorMetrics, MetricsServer, start_metrics_server
from qmpevents.collect.names import safe_name
from qmpevents.collect.nats_outbox import NatsOutbox
from qmpevents.collect.records import GapRecord
from qmpevents.collect.sink import Sink
from qmpevents.collect.sqlite_store import BatchPolicy, SQLiteStore
from qmpevents.collect.web_app import HttpOptions, WebServer, start_web_server
from qmpevents.errors import ConfigError
from qmpevents.sources import (
    Connected,
    Disconnected,
    DomainSource,
    LibvirtSource,
    ListenSource,
    VMSource,
)

__all__ = ["NOT_RUNNING", "SOCKET_REMOVED", "Collector"]

log = logging.getLogger(__name__)

NOT_RUNNING = "collector was not running"
"""The reason of the gap of a VM a previous collector was connected to when it died."""

SOCKET_REMOVED = "socket removed"
"""The reason recorded when a watched socket disappears (unless a gap is already open)."""


class Collector:
    """Collects the events of the VMs in ``config``; see the module docstring.

    ``on_status(vm, connected, detail)`` hears of each connection, loss and failed
    first attempt. Use :meth:`run` (until a signal or :meth:`stop`), or :meth:`start`
    and :meth:`aclose` around your own waiting.
    """

    def __init__(
        self,
        config: CollectorConfig,
        *,
        on_status: StatusCallback | None = None,
        http: HttpOptions | None = None,
    ) -> None:
        self.config = config
        self.http = http
        self.on_status = on_status
        self.metrics = CollectorMetrics()
        self.policy = ConnectPolicy(
            backoff=config.backoff, max_backoff=config.max_backoff, queue_size=config.queue_size
        )
        self.sqlite = SQLiteStore(
            config.db,
            batching=BatchPolicy(config.batch_size, config.batch_interval),
            buffer_limit=config.db_buffer,
            refuse_unwritable=True,
        )
        self.nats: NatsOutbox | None = None
        if config.nats:
            self.nats = HostOutbox(
                config.nats.split(","),
                self.sqlite,
                host=config.host_name,
                replicas=config.replicas,
            )
        self.fanout: Fanout | None = None
        self.actions: ActionRunner | None = None
        self.metrics_server: MetricsServer | None = None
        self.web_server: WebServer | None = None
        self._endpoints: dict[str, Endpoint] = {}
        self._watcher: asyncio.Task[None] | None = None
        self._listeners: list[ListenSource] = []
        self._listening: list[asyncio.Task[None]] = []
        self._hosts: list[LibvirtSource] = []
        self.failure: BaseException | None = None  # what stopped the collector, if not a signal
        self._refused: set[str] = set()
        self._stopped = asyncio.Event()
        self._signal: signal.Signals | None = None

    @property
    def endpoints(self) -> Mapping[str, Endpoint]:
        """The attached VMs by name (read-only)."""
        return MappingProxyType(self._endpoints)

    async def start(self) -> None:
        """Open the metrics endpoint and the sinks, recover gaps, attach the VMs, watch.

        Raises :class:`~qmpevents.errors.ConfigError` (a metrics address that is not
        loopback without ``metrics_public``, a history newer than this code or that
        cannot be written) and ``OSError`` (the metrics port is taken) before anything
        is attached; ``ConfigError`` for a ``listen`` path where something listens
        already (or that is not a socket), after the sinks started (:meth:`aclose`).
        """
        address = self.config.metrics_address()
        if address is not None:
            self.metrics_server = start_metrics_server(
                self.metrics, *address, public=self.config.metrics_public
            )
        try:
            if self.http is not None:  # the page, its API and /metrics (see .web_app)
                self.web_server = await start_web_server(
                    self.sqlite.path,
                    self.http.host,
                    self.http.port,
                    public=self.http.public,
                    registry=self.metrics.registry,
                )
        except BaseException:
            self._close_metrics()
            raise
        try:
            await self.sqlite.start()
            if self.nats is not None:  # its cursor exists before this run commits anything
                await self.nats.start()
                self.metrics.watch_sink(self.nats)
                self.metrics.watch_outbox(self.nats)
        except BaseException:
            self.sqlite.close()
            await self._close_web()
            self._close_metrics()
            raise
        open_gaps, left_connected = await asyncio.to_thread(self._previous_run)
        self.fanout = Fanout([self.sqlite], self.metrics, open_gaps=open_gaps)
        await self.fanout.start()
        if self.config.actions:  # [[action]] rules: see .actions.runner
            self.actions = ActionRunner(
                self.config.actions,
                self._execute,
                metrics=self.metrics,
                store=ActionStore(self.sqlite.path),
            )
            self.actions.start()
            self.fanout.observers.append(self.actions.on_event)
        for vm, since in left_connected:
            self.fanout.record_gap(vm, since, None, NOT_RUNNING)
        for spec in self.config.vms:
            self.attach(spec)
        if self.config.watch_dir is not None:
            watcher = DirectoryWatcher(
                self.config.watch_dir, interval=self.config.watch_interval, taken=self.config.vms
            )
            self._watcher = asyncio.create_task(self._watch(watcher), name="watch-dir")
        for path in self.config.listen:
            source = ListenSource(
                path,
                greeting_timeout=self.policy.greeting_timeout,
                queue_size=self.policy.queue_size,
                policy="block",  # as for every endpoint: the collector loses nothing
            )
            self._listeners.append(source)
            await source.start()
            self._listening.append(asyncio.create_task(self._listen(source), name=f"listen {path}"))
        for uri in self.config.libvirt:
            host = LibvirtSource(
                uri,
                queue_size=self.policy.queue_size,
                policy="block",  # libvirt cannot be held back: past its hard limit, counted
                backoff=Backoff(self.policy.backoff, self.policy.max_backoff),
            )
            self._hosts.append(host)
            await host.start()
            task = asyncio.create_task(self._libvirt(host), name=f"libvirt {uri}")
            task.add_done_callback(self._must_not_end)
            self._listening.append(task)

    async def _libvirt(self, host: LibvirtSource) -> None:
        """Attach each domain of a libvirt host as it is announced; log libvirtd's state."""
        async for item in host:
            if isinstance(item, DomainSource):
                name = safe_name(item.name)
                if name in self._endpoints:
                    if name not in self._refused:
                        self._refused.add(name)
                        log.error(
                            "%s: domain %r not attached: the name is attached already",
                            host.name,
                            name,
                        )
                    await item.aclose()
                    continue
                self.attach_source(name, item, f"libvirt:{host.target.text}")
            elif isinstance(item, Connected):
                log.info("%s: %s", host.name, item.detail)
            elif isinstance(item, Disconnected):
                log.warning("%s: disconnected from libvirtd: %s", host.name, item.reason)
            else:
                log.warning("%s: libvirtd not reachable: %s", host.name, item.reason)

    def _must_not_end(self, task: asyncio.Task[None]) -> None:
        """A source that ends on its own failed: stop the collector rather than go on blind."""
        if task.cancelled() or self._stopped.is_set():
            return
        error = task.exception() or RuntimeError(f"{task.get_name()} ended")
        log.error("%s failed: %s; stopping after storing what was received", task.get_name(), error)
        self.failure = error
        self.stop()

    async def _listen(self, source: ListenSource) -> None:
        async for vm in source:
            name = safe_name(vm.name)
            if name in self._endpoints:
                if name not in self._refused:
                    self._refused.add(name)
                    log.error(
                        "listen %s: VM %r (QEMU pid %s) not attached: the name is attached already",
                        source.path,
                        name,
                        vm.pid,
                    )
                await vm.aclose()
                continue
            self.attach_source(name, vm)

    def attach_source(
        self, name: str, source: VMSource | DomainSource, target: str | None = None
    ) -> Endpoint:
        """Collect from a VM that connected to us, or a libvirt domain (``ConfigError`` if taken).

        ``target`` names where it comes from (``listen:PATH`` by default).
        """
        if self.fanout is None:
            raise RuntimeError("attach_source() before start()")
        if name in self._endpoints:
            raise ConfigError(f"VM {name!r} is attached already")
        endpoint = Endpoint(
            name,
            target or (f"listen:{source.path}" if isinstance(source, VMSource) else source.uri),
            self.fanout,
            self.policy,
            self.on_status,
            source=source,
        )
        self._endpoints[name] = endpoint
        endpoint.start()
        return endpoint

    def _previous_run(self) -> tuple[list[GapRecord], list[tuple[str, float]]]:
        try:
            with History(self.sqlite.path) as history:
                return history.open_gaps(), history.left_connected()
        except (sqlite3.Error, ConfigError) as error:
            # The writer logs and retries storage problems; only the recovery is skipped.
            log.error(
                "SQLite history %s: cannot read the previous run's gaps: %s",
                self.sqlite.path,
                error,
            )
            return [], []

    async def _execute(
        self, vm: str, command: str, arguments: Mapping[str, Any], timeout: float
    ) -> Any:
        endpoint = self._endpoints.get(vm)
        if endpoint is None:
            raise ConfigError(f"VM {vm!r} is not attached")
        return await endpoint.execute(command, arguments, timeout=timeout)

    def attach(self, spec: VMSpec) -> Endpoint:
        """Start collecting from ``spec`` (``ConfigError`` if its name is attached already)."""
        if self.fanout is None:
            raise RuntimeError("attach() before start()")
        if spec.name in self._endpoints:
            raise ConfigError(f"VM {spec.name!r} is attached already")
        endpoint = Endpoint(spec.name, spec.target, self.fanout, self.policy, self.on_status)
        self._endpoints[spec.name] = endpoint
        endpoint.start()
        return endpoint

    async def detach(self, name: str, reason: str) -> None:
        """Stop collecting from VM ``name``, recording a gap for ``reason`` if it is connected."""
        endpoint = self._endpoints.pop(name, None)
        if endpoint is None or self.fanout is None:
            return
        await endpoint.aclose()
        self.fanout.record_disconnected(name, reason)
        self.fanout.forget(name)
        if self.on_status is not None:
            self.on_status(name, False, f"detached: {reason}")

    async def _watch(self, watcher: DirectoryWatcher) -> None:
        while True:
            changes = await asyncio.to_thread(watcher.scan)
            for vm in changes.vanished:
                await self.detach(vm.name, SOCKET_REMOVED)
            for vm in changes.appeared:
                self.attach(vm)
            await asyncio.sleep(watcher.interval)

    def stop(self, signum: signal.Signals | None = None) -> None:
        """Make :meth:`run` return (after closing everything). Safe from a signal handler.

        Once stopping, another call changes nothing (the first signal is the one
        :meth:`run` returns): it is logged, and the records are still all stored.
        """
        if self._stopped.is_set():
            what = signum.name if signum is not None else "stop"
            log.warning(
                "%s: already stopping, still storing what was received (SIGKILL aborts)", what
            )
            return
        self._signal = signum
        self._stopped.set()

    async def run(self, *, handle_signals: bool = True) -> signal.Signals | None:
        """Start, collect until :meth:`stop` (or SIGTERM/SIGINT), close; return the signal.

        The handlers stay until everything is closed, so that a repeated signal never
        interrupts the final flush.
        """
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
        for signum in signals:
            loop.add_signal_handler(signum, self.stop, signum)
        try:
            try:
                await self.start()
                await self._stopped.wait()
            finally:
                self._stopped.set()  # a signal from now on is a repeat
                await self.aclose()
        finally:
            for signum in signals:
                loop.remove_signal_handler(signum)
        return self._signal

    def not_stored(self) -> dict[str, int]:
        """Records each sink did not store: dropped (full buffer, close timeout) or rejected.

        Only the sinks that lost something are listed; ``{}`` means everything was stored.
        The NATS outbox's backlog is not lost (it is in the journal): only its rejections
        count.
        """
        sinks: list[Sink] = [self.sqlite] if self.nats is None else [self.sqlite, self.nats]
        lost = {sink.name: sink.dropped + sum(sink.rejected.values()) for sink in sinks}
        return {name: count for name, count in lost.items() if count}

    async def aclose(self) -> None:
        """Stop watching and connecting, store everything received, close the metrics endpoint.

        Idempotent.
        """
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        for task in self._listening:
            task.cancel()
        await asyncio.gather(*self._listening, return_exceptions=True)
        self._listening = []
        listeners, self._listeners = self._listeners, []
        hosts, self._hosts = self._hosts, []
        if self.actions is not None:  # before the connections its steps use go
            await self.actions.aclose()
            self.actions = None
        # Closing a listener closes its VMs' connections; their endpoints record what
        # they hold (below), and the socket files go.
        await asyncio.gather(*(listener.aclose() for listener in listeners))
        await asyncio.gather(*(host.aclose() for host in hosts))
        endpoints, self._endpoints = list(self._endpoints.values()), {}
        await asyncio.gather(*(endpoint.aclose() for endpoint in endpoints))
        if self.fanout is not None:
            await self.fanout.aclose()  # SQLite has committed everything after this
            self.fanout = None
        if self.nats is not None:
            await self.nats.aclose()
        await self._close_web()
        self._close_metrics()

    async def _close_web(self) -> None:
        if self.web_server is not None:
            await self.web_server.aclose()
            self.web_server = None

    def _close_metrics(self) -> None:
        if self.metrics_server is not None:
            self.metrics_server.close()
            self.metrics_server = None

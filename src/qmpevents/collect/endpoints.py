"""One attached VM: its event source, every item into the fan-out.

An :class:`Endpoint` reads one :class:`~qmpevents.sources.EventSource` (which keeps
the connection up with backoff) and reports to the :class:`~.fanout.Fanout`:

- on :meth:`Endpoint.start`, ``record_attached(vm)``: not connected yet, and no gap
  (nothing can be missed before the first connection; a VM that never connects has
  no gap at all);
- after each successful negotiation, ``record_connected(vm)`` (this records the VM
  as connected, and closes its gap: the last loss, or one a previous run left open);
- every event, with the bytes QEMU sent, through ``record_event``;
- on loss, ``record_disconnected(vm, "connection lost: ...")`` at once, after the
  events received before the loss, so the open gap is in the history while the VM
  is unreachable (and a collector killed meanwhile leaves it open).

The source says at once that a connection is gone (``Disconnected``), and each
outage is recorded exactly once: the ``Gap`` marker it yields after a reconnect
describes the same outage and is not recorded again. Attempts are spaced by
``backoff`` seconds, doubling up to ``max_backoff``, for as long as the endpoint
is attached.

The listener queue (``queue_size`` events) only fills when the collector's loop falls
behind; then the VM's socket is not read until it drains (QEMU keeps the events).
A loss past the hard limit is counted per VM in ``qmpevents_listener_dropped_total``
and logged, never silent.

A VM that connects to us (``collect --listen``) brings its own source, a
:class:`~qmpevents.sources.VMSource` announced by a
:class:`~qmpevents.sources.ListenSource` once its handshake is done: its endpoint
records the same markers, events and gaps as any other.

Memory: an idle attached VM costs about 11 KiB of collector RSS (client, transport,
listener, task and its metric series; ``benchmarks/bench_collect.py`` measures it
with 500 VMs), so 500 VMs take about 6 MiB on top of the collector's own ~37 MiB.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from qmpevents.client import Dropped, Gap, RunState
from qmpevents.client.backoff import Backoff
from qmpevents.collect.fanout import Fanout
from qmpevents.errors import ConnectionLost
from qmpevents.sources import (
    Connected,
    Disconnected,
    DomainSource,
    EventSource,
    QMPSource,
    Unreachable,
    VMSource,
)

__all__ = ["ConnectPolicy", "Endpoint", "StatusCallback"]

log = logging.getLogger(__name__)

StatusCallback = Callable[[str, bool, str], None]
"""``(vm, connected, detail)``: called when a VM connects, is lost, or cannot connect."""


@dataclass(frozen=True)
class ConnectPolicy:
    """How endpoints connect: reconnect spacing, handshake bound, listener queue size."""

    backoff: float = 0.1
    max_backoff: float = 5.0
    greeting_timeout: float = 5.0
    queue_size: int = 10_000

    def __post_init__(self) -> None:
        if not 0 < self.backoff <= self.max_backoff:
            raise ValueError(f"need 0 < backoff <= max_backoff, got {self}")
        if self.greeting_timeout <= 0 or self.queue_size < 1:
            raise ValueError(f"need greeting_timeout > 0 and queue_size >= 1, got {self}")


class Endpoint:
    """The connection to the QMP monitor of ``vm`` at ``target``; see the module docstring.

    :meth:`start` attaches it, :meth:`aclose` detaches it after recording every event
    already received. Neither records a gap for the detaching itself: the caller
    knows why it detaches (:meth:`Fanout.record_disconnected`). ``source``: a VM
    that connected to us (its :class:`~qmpevents.sources.VMSource`); ``target``
    then only describes it.
    """

    __slots__ = ("_given", "_source", "_task", "fanout", "on_status", "policy", "target", "vm")

    def __init__(
        self,
        vm: str,
        target: str,
        fanout: Fanout,
        policy: ConnectPolicy | None = None,
        on_status: StatusCallback | None = None,
        *,
        source: VMSource | DomainSource | None = None,
    ) -> None:
        self.vm = vm
        self.target = target
        self.fanout = fanout
        self.policy = policy or ConnectPolicy()
        self.on_status = on_status
        self._given = source
        self._source: QMPSource | VMSource | DomainSource | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """Whether the monitor is connected and negotiated now."""
        return self._source is not None and self._source.connected

    async def execute(
        self, command: str, arguments: Mapping[str, Any] | None = None, *, timeout: float
    ) -> Any:
        """Run a QMP ``command`` on this VM's own connection (QEMU's monitor takes one client).

        Raises :class:`~qmpevents.errors.ConnectionLost` when not connected, else as
        :meth:`QMPClient.execute <qmpevents.client.QMPClient.execute>`.
        """
        source = self._source
        if isinstance(source, QMPSource) and source.client is not None and source.connected:
            return await source.client.execute(command, arguments, timeout=timeout)
        if isinstance(source, DomainSource) and source.connected:
            # Through libvirtd, which bounds it (keepalive); ``timeout`` cannot cut a
            # blocking libvirt call short.
            return await source.execute(command, arguments)
        raise ConnectionLost(f"{self.vm}: not connected (or attached by --listen): {command}")

    def start(self) -> None:
        """Start connecting (no gap: until the first connection nothing can be missed)."""
        if self._task is not None:
            return
        policy = self.policy
        # "block": the collector must lose nothing. Should its loop fall behind
        # (an overload, a slow disk), this VM's socket is not read for a while and
        # QEMU holds the events in its own output buffer, as for any slow reader;
        # other VMs are not affected. Only past the hard limit, while a command
        # waits, would the oldest give way (counted in listener_dropped_total).
        if self._given is not None:  # connected to us, and just announced
            self._source = self._given
            self._task = asyncio.get_running_loop().create_task(
                self._run(self._source), name=f"qmp {self.vm}"
            )
            self._task.add_done_callback(self._ended)
            return
        self._source = QMPSource(
            self.vm,
            self.target,
            reconnect=True,
            backoff=Backoff(policy.backoff, policy.max_backoff),
            greeting_timeout=policy.greeting_timeout,
            queue_size=policy.queue_size,
            policy="block",
        )
        self.fanout.record_attached(self.vm)
        self._task = asyncio.get_running_loop().create_task(
            self._run(self._source), name=f"qmp {self.vm}"
        )
        self._task.add_done_callback(self._ended)

    async def aclose(self) -> None:
        """Stop: a live connection is closed after its queued events are recorded. Idempotent."""
        task = self._task
        if task is None or task.done():
            return
        assert self._source is not None
        receiving = self._source.connected
        # Closing ends a live listener after what it holds; the task records that, then ends.
        await self._source.aclose()
        if not receiving:
            task.cancel()  # an attempt in progress has nothing to record
        await asyncio.wait([task])

    def _status(self, connected: bool, detail: str) -> None:
        if self.on_status is not None:
            self.on_status(self.vm, connected, detail)

    async def _run(self, source: EventSource) -> None:
        vm = self.vm
        fanout = self.fanout
        record_event = fanout.record_event
        async for item in source:
            if isinstance(item, Connected):
                fanout.record_connected(vm)
                self._status(True, item.detail)
            elif isinstance(item, Disconnected):
                fanout.record_disconnected(vm, item.reason)
                self._status(False, item.reason)
            elif isinstance(item, Unreachable):
                self._status(False, item.reason)
            elif isinstance(item, Dropped):
                self._dropped(item.count)
            elif isinstance(item, RunState):
                previous = item.previous or ("running" if item.was_running else "stopped")
                self._status(True, f"run state is {item.status} (was {previous}) after the gap")
            elif not isinstance(item, Gap):  # the outage was recorded at Disconnected
                record_event(vm, item)

    def _dropped(self, count: int) -> None:
        self.fanout.metrics.listener_dropped.labels(self.vm).inc(count)
        log.error(
            "%s: %d event(s) lost: the connection queue (%d) overflowed; the collector is"
            " not keeping up",
            self.vm,
            count,
            self.policy.queue_size,
        )

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and (error := task.exception()) is not None:
            # A bug, not a connection problem: say so rather than go quiet about the VM.
            log.error("%s: stopped collecting: %r", self.vm, error, exc_info=error)
            self.fanout.record_disconnected(self.vm, f"collector error: {error!r}")

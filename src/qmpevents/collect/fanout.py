"""The collector's single entry point for what happens on its connections.

Per-VM connections call :meth:`Fanout.record_event`, :meth:`Fanout.record_connected`
and :meth:`Fanout.record_disconnected`; the fan-out turns them into records, gives
every record to every sink, keeps the metrics, and tracks the open gap of each VM.
Sinks take records without blocking into their own bounded buffers, so a slow or
failing sink delays and drops only its own records (counted), never another's, and
never stalls the connections.

A gap is the time a VM was lost: from a loss (or a stop) while it was connected to
its next connection. The time before a VM's first connection is none: nothing was
missed before the collector first received from it, and a VM that never connects has
no gap. Each connection and each gap opened is also a
:class:`~.records.ConnectionState`; a sink that keeps them (:class:`~.sink.StateSink`,
the SQLite history) gets the state with its gap, the others the gap alone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence

from qmpevents.collect.metrics import CollectorMetrics
from qmpevents.collect.names import safe_name
from qmpevents.collect.records import ConnectionState, EventRecord, GapRecord, Record
from qmpevents.collect.sink import Sink, StateSink
from qmpevents.schema.events import Event

__all__ = ["COLLECTOR_STOPPED", "Fanout"]

log = logging.getLogger(__name__)

COLLECTOR_STOPPED = "collector stopped"
"""The reason of the gap opened for each connected VM when the collector closes."""


class Fanout:
    """Records events and gaps of many VMs into ``sinks``; see the module docstring.

    ``open_gaps`` are gaps left open by a previous run (see
    :func:`~.history.open_gaps`): the VM's first connection closes them. ``clock`` is
    the wall clock of ``received_at`` and of gap bounds.
    """

    def __init__(
        self,
        sinks: Sequence[Sink],
        metrics: CollectorMetrics | None = None,
        *,
        open_gaps: Iterable[GapRecord] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sinks = list(sinks)
        self.metrics = metrics if metrics is not None else CollectorMetrics()
        self._clock = clock
        self._open_gaps: dict[str, GapRecord] = {gap.vm: gap for gap in open_gaps}
        self._connected: set[str] = set()
        self._ever_connected: set[str] = set()
        self.observers: list[Callable[[str, EventRecord], None]] = []
        """Called with each event's record after the sinks have it (say, action rules)."""
        for sink in self.sinks:
            self.metrics.watch_sink(sink)

    async def start(self) -> None:
        """Start every sink."""
        await asyncio.gather(*(sink.start() for sink in self.sinks))

    async def aclose(self) -> None:
        """Open a gap for each connected VM (the collector stops listening), then close the sinks.

        Each sink stores what it holds within its own time bound; they close concurrently.
        """
        for vm in sorted(self._connected):
            self.record_disconnected(vm, COLLECTOR_STOPPED)
        await asyncio.gather(*(sink.aclose() for sink in self.sinks))

    def record_event(self, vm: str, event: Event) -> EventRecord:
        """Record ``event`` received from ``vm`` now; return the record.

        ``event`` must come from the decoder (it carries ``raw``); otherwise ``ValueError``.
        """
        record = EventRecord.from_event(vm, event, self._clock())
        self._submit(record)
        self.metrics.count_event(vm, record.name, record.received_at)
        for observer in self.observers:
            try:
                observer(vm, record)
            except Exception:  # an observer's bug never stops intake
                log.exception("%s: an event observer failed on %s", vm, record.name)
        return record

    def record_attached(self, vm: str) -> None:
        """``vm`` is attached and not connected yet: its ``vm_connected`` series reads 0.

        No gap: nothing can be missed before the first connection. A gap a previous
        run left open stays open, closed by that connection.
        """
        self._connected.discard(vm)
        self.metrics.set_connected(vm, False)

    def record_connected(self, vm: str) -> GapRecord | None:
        """``vm``'s monitor is connected and negotiated: close its open gap (returned, if any).

        Call it once events can arrive, so that the gap covers every moment in
        which one could have been missed. The connection state is recorded either way.
        """
        if vm in self._ever_connected:
            self.metrics.count_reconnect(vm)
        self._ever_connected.add(vm)
        self._connected.add(vm)
        self.metrics.set_connected(vm, True)
        now = self._clock()
        gap = self._open_gaps.pop(vm, None)
        closed = None
        if gap is not None:
            closed = GapRecord(vm=vm, started=gap.started, ended=now, reason=gap.reason)
        self._change(ConnectionState(vm=vm, connected=True, since=now, gap=closed))
        return closed

    def record_disconnected(self, vm: str, reason: str) -> GapRecord | None:
        """``vm`` is not connected (lost, detached, stopped): open a gap if it was connected.

        Returns ``vm``'s open gap: the one opened now, one already open (a loss not
        yet reconnected, a gap a previous run left), or ``None`` for a VM that was not
        connected and has none (it never connected: nothing was missed).
        """
        connected = vm in self._connected
        self._connected.discard(vm)
        self.metrics.set_connected(vm, False)
        gap = self._open_gaps.get(vm)
        if gap is None and connected:
            reason = safe_name(reason)  # it may quote a socket path that is not UTF-8
            gap = GapRecord(vm=vm, started=self._clock(), ended=None, reason=reason)
            self._open_gaps[vm] = gap
            self._change(ConnectionState(vm=vm, connected=False, since=gap.started, gap=gap))
            self.metrics.count_gap(vm)
        return gap

    def record_gap(self, vm: str, started: float, ended: float | None, reason: str) -> GapRecord:
        """Record a gap known after the fact (say, a collector that was killed); return it.

        A gap with ``ended=None`` becomes ``vm``'s open gap, closed by its next
        connection, and ``vm`` is recorded as not connected since ``started``.
        """
        gap = GapRecord(vm=vm, started=started, ended=ended, reason=safe_name(reason))
        if ended is None:
            self._open_gaps[vm] = gap
            self._change(ConnectionState(vm=vm, connected=False, since=started, gap=gap))
        else:
            self._submit(gap)
        self.metrics.count_gap(vm)
        return gap

    def forget(self, vm: str) -> None:
        """``vm`` went away (detached): drop its metric series; its open gap stays open.

        Call it after :meth:`record_disconnected`. If it comes back, it starts afresh
        (its first connection is not a reconnection) and closes that gap.
        """
        self._connected.discard(vm)
        self._ever_connected.discard(vm)
        self.metrics.forget_vm(vm)

    def _submit(self, record: Record) -> None:
        for sink in self.sinks:
            sink.submit(record)

    def _change(self, state: ConnectionState) -> None:
        for sink in self.sinks:
            if isinstance(sink, StateSink):
                sink.submit_state(state)  # the gap with it, in one transaction
            elif state.gap is not None:
                sink.submit(state.gap)

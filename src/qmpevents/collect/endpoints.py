"""One attached VM: a QMP connection kept up with backoff, every event into the fan-out.

An :class:`Endpoint` owns one :class:`~qmpevents.client.connection.QMPClient` at a time and
reports to the :class:`~.fanout.Fanout`:

- on :meth:`Endpoint.start`, ``record_disconnected(vm, "not connected yet")``, so the
  time until the first connection is a gap;
- after each successful negotiation, ``record_connected(vm)`` (this closes the gap);
- every event, with the bytes QEMU sent, through ``record_event``;
- on loss, ``record_disconnected(vm, "connection lost: ...")`` at once, after the
  events received before the loss, so the open gap is in the history while the VM
  is unreachable (and a collector killed meanwhile leaves it open).

Reconnecting is the endpoint's job, not the client's (``reconnect=False``): the client
reports a lost connection only when it comes back (its ``Gap`` marker), too late for
the record above. So a client of this module never yields a ``Gap`` and each outage is
recorded exactly once. Attempts are spaced by ``backoff`` seconds, doubling up to
``max_backoff``, for as long as the endpoint is attached.

The listener queue (``queue_size`` events) only fills when the collector's loop falls
behind; an overflow drops the oldest events, which are counted per VM in
``qmpevents_listener_dropped_total`` and logged, never silently lost.

Memory: an idle attached VM costs about 11 KiB of collector RSS (client, transport,
listener, task and its metric series; ``benchmarks/bench_collect.py`` measures it
with 500 VMs), so 500 VMs take about 6 MiB on top of the collector's own ~37 MiB.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from qmpevents.client.connection import Dropped, EventListener, Gap, QMPClient
from qmpevents.collect.fanout import Fanout
from qmpevents.errors import ConnectionLost, QMPConnectionError, QMPTimeoutError

__all__ = ["NOT_CONNECTED_YET", "ConnectPolicy", "Endpoint", "StatusCallback"]

log = logging.getLogger(__name__)

NOT_CONNECTED_YET = "not connected yet"
"""The reason of the gap opened when a VM is attached."""

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
    knows why it detaches (:meth:`Fanout.record_disconnected`).
    """

    __slots__ = (
        "_client",
        "_receiving",
        "_stopping",
        "_task",
        "fanout",
        "on_status",
        "policy",
        "target",
        "vm",
    )

    def __init__(
        self,
        vm: str,
        target: str,
        fanout: Fanout,
        policy: ConnectPolicy | None = None,
        on_status: StatusCallback | None = None,
    ) -> None:
        self.vm = vm
        self.target = target
        self.fanout = fanout
        self.policy = policy or ConnectPolicy()
        self.on_status = on_status
        self._client: QMPClient | None = None
        self._receiving = False
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        """Whether the monitor is connected and negotiated now."""
        return self._receiving

    def start(self) -> None:
        """Open the VM's gap until its first connection and start connecting."""
        if self._task is not None:
            return
        self.fanout.record_disconnected(self.vm, NOT_CONNECTED_YET)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"qmp {self.vm}")
        self._task.add_done_callback(self._ended)

    async def aclose(self) -> None:
        """Stop: a live connection is closed after its queued events are recorded. Idempotent."""
        task = self._task
        if task is None or task.done():
            return
        self._stopping = True
        if self._receiving and self._client is not None:
            # closing ends the listener after what it holds; the task records that, then ends
            await self._client.close()
        else:
            task.cancel()
        await asyncio.wait([task])

    def _status(self, connected: bool, detail: str) -> None:
        if self.on_status is not None:
            self.on_status(self.vm, connected, detail)

    async def _run(self) -> None:
        policy = self.policy
        delay = policy.backoff
        failing: str | None = None
        while not self._stopping:
            client = QMPClient(
                self.target, greeting_timeout=policy.greeting_timeout, reconnect=False
            )
            # Listening from before the handshake: nothing sent after it is missed.
            listener = client.events(maxsize=policy.queue_size)
            self._client = client
            try:
                await client.connect()
            except (QMPConnectionError, QMPTimeoutError) as error:
                await client.close()
                if str(error) != failing:  # one line per new reason, not per attempt
                    failing = str(error)
                    self._status(False, f"{error}; retrying")
                await asyncio.sleep(delay)
                delay = min(delay * 2, policy.max_backoff)
                continue
            failing = None
            delay = policy.backoff
            self._receiving = True
            self.fanout.record_connected(self.vm)
            self._status(True, f"connected to {self.target}")
            reason = await self._receive(listener)
            self._receiving = False
            await client.close()
            if self._stopping:
                return
            self.fanout.record_disconnected(self.vm, reason)
            self._status(False, reason)
            await asyncio.sleep(delay)

    async def _receive(self, listener: EventListener) -> str:
        """Record what ``listener`` yields until the connection ends; return why it ended."""
        vm = self.vm
        record_event = self.fanout.record_event
        try:
            async for item in listener:
                if isinstance(item, Dropped):
                    self._dropped(item.count)
                    continue
                # reconnect=False: the client never marks a gap (see the module docstring)
                assert not isinstance(item, Gap)
                record_event(vm, item)
        except ConnectionLost as error:
            return f"connection lost: {error}"
        return "connection closed"

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
            self._receiving = False
            self.fanout.record_disconnected(self.vm, f"collector error: {error!r}")

"""The events of one libvirt domain, across its runs and libvirtd's restarts.

A :class:`DomainSource` is an ordinary :class:`~.base.EventSource` named after
the domain. :class:`~.libvirt.LibvirtSource` feeds it; nothing here talks to
libvirt, so its behaviour is tested without a daemon. Each run of the domain
that we see (it started, or it was running when we (re)connected) is one
*attachment*, and the consumer reads, per attachment:

- ``Connected`` (and, after the first, a ``Gap`` from the moment the previous
  attachment ended, plus a ``RunState`` marker when the domain is in another run
  state than last seen);
- the typed events, decoded from exactly the bytes QEMU would have sent;
- ``Disconnected`` when the domain stopped or libvirtd went away.

libvirt cannot be asked to slow down, so an attachment's queue is bounded by
its listener's hard limit, past which the oldest events are dropped and
counted (a ``Dropped`` marker), never silently.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from qmpevents.client import EventListener, Gap, OverflowPolicy
from qmpevents.client.filters import EventFilter
from qmpevents.client.runstate import RunStateTracker
from qmpevents.errors import ConnectionLost
from qmpevents.schema.events import Event, Resume, Stop
from qmpevents.sources.base import Connected, Disconnected, EventSource, SourceItem

__all__ = ["DomainSource", "Executor"]

Executor = Callable[[str, str, Mapping[str, Any] | None], Awaitable[Any]]
"""``(domain, command, arguments)``: a QMP command sent through libvirt."""

_STOP_OR_RESUME = (Stop, Resume)


@dataclass(slots=True)
class _Attachment:
    listener: EventListener
    status: tuple[str, bool] | None
    detail: str
    ended_at: float | None = None
    reason: str = "domain detached"
    error: BaseException | None = field(default=None)


class DomainSource(EventSource):
    """The events of the libvirt domain ``name`` on ``uri``; see the module docstring."""

    def __init__(
        self,
        name: str,
        uri: str,
        *,
        names: tuple[str, ...] = (),
        where: Mapping[str, Any] | None = None,
        queue_size: int = 10_000,
        policy: OverflowPolicy = "block",
    ) -> None:
        self.name = name
        self.uri = uri
        self._filter = EventFilter(names, where)
        self._queue_size = queue_size
        self._policy: OverflowPolicy = policy
        self._arrived: deque[_Attachment] = deque()
        self._current: _Attachment | None = None
        self._wake = asyncio.Event()
        self._closed = False
        self._execute: Executor | None = None  # set by the LibvirtSource

    @property
    def attached(self) -> bool:
        """Whether the domain is running and followed now."""
        return self._live() is not None

    connected = attached

    async def execute(self, command: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """Run a QMP command through libvirt (``virsh qemu-monitor-command``; taints the domain).

        Raises ``ConnectionLost`` when libvirtd is not connected, ``CommandError`` on
        QEMU's error reply.
        """
        if self._execute is None:
            raise ConnectionLost(f"{self.name}: not attached to libvirtd")
        return await self._execute(self.name, command, arguments)

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called."""
        return self._closed

    def _live(self) -> _Attachment | None:
        latest = self._arrived[-1] if self._arrived else self._current
        return latest if latest is not None and latest.ended_at is None else None

    # -- fed by the LibvirtSource ---------------------------------------------------

    def attach(self, status: tuple[str, bool] | None, detail: str) -> None:
        """The domain runs and is followed from now; a no-op while already attached."""
        if self._closed or self._live() is not None:
            return
        listener = EventListener(
            self._filter,
            maxsize=self._queue_size,
            policy=self._policy,
            leave=lambda _: None,
        )
        self._arrived.append(_Attachment(listener, status, detail))
        self._wake.set()

    def offer(self, event: Event) -> None:
        """One event of the domain (attaching first if libvirt told of it before the start)."""
        if self._live() is None:
            self.attach(None, f"domain {self.name} running on {self.uri}")
        live = self._live()
        if live is not None:
            live.listener.offer(event)

    def detach(self, at: float, reason: str, error: BaseException | None = None) -> None:
        """The domain stopped, or its connection ended, at ``at``; ``error`` ends the source."""
        live = self._live()
        if live is None:
            return
        live.ended_at = at
        live.reason = reason
        live.error = error
        live.listener.end(error)

    # -- read by the consumer -------------------------------------------------------

    async def aclose(self) -> None:
        self._closed = True
        for attachment in (self._current, *self._arrived):
            if attachment is not None:
                attachment.listener.end()
        self._wake.set()

    def __aiter__(self) -> AsyncIterator[SourceItem]:
        return self._items()

    async def _items(self) -> AsyncIterator[SourceItem]:
        lost_at: float | None = None
        run_state = RunStateTracker()
        while True:
            while not self._arrived and not self._closed:
                self._wake.clear()
                await self._wake.wait()
            if self._closed:
                return
            attachment = self._current = self._arrived.popleft()
            marker = run_state.connected(attachment.status)
            now = time.time()
            yield Connected(now, attachment.detail)
            if lost_at is not None:
                yield Gap(lost_at, now)
            if marker is not None:
                yield marker
            async for item in attachment.listener:  # raises the attachment's error, if any
                if isinstance(item, _STOP_OR_RESUME):
                    run_state.observe((item,))
                yield item
            self._current = None
            if self._closed and attachment.ended_at is None:
                return
            lost_at = attachment.ended_at or time.time()
            yield Disconnected(lost_at, attachment.reason)

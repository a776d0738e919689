"""Event listeners of the QMP client: filters, bounded queues and stream markers.

A :class:`EventListener` is an async iterator over the events one client receives that
pass its filter (names, exact or glob, and ``where`` members of ``data``). Its queue
is bounded; what happens when it is full is its ``policy``:

* ``"block"`` (the default): the client stops reading the socket, so QEMU keeps
  the events in its own output buffer, as it does for any slow reader, and reads
  again once the consumer has drained the queue to a quarter (the websockets
  ``max_queue`` pattern). Nothing is lost. While a command waits for its reply the
  client keeps reading (a consumer may call ``execute()`` from inside its
  ``async for``); the queue may then grow to ``hard_limit`` (50 times
  ``maxsize`` by default), past which the oldest events are dropped and counted
  as with ``"drop-oldest"``.
* ``"drop-oldest"``: the oldest queued event is dropped and counted in
  :attr:`EventListener.dropped`; the consumer then receives a :class:`Dropped` marker
  just before the first event that followed the loss, so no drop is silent.
* ``"end"``: the listener stops receiving; the consumer drains what was
  queued, then iteration raises :class:`~qmpevents.errors.EventsDropped`.

A :class:`Gap` marker tells the consumer that the connection was down for a while
(QEMU does not replay the events of that time). Iteration ends with
:class:`~qmpevents.errors.ConnectionLost` when the connection is lost for good,
and stops normally when the client is closed or the listener leaves.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal

from qmpevents.errors import ConnectionLost, EventsDropped, QMPTimeoutError
from qmpevents.schema.events import Event

from .filters import EventFilter, plain_data
from .runstate import RunState

__all__ = [
    "Dropped",
    "EventFilter",
    "EventListener",
    "EventWaiter",
    "Gap",
    "ListenerItem",
    "OverflowPolicy",
    "RunState",
    "plain_data",
]

OverflowPolicy = Literal["block", "drop-oldest", "end"]
_POLICIES: Final = ("block", "drop-oldest", "end")
# How far a blocking listener's queue may grow while the client must keep reading.
HARD_LIMIT_FACTOR: Final = 50

PressureCallback = Callable[["EventListener", bool], None]
"""``(listener, full)``: a blocking listener became full (True) or drained (False)."""


@dataclass(frozen=True, slots=True)
class Gap:
    """The connection was down from ``started`` to ``ended`` (wall-clock epoch seconds).

    Events QEMU raised in between are lost: QEMU does not replay events.
    """

    started: float
    ended: float

    @property
    def duration(self) -> float:
        """Seconds without a connection."""
        return self.ended - self.started


@dataclass(frozen=True, slots=True)
class Dropped:
    """``count`` events were dropped (queue overflow) just before the next item."""

    count: int


ListenerItem = Event | Gap | Dropped | RunState
"""What iterating a :class:`EventListener` yields."""


class EventListener:
    """A filtered, bounded stream of one client's events; see the module docstring.

    Use it as an async iterator, and as an async context manager to leave the
    client on exit. ``dropped`` counts every event lost to overflow.
    """

    def __init__(
        self,
        event_filter: EventFilter,
        *,
        maxsize: int = 1000,
        policy: OverflowPolicy = "block",
        leave: Callable[[EventListener], None],
        pressure: PressureCallback | None = None,
        hard_limit: int | None = None,
        once: bool = False,
    ) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        if policy not in _POLICIES:
            raise ValueError(
                f"unknown overflow policy {policy!r}; choose from {', '.join(_POLICIES)}"
            )
        self.filter = event_filter
        self.maxsize = maxsize
        self.policy: OverflowPolicy = policy
        blocking = policy == "block"
        # The most a queue may hold: past it, the oldest event gives way (counted).
        self.hard_limit = (hard_limit or maxsize * HARD_LIMIT_FACTOR) if blocking else maxsize
        if self.hard_limit < maxsize:
            raise ValueError("hard_limit must be at least maxsize")
        self._low_water = maxsize // 4
        self._pressure = pressure if blocking else None
        self._full = False  # told the client to stop reading, not yet told to go on
        self.dropped = 0
        self._leave = leave
        self._once = once
        self._queue: deque[ListenerItem] = deque()
        self._unreported = 0  # drops not yet announced by a Dropped marker
        self._waiter: asyncio.Future[None] | None = None
        self._ended = False
        self._end: BaseException | None = None

    @property
    def name(self) -> str:
        """A label for messages: ``events(QUORUM_*)``."""
        return f"events({', '.join(self.filter.names) or '*'})"

    @property
    def active(self) -> bool:
        """Whether the listener still receives events."""
        return not self._ended

    # -- the client's side ---------------------------------------------------------

    def offer(self, event: Event) -> None:
        """Queue ``event`` if it passes the filter (called by the client for every event)."""
        if not self._ended and self.filter.accepts(event):
            self._put(event)
            if self._once:
                self.close()

    def offer_many(self, events: list[Event]) -> None:
        """Queue every event of one read that passes the filter, in order.

        The same as :meth:`offer` for each, with one call and one wake-up per
        read instead of per event: this is the client's hot path.
        """
        if self._ended:
            return
        event_filter = self.filter
        if not event_filter.passes_all:
            events = [event for event in events if event_filter.accepts(event)]
        if self._once or len(self._queue) + len(events) > self.hard_limit:
            for event in events:
                self.offer(event)
            return
        if events:
            self._queue.extend(events)
            self._wake()
            if len(self._queue) >= self.maxsize:
                self._press()

    def mark(self, item: Gap | RunState) -> None:
        """Queue a marker that every listener receives (a one-shot listener ignores it)."""
        if not self._once:
            self._put(item)

    def end(self, error: BaseException | None = None) -> None:
        """Stop receiving; the consumer drains the queue, then gets ``error`` (or the end)."""
        if self._ended:
            return
        self._ended = True
        self._end = error
        self._release()  # an ended listener never holds the socket back
        self._wake()

    def _put(self, item: ListenerItem) -> None:
        if self._ended:
            return
        queue = self._queue
        if len(queue) >= self.hard_limit:
            if self.policy == "end":
                self.dropped += 1
                self._leave(self)
                self.end(EventsDropped(self.name, self.dropped))
                return
            self._drop_oldest()
        queue.append(item)
        self._wake()
        if len(queue) >= self.maxsize:
            self._press()

    def _press(self) -> None:
        if self._pressure is not None and not self._full and not self._ended:
            self._full = True
            self._pressure(self, True)

    def _release(self) -> None:
        if self._full:
            self._full = False
            assert self._pressure is not None
            self._pressure(self, False)

    def _taken(self) -> None:
        """After the consumer took an item: let the client read again at the low water mark."""
        if self._full and len(self._queue) <= self._low_water:
            self._release()

    def _drop_oldest(self) -> None:
        queue = self._queue
        oldest = queue.popleft()
        if isinstance(oldest, Gap | RunState):
            # A marker is rare and says more than any one event; keep it, drop the next.
            if queue:
                queue.popleft()
            queue.appendleft(oldest)
        self.dropped += 1
        self._unreported += 1

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the consumer's side -------------------------------------------------------

    def __aiter__(self) -> EventListener:
        return self

    async def __anext__(self) -> ListenerItem:
        while True:
            if self._unreported:
                count, self._unreported = self._unreported, 0
                return Dropped(count)
            if self._queue:
                item = self._queue.popleft()
                if self._full:
                    self._taken()
                return item
            if self._ended:
                if self._end is not None:
                    raise self._end
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None

    def get_nowait(self) -> ListenerItem | None:
        """The next queued item without waiting, or ``None`` when the queue is empty."""
        if self._unreported:
            count, self._unreported = self._unreported, 0
            return Dropped(count)
        if not self._queue:
            return None
        item = self._queue.popleft()
        if self._full:
            self._taken()
        return item

    def close(self) -> None:
        """Leave the client; iteration stops after what is already queued."""
        self._leave(self)
        self.end()

    async def __aenter__(self) -> EventListener:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventWaiter:
    """The first event that passes a filter; see :meth:`QMPClient.wait_for`.

    It listens from the moment it is created, so an event raised by a command
    executed between creating and awaiting it is not missed. Awaiting it returns
    the event or raises :class:`~qmpevents.errors.QMPTimeoutError` once
    ``timeout`` seconds have passed since the await began (``None``: no limit),
    or the error that ended the connection.
    """

    def __init__(self, listener: EventListener, timeout: float | None) -> None:
        self._listener = listener
        self._timeout = timeout

    def cancel(self) -> None:
        """Stop listening (a waiter that will not be awaited)."""
        self._listener.close()

    def __await__(self) -> Generator[Any, None, Event]:
        return self._wait().__await__()

    async def _wait(self) -> Event:
        listener = self._listener
        try:
            async with asyncio.timeout(self._timeout):
                async for item in listener:
                    # A one-shot listener gets no markers, only the event.
                    assert not isinstance(item, Gap | Dropped | RunState)
                    return item
        except TimeoutError:
            raise QMPTimeoutError(
                f"no {' or '.join(listener.filter.names) or 'event'} within {self._timeout} s"
            ) from None
        finally:
            listener.close()
        raise ConnectionLost("the client was closed before the event arrived")

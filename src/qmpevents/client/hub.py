"""The listeners of one client: who hears an event, and who holds the socket back.

A :class:`ListenerHub` hands each read's events to every listener, keeps the set
of blocking listeners that are full (the client stops reading while it is not
empty, see :mod:`.listeners`), and ends them all when the connection ends for good.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from qmpevents.schema.events import Event

from .listeners import EventFilter, EventListener, EventWaiter, Gap, OverflowPolicy, RunState

__all__ = ["ListenerHub"]


class ListenerHub:
    """Listeners of one client; ``on_pressure`` runs when the full set changes."""

    __slots__ = ("_closed", "_full", "_listeners", "_on_pressure")

    def __init__(self, on_pressure: Callable[[], None]) -> None:
        self._listeners: tuple[EventListener, ...] = ()
        self._full: set[EventListener] = set()
        self._on_pressure = on_pressure
        self._closed = False

    @property
    def holding_back(self) -> bool:
        """Whether a blocking listener is full (the client should not read)."""
        return bool(self._full)

    def listener(
        self,
        names: tuple[str, ...],
        where: Mapping[str, Any] | None,
        *,
        maxsize: int,
        policy: OverflowPolicy,
        hard_limit: int | None,
    ) -> EventListener:
        """A new listener, joined at once."""
        listener = EventListener(
            EventFilter(names, where),
            maxsize=maxsize,
            policy=policy,
            leave=self._leave,
            pressure=self._pressure,
            hard_limit=hard_limit,
        )
        self._join(listener)
        return listener

    def waiter(
        self, names: Iterable[str], where: Mapping[str, Any] | None, timeout: float | None
    ) -> EventWaiter:
        """A one-shot listener for the first matching event."""
        # One event, then it closes: it never fills, so it never holds reading back.
        listener = EventListener(
            EventFilter(tuple(names), where),
            maxsize=1,
            policy="drop-oldest",
            leave=self._leave,
            once=True,
        )
        self._join(listener)
        return EventWaiter(listener, timeout)

    def deliver(self, events: list[Event]) -> None:
        """Offer one read's events to every listener, in order."""
        for listener in self._listeners:
            listener.offer_many(events)

    def mark(self, marker: Gap | RunState) -> None:
        """Queue ``marker`` for every listener."""
        for listener in self._listeners:
            listener.mark(marker)

    def end_all(self, error: BaseException | None, *, closing: bool = False) -> None:
        """End every listener (with ``error``, or normally); ``closing``: refuse new ones."""
        self._closed = self._closed or closing
        listeners, self._listeners = self._listeners, ()
        for listener in listeners:
            listener.end(error)

    def _join(self, listener: EventListener) -> None:
        if self._closed:
            listener.end()
        else:
            # Copy on write: delivery iterates a tuple that a listener may leave mid-way.
            self._listeners = (*self._listeners, listener)

    def _leave(self, listener: EventListener) -> None:
        self._listeners = tuple(other for other in self._listeners if other is not listener)

    def _pressure(self, listener: EventListener, full: bool) -> None:
        if full:
            self._full.add(listener)
        else:
            self._full.discard(listener)
        self._on_pressure()

"""What every event source yields, and the interface it offers.

An :class:`EventSource` is "the events of one VM (or of many), from somewhere":
a QMP socket today, and the same interface for every other way of attaching.
Iterating it yields, in order:

- typed events (:class:`~qmpevents.schema.events.Event`, raw bytes kept);
- :class:`Connected` each time it is attached (again), after the handshake;
- :class:`Disconnected` at once when it loses its connection, before it retries;
- :class:`Unreachable` when an attempt fails, once per new reason;
- :class:`~qmpevents.client.Gap` after a reconnect, for the time nobody listened;
- :class:`~qmpevents.client.RunState` after a reconnect that found the VM in
  another run state than before (a source that tracks it);
- :class:`~qmpevents.client.Dropped` when a listener overflowed (a counted loss).

A source that does not reconnect raises instead: ``QMPConnectionError`` (or
``QMPTimeoutError``) when the first attempt fails, ``ConnectionLost`` when the
connection is lost.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType

from qmpevents.client import Dropped, Gap, RunState
from qmpevents.schema.events import Event

__all__ = ["Connected", "Disconnected", "EventSource", "SourceItem", "Unreachable"]


@dataclass(frozen=True, slots=True)
class Connected:
    """The source is attached, handshake done, at ``at`` (epoch seconds)."""

    at: float
    detail: str


@dataclass(frozen=True, slots=True)
class Disconnected:
    """The source lost its connection at ``at``; events until it is back are not seen."""

    at: float
    reason: str


@dataclass(frozen=True, slots=True)
class Unreachable:
    """An attempt to attach failed (reported once per new ``reason``); it will retry."""

    at: float
    reason: str


SourceItem = Event | Connected | Disconnected | Unreachable | Gap | Dropped | RunState


class EventSource(abc.ABC):
    """Typed events, gaps and connection markers from one place; see the module docstring.

    ``name`` is what the events are attributed to (the VM). Use ``async with``
    (or :meth:`aclose`) so that a connection never outlives its consumer.
    """

    name: str

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[SourceItem]:
        """The items, until :meth:`aclose` (or, without reconnect, the connection) ends them."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop: what was already received is still yielded, then iteration ends. Idempotent."""

    async def __aenter__(self) -> EventSource:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

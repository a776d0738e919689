"""What the fan-out needs of a sink: a non-blocking, bounded ``submit`` and its counters.

A sink that also keeps each VM's connection state (:class:`StateSink`) takes the
fan-out's :class:`~.records.ConnectionState` changes, in order with the records.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from qmpevents.collect.records import ConnectionState, Record

__all__ = ["Sink", "StateSink"]


class Sink(Protocol):
    """A destination of records (SQLite, NATS JetStream, ...).

    ``submit`` returns at once and never raises for the destination's sake: a sink
    keeps what it has not stored in its own bounded buffer and counts what that
    bound makes it drop, so one slow or failing sink never stalls the others. A
    record it can never store is rejected and counted, never retried for ever.
    """

    name: str

    def submit(self, record: Record) -> None:
        """Take ``record``; it is stored or published later."""

    @property
    def depth(self) -> int:
        """Records taken and not yet stored."""

    @property
    def dropped(self) -> int:
        """Records dropped because the buffer was full, or still not stored at close."""

    @property
    def failures(self) -> int:
        """Failed attempts to store or publish so far (each one logged)."""

    @property
    def rejected(self) -> Mapping[str, int]:
        """Records given up on for their own sake, per reason (see :mod:`.rejects`)."""

    async def start(self) -> None:
        """Begin storing (connect, open files, start workers)."""

    async def aclose(self) -> object:
        """Store everything taken (within the sink's own time bound) and stop."""


@runtime_checkable
class StateSink(Protocol):
    """A sink that keeps connection states (the SQLite history: ``connections``).

    ``submit_state`` takes a change (with the gap it opens or closes, stored with it)
    on the same terms as ``submit``, queued behind the records submitted before it.
    A gap that comes with a state change reaches such a sink only inside it.
    """

    def submit_state(self, state: ConnectionState) -> None:
        """Take ``state`` (and its gap); it is stored later, after what came before it."""

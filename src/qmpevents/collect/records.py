"""What the collector records: one :class:`EventRecord` per event, :class:`GapRecord` per outage.

Both are frozen msgspec Structs tagged on ``type`` (``"event"`` / ``"gap"``), so a
:data:`Record` encodes to and decodes from JSON or msgpack with one typed decoder.
Times are seconds since the epoch (wall clock); QEMU's timestamp is kept as its two
integers so that nothing is lost to float rounding.

A :class:`ConnectionState` is not a record of the history: it is what the local
history keeps of each VM's connection (connected or not, since when), so that a
collector restarted after SIGKILL knows which VMs the dead run was receiving from.
"""

from __future__ import annotations

import time

import msgspec

from qmpevents.schema.events import Event

__all__ = ["ConnectionState", "EventRecord", "GapRecord", "Record"]

_MICROS = 1_000_000


class EventRecord(
    msgspec.Struct, frozen=True, gc=False, omit_defaults=True, tag_field="type", tag="event"
):
    """One event of one VM as the collector received it.

    ``raw`` is the event exactly as QEMU sent it; ``qemu_seconds`` and ``qemu_micros``
    are QEMU's ``timestamp``; ``received_at`` is the collector's wall clock on arrival.
    ``host`` is the collector that received it, known in a central archive (else ``None``).
    """

    vm: str
    name: str
    qemu_seconds: int
    qemu_micros: int
    received_at: float
    raw: bytes
    host: str | None = None

    @property
    def qemu_ts(self) -> float:
        """QEMU's timestamp in seconds since the epoch."""
        return self.qemu_seconds + self.qemu_micros / _MICROS

    @classmethod
    def from_event(cls, vm: str, event: Event, received_at: float | None = None) -> EventRecord:
        """The record of a decoded ``event`` of ``vm``, received now unless told otherwise.

        Raises ``ValueError`` for an event built in Python (it has no ``raw`` bytes):
        the collector records only what QEMU actually sent.
        """
        raw = event.raw
        if raw is None:
            raise ValueError(f"{event.name}: an event without raw bytes cannot be recorded")
        return cls(
            vm=vm,
            name=event.name,
            qemu_seconds=event.timestamp.seconds,
            qemu_micros=event.timestamp.microseconds,
            received_at=time.time() if received_at is None else received_at,
            raw=raw,
        )


class GapRecord(
    msgspec.Struct, frozen=True, gc=False, omit_defaults=True, tag_field="type", tag="gap"
):
    """An interval in which the collector was not receiving the events of ``vm``.

    ``ended`` is ``None`` while the gap is still open. A gap is identified by
    ``(vm, started)``: recording the same gap again with ``ended`` set closes it.
    ``reason`` says why (``"connection lost: ..."``, ``"collector stopped"``).
    ``host`` is the collector that recorded it, known in a central archive (else ``None``).
    """

    vm: str
    started: float
    ended: float | None
    reason: str
    host: str | None = None


Record = EventRecord | GapRecord
"""Anything a sink stores or publishes."""


class ConnectionState(msgspec.Struct, frozen=True, gc=False):
    """``vm`` is connected (receiving) or not since ``since``, and the write of ``gap`` with it.

    The fan-out makes one at each change: a connection (``gap`` is the gap it closes,
    if any), a loss or a stop (``gap`` is the gap it opens), a gap found after the
    fact that is still open. A sink that keeps connection states
    (:class:`~.sink.StateSink`, the SQLite history) stores the state and its gap in
    one transaction, so that a crash never leaves one without the other; the other
    sinks get ``gap`` alone. A VM that never connected has none.
    """

    vm: str
    connected: bool
    since: float
    gap: GapRecord | None = None

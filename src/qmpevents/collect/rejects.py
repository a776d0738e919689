"""Records a sink gave up on: the ones it can never store or publish, however often it tries.

A sink keeps retrying what fails for the destination's sake (a full disk, NATS away).
A record that fails for its own sake (a constraint, a payload over NATS's
``max_payload``, an event name that makes no subject) is tried again alone; if it
fails alone too, the sink *parks* it here and goes on with the records behind it.
Each one is counted per reason (``qmpevents_rejected_total{sink,reason}``), logged
(the first ten of a reason, then one line per thousand), and the last
:attr:`Rejections.keep` are kept in memory for inspection (:attr:`Rejections.parked`).
Thread-safe: the SQLite writer adds from its thread while the metrics endpoint reads.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from qmpevents.collect.records import ConnectionState, EventRecord, GapRecord, Record

__all__ = ["Parked", "Rejections"]

log = logging.getLogger(__name__)

_LOG_FIRST = 10
_LOG_EVERY = 1000
_SHOWN = 80  # characters of an event name or error shown in the log


@dataclass(frozen=True, slots=True)
class Parked:
    """A rejected record, why (``reason``, a metric label) and what exactly failed."""

    record: Record | ConnectionState
    reason: str
    detail: str


def _short(text: str) -> str:
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}... ({len(text)} characters)"


class Rejections:
    """The records ``sink`` rejected, counted per reason; ``reasons`` start at 0."""

    def __init__(self, sink: str, reasons: Iterable[str] = (), *, keep: int = 100) -> None:
        self.sink = sink
        self.keep = keep
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(reasons, 0)
        self._parked: deque[Parked] = deque(maxlen=keep)

    def add(self, record: Record | ConnectionState, reason: str, detail: str) -> None:
        """Park ``record``: count it under ``reason``, keep it, log it (bounded)."""
        with self._lock:
            count = self._counts.get(reason, 0) + 1
            self._counts[reason] = count
            self._parked.append(Parked(record, reason, detail))
        if count <= _LOG_FIRST or count % _LOG_EVERY == 0:
            what = (
                f"{record.name!r} event"
                if isinstance(record, EventRecord)
                else "gap"
                if isinstance(record, GapRecord)
                else "connection state"
            )
            log.error(
                "%s: rejected a %s of VM %r for good (%s: %s); the records behind it go on"
                " (%d rejected for %s so far%s)",
                self.sink,
                _short(what),
                _short(record.vm),
                reason,
                _short(detail),
                count,
                reason,
                "" if count < _LOG_FIRST else f"; logging one in {_LOG_EVERY}",
            )

    @property
    def counts(self) -> dict[str, int]:
        """Rejected records per reason (a copy)."""
        with self._lock:
            return dict(self._counts)

    @property
    def total(self) -> int:
        """Rejected records, all reasons."""
        with self._lock:
            return sum(self._counts.values())

    @property
    def parked(self) -> list[Parked]:
        """The last :attr:`keep` rejected records, oldest first."""
        with self._lock:
            return list(self._parked)

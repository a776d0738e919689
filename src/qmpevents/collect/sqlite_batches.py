"""Writing one batch of records to the history: one transaction, or one record at a time.

:class:`BatchPolicy` says when a batch is due.

A batch is one transaction. When it fails for the storage's sake
(:func:`is_storage_error`: the disk, the file, a lock), it is rolled back and the
error raised: the caller keeps the batch and retries it later. When it fails for any
other reason, one record is to blame (a constraint, a string SQLite cannot take, a
value out of range): each record is then written again alone, under a savepoint of
one transaction, and those that fail alone are returned as rejected with a reason
(:func:`rejection_reason`), while the others are committed.

Records are written in the order they arrived, and every write of a gap is also
appended to the journal (:mod:`.outbox_journal`) in the same transaction, so that
what is published from the history comes out in that order. The :class:`Outcome`
says where the journal ends after the commit.

A :class:`~.records.ConnectionState` is written in its place among them: its gap
(if any) as any gap, and the VM's row of ``connections`` (see
:data:`~.sqlite_schema.CONNECTION_MIGRATIONS`), together or not at all.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field

from qmpevents.collect.outbox_journal import JOURNAL_GAP, Cursor, journal_tail
from qmpevents.collect.records import ConnectionState, EventRecord, GapRecord, Record

__all__ = [
    "SQLITE_REASONS",
    "BatchPolicy",
    "Outcome",
    "Written",
    "is_storage_error",
    "rejection_reason",
    "write_batch",
]

_INSERT_EVENT = (
    "INSERT INTO events (vm, name, qemu_seconds, qemu_micros, qemu_ts, received_at, raw)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# A gap is opened, then closed with the same (vm, started): the second write updates.
_UPSERT_GAP = (
    "INSERT INTO gaps (vm, started, ended, reason) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (vm, started) DO UPDATE SET ended = excluded.ended, reason = excluded.reason"
)

_UPSERT_CONNECTION = (
    "INSERT INTO connections (vm, connected, since) VALUES (?, ?, ?)"
    " ON CONFLICT (vm) DO UPDATE SET connected = excluded.connected, since = excluded.since"
)

Written = Record | ConnectionState
"""What the SQLite history takes: the records, and each VM's connection changes."""

SQLITE_REASONS = ("integrity", "data", "encoding", "invalid")
"""Why SQLite rejects a record: a constraint (``IntegrityError``), a value it cannot
hold (``DataError``: a string or blob too big), text that is not UTF-8, anything
else about the record (a wrong type, an integer out of range)."""


@dataclass(frozen=True)
class BatchPolicy:
    """When a batch is written: ``size`` records are waiting, or the oldest waited ``interval``."""

    size: int = 1000
    interval: float = 0.5

    def __post_init__(self) -> None:
        if self.size < 1 or self.interval < 0:
            raise ValueError(f"batch size must be >= 1 and interval >= 0, got {self}")

    def due(self, pending: int, oldest_at: float | None, now: float) -> bool:
        """Whether ``pending`` records, the oldest received at ``oldest_at``, must go now."""
        if pending >= self.size:
            return True
        return oldest_at is not None and now - oldest_at >= self.interval

    def wait(self, oldest_at: float | None, now: float) -> float | None:
        """How long until the pending records are due by time (``None``: nothing pending)."""
        if oldest_at is None:
            return None
        return max(0.0, oldest_at + self.interval - now)


@dataclass
class Outcome:
    """What a batch came to: records ``committed``, ``rejected`` (record, reason, detail),
    and the journal's ``tail`` after the commit (``None``: nothing was written)."""

    committed: int = 0
    rejected: list[tuple[Written, str, str]] = field(default_factory=list)
    tail: Cursor | None = None


def is_storage_error(error: BaseException) -> bool:
    """Whether ``error`` is the storage's (retry the same records later) rather than a record's."""
    if isinstance(error, OSError | MemoryError | sqlite3.OperationalError | sqlite3.InternalError):
        return True
    return type(error) is sqlite3.DatabaseError  # say, a malformed database image


def rejection_reason(error: BaseException) -> str:
    """The ``reason`` label of a record that ``error`` made SQLite refuse."""
    if isinstance(error, sqlite3.IntegrityError):
        return "integrity"
    if isinstance(error, sqlite3.DataError):
        return "data"
    if isinstance(error, UnicodeError):
        return "encoding"
    return "invalid"


def _event_row(r: EventRecord) -> tuple[object, ...]:
    return (r.vm, r.name, r.qemu_seconds, r.qemu_micros, r.qemu_ts, r.received_at, r.raw)


def _gap_row(r: GapRecord) -> tuple[object, ...]:
    return (r.vm, r.started, r.ended, r.reason)


def _insert_all(conn: sqlite3.Connection, records: list[Written]) -> None:
    """Insert in arrival order: runs of events at once, each gap with its journal entry."""
    run: list[tuple[object, ...]] = []
    for record in records:
        if isinstance(record, EventRecord):
            run.append(_event_row(record))
            continue
        if run:
            conn.executemany(_INSERT_EVENT, run)
            run = []
        _insert_one(conn, record)
    if run:
        conn.executemany(_INSERT_EVENT, run)


def _insert_one(conn: sqlite3.Connection, record: Written) -> None:
    if isinstance(record, EventRecord):
        conn.execute(_INSERT_EVENT, _event_row(record))
    elif isinstance(record, GapRecord):
        row = _gap_row(record)
        conn.execute(_UPSERT_GAP, row)
        conn.execute(JOURNAL_GAP, row)
    elif isinstance(record, ConnectionState):
        if record.gap is not None:
            _insert_one(conn, record.gap)
        conn.execute(_UPSERT_CONNECTION, (record.vm, record.connected, record.since))
    else:
        raise TypeError(f"not a record: {type(record).__name__}")


def _transaction(conn: sqlite3.Connection, body: Callable[[], None]) -> Cursor:
    """Run ``body`` in one transaction; return the journal's tail as committed."""
    conn.execute("BEGIN")
    try:
        body()
        tail = journal_tail(conn)
        conn.execute("COMMIT")
        return tail
    except BaseException:
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def write_batch(conn: sqlite3.Connection, records: list[Written]) -> Outcome:
    """Commit ``records`` (see the module docstring); storage errors are raised, rolled back."""
    if not records:
        return Outcome()
    try:
        tail = _transaction(conn, lambda: _insert_all(conn, records))
    except Exception as error:
        if is_storage_error(error):
            raise
    else:
        return Outcome(committed=len(records), tail=tail)
    return _write_each(conn, records)


def _write_each(conn: sqlite3.Connection, records: list[Written]) -> Outcome:
    outcome = Outcome()

    def each() -> None:
        outcome.committed, outcome.rejected = 0, []
        for record in records:
            conn.execute("SAVEPOINT record")
            try:
                _insert_one(conn, record)
            except Exception as error:
                if is_storage_error(error):
                    raise
                conn.execute("ROLLBACK TO record")
                detail = f"{type(error).__name__}: {error}"
                outcome.rejected.append((record, rejection_reason(error), detail))
            else:
                outcome.committed += 1
            conn.execute("RELEASE record")

    outcome.tail = _transaction(conn, each)
    return outcome

"""The central archive's SQLite side: records from JetStream, each message id once.

The archive is an ordinary history database (``history`` and ``stats`` read it as
they read a host's) with the archive tables of
:data:`~.sqlite_schema.ARCHIVE_MIGRATIONS`: ``archive_events`` maps each event row
to its ``Nats-Msg-Id`` (UNIQUE) and host, ``archive_gaps`` each gap row to its host.

:meth:`ArchiveStore.write` commits one batch in one transaction:

- an event whose message id is already archived is skipped (a redelivery, or a
  duplicate in the stream): it never makes a second row;
- a gap is upserted on ``(vm, started)`` as the host's own history does, except that
  a closed gap stays closed whatever order its two messages come in (a redelivered
  "open" never reopens it): open then close is one gap row, closed.

A batch that fails for the storage's sake (:func:`~.sqlite_batches.is_storage_error`)
raises, nothing committed; the caller retries it and acknowledges nothing meanwhile.
A batch that fails for a record's own sake is written again one record at a time,
and the records that fail alone are returned as rejected.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from qmpevents.collect.records import EventRecord, GapRecord, Record
from qmpevents.collect.sqlite_batches import is_storage_error
from qmpevents.collect.sqlite_schema import connect, migrate_archive

__all__ = ["ArchiveStore", "Archived", "WriteOutcome"]

_INSERT_EVENT = (
    "INSERT INTO events (vm, name, qemu_seconds, qemu_micros, qemu_ts, received_at, raw)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
_UPSERT_GAP = (
    "INSERT INTO gaps (vm, started, ended, reason) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (vm, started) DO UPDATE SET"
    " reason = CASE WHEN gaps.ended IS NULL THEN excluded.reason ELSE gaps.reason END,"
    " ended = COALESCE(gaps.ended, excluded.ended)"
)


@dataclass(frozen=True)
class Archived:
    """One message to archive: its ``msg_id``, the ``host`` that published it, its record."""

    msg_id: str
    host: str | None
    record: Record


@dataclass
class WriteOutcome:
    """What a batch came to: new rows, duplicates skipped, records rejected (with why)."""

    stored: int = 0
    duplicates: int = 0
    rejected: list[tuple[Archived, str]] = field(default_factory=list)


class ArchiveStore:
    """The archive database at ``path``, opened for writing (migrated, archive tables made).

    One writer: use it from one thread at a time.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect(path)
        self._conn.execute("PRAGMA busy_timeout = 5000")
        migrate_archive(self._conn)

    def close(self) -> None:
        """Release the database."""
        self._conn.close()

    def write(self, batch: list[Archived]) -> WriteOutcome:
        """Commit ``batch`` (see the module docstring); raises for storage errors."""
        outcome = WriteOutcome()
        try:
            self._transaction(batch, outcome)
        except Exception as error:
            if is_storage_error(error):
                raise
            outcome = WriteOutcome()
            for item in batch:
                try:
                    self._transaction([item], outcome)
                except Exception as alone:
                    if is_storage_error(alone):
                        raise
                    outcome.rejected.append((item, f"{type(alone).__name__}: {alone}"))
        return outcome

    def _transaction(self, batch: list[Archived], outcome: WriteOutcome) -> None:
        conn = self._conn
        stored = duplicates = 0
        conn.execute("BEGIN IMMEDIATE")
        try:
            for item in batch:
                if self._write_one(item):
                    stored += 1
                else:
                    duplicates += 1
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        outcome.stored += stored
        outcome.duplicates += duplicates

    def _write_one(self, item: Archived) -> bool:
        """Write ``item`` in the open transaction; False when its event is archived already."""
        conn, record = self._conn, item.record
        if isinstance(record, EventRecord):
            seen = conn.execute(
                "SELECT 1 FROM archive_events WHERE msg_id = ?", (item.msg_id,)
            ).fetchone()
            if seen is not None:
                return False
            cursor = conn.execute(
                _INSERT_EVENT,
                (
                    record.vm,
                    record.name,
                    record.qemu_seconds,
                    record.qemu_micros,
                    record.qemu_ts,
                    record.received_at,
                    record.raw,
                ),
            )
            conn.execute(
                "INSERT INTO archive_events (event_id, msg_id, host) VALUES (?, ?, ?)",
                (cursor.lastrowid, item.msg_id, item.host),
            )
            return True
        assert isinstance(record, GapRecord)
        conn.execute(_UPSERT_GAP, (record.vm, record.started, record.ended, record.reason))
        (gap_id,) = conn.execute(
            "SELECT id FROM gaps WHERE vm = ? AND started = ?", (record.vm, record.started)
        ).fetchone()
        conn.execute(
            "INSERT INTO archive_gaps (gap_id, host) VALUES (?, ?)"
            " ON CONFLICT (gap_id) DO UPDATE SET host = COALESCE(archive_gaps.host, excluded.host)",
            (gap_id, item.host),
        )
        return True

    def message_ids(self) -> list[str]:
        """Every archived event's message id (for checks and tests)."""
        return [row[0] for row in self._conn.execute("SELECT msg_id FROM archive_events")]

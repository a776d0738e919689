"""The SQLite history as a journal: reading it in order behind a persistent cursor.

The journal is the order in which records were committed. An event is journaled by
its row in ``events`` (``id`` grows with every commit: one writer). A gap is
upserted in ``gaps`` (opened, then closed in place), so each write of a gap is also
appended to ``outbox_gaps`` as it was then (``seq``, AUTOINCREMENT), with
``after_event``: the newest event id committed before it. The journal position of
an event is ``(id, 0, 0)``, of a gap ``(after_event, 1, seq)``; sorting by position
gives back the order of arrival (the batch writer keeps it, see
:mod:`.sqlite_batches`).

A consumer's :class:`Cursor` (table ``outbox_cursor``) holds the last event id and
gap seq it is done with. It is created at the end of the journal the first time
(the history before is not replayed), and only moved forward, in one transaction
that also prunes the gap rows behind it.
"""

from __future__ import annotations

import heapq
import sqlite3
from dataclasses import dataclass

from qmpevents.collect.records import EventRecord, GapRecord, Record

__all__ = [
    "JOURNAL_GAP",
    "Cursor",
    "Page",
    "ensure_cursor",
    "journal_tail",
    "read_page",
    "store_cursor",
]

JOURNAL_GAP = (
    "INSERT INTO outbox_gaps (after_event, vm, started, ended, reason)"
    " VALUES ((SELECT IFNULL(MAX(id), 0) FROM events), ?, ?, ?, ?)"
)
"""Appends a gap, as it is now, to the journal (in the transaction that writes it)."""

_GAP_TAIL = "SELECT IFNULL((SELECT seq FROM sqlite_sequence WHERE name = 'outbox_gaps'), 0)"


@dataclass(frozen=True, order=True)
class Cursor:
    """A journal position: every event up to ``event_id``, every gap up to ``gap_seq``."""

    event_id: int = 0
    gap_seq: int = 0

    def behind(self, tail: Cursor) -> int:
        """Journal entries between this cursor and ``tail`` (ids are consecutive)."""
        return max(0, tail.event_id - self.event_id) + max(0, tail.gap_seq - self.gap_seq)


@dataclass(frozen=True)
class Page:
    """Records after a cursor in journal order, and the cursor just past them."""

    records: list[Record]
    cursor: Cursor


def journal_tail(conn: sqlite3.Connection) -> Cursor:
    """The position of the newest journal entry (``Cursor()`` for an empty journal)."""
    (event_id,) = conn.execute("SELECT IFNULL(MAX(id), 0) FROM events").fetchone()
    (gap_seq,) = conn.execute(_GAP_TAIL).fetchone()
    return Cursor(int(event_id), int(gap_seq))


def ensure_cursor(conn: sqlite3.Connection, consumer: str) -> Cursor:
    """``consumer``'s cursor, created at the journal's end if it has none yet."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        row = conn.execute(
            "SELECT event_id, gap_seq FROM outbox_cursor WHERE consumer = ?", (consumer,)
        ).fetchone()
        if row is None:
            cursor = journal_tail(conn)
            conn.execute(
                "INSERT INTO outbox_cursor (consumer, event_id, gap_seq) VALUES (?, ?, ?)",
                (consumer, cursor.event_id, cursor.gap_seq),
            )
            conn.execute("DELETE FROM outbox_gaps WHERE seq <= ?", (cursor.gap_seq,))
        else:
            cursor = Cursor(int(row[0]), int(row[1]))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return cursor


def store_cursor(conn: sqlite3.Connection, consumer: str, cursor: Cursor) -> None:
    """Move ``consumer``'s cursor to ``cursor`` (never back) and prune the gaps behind it."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            "UPDATE outbox_cursor SET event_id = MAX(event_id, ?), gap_seq = MAX(gap_seq, ?)"
            " WHERE consumer = ?",
            (cursor.event_id, cursor.gap_seq, consumer),
        )
        conn.execute("DELETE FROM outbox_gaps WHERE seq <= ?", (cursor.gap_seq,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def read_page(conn: sqlite3.Connection, after: Cursor, limit: int) -> Page:
    """Up to ``limit`` records after ``after``, in journal order (one read transaction)."""
    conn.execute("BEGIN")
    try:
        events = conn.execute(
            "SELECT id, vm, name, qemu_seconds, qemu_micros, received_at, raw FROM events"
            " WHERE id > ? ORDER BY id LIMIT ?",
            (after.event_id, limit),
        ).fetchall()
        gaps = conn.execute(
            "SELECT seq, after_event, vm, started, ended, reason FROM outbox_gaps"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (after.gap_seq, limit),
        ).fetchall()
    finally:
        conn.execute("COMMIT")
    keyed: list[tuple[tuple[int, int, int], Record]] = [
        ((row[0], 0, 0), EventRecord(*row[1:])) for row in events
    ]
    gap_keyed: list[tuple[tuple[int, int, int], Record]] = [
        ((row[1], 1, row[0]), GapRecord(*row[2:])) for row in gaps
    ]
    # A full side may have more rows right behind its last one: nothing past that is
    # known to be in order yet.
    bound = (2**63, 2, 0)
    if len(keyed) == limit:
        bound = min(bound, keyed[-1][0])
    if len(gap_keyed) == limit:
        bound = min(bound, gap_keyed[-1][0])
    merged = [
        entry for entry in heapq.merge(keyed, gap_keyed, key=lambda e: e[0]) if entry[0] <= bound
    ][:limit]
    event_id, gap_seq = after.event_id, after.gap_seq
    for (first, kind, seq), _ in merged:
        if kind == 0:
            event_id = first
        else:
            gap_seq = seq
    return Page([record for _, record in merged], Cursor(event_id, gap_seq))

"""The SQLite history as a journal: arrival order, pages, the cursor (no NATS needed)."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from qmpevents.collect.outbox_journal import (
    Cursor,
    ensure_cursor,
    journal_tail,
    read_page,
    store_cursor,
)
from qmpevents.collect.records import GapRecord, Record
from qmpevents.collect.sqlite_schema import SCHEMA_VERSION, connect, migrate, version_of
from qmpevents.collect.sqlite_store import BatchPolicy, SQLiteStore
from tests.collect.conftest import event_record


def mixed(count: int) -> list[Record]:
    """Events of three VMs with gaps opened and closed between them, in arrival order."""
    records: list[Record] = []
    for i in range(count):
        vm = f"vm{i % 3}"
        if i % 17 == 0:
            records.append(GapRecord(vm, 1000.0 + i, None, "connection lost"))
            records.append(GapRecord(vm, 1000.0 + i, 1000.5 + i, "connection lost"))
        records.append(event_record(vm, i))
    return records


def write(path: Path, records: list[Record], batch: int = 64) -> SQLiteStore:
    store = SQLiteStore(path, batching=BatchPolicy(size=batch, interval=0.0))
    store.open()
    for record in records:
        store.submit(record)
    assert store.flush(timeout=20)
    return store


def read_all(conn: sqlite3.Connection, after: Cursor, page_size: int) -> tuple[list[Record], int]:
    """Everything after ``after``, page by page; also the largest page seen."""
    records: list[Record] = []
    largest = 0
    while True:
        page = read_page(conn, after, page_size)
        if not page.records:
            return records, largest
        largest = max(largest, len(page.records))
        records += page.records
        after = page.cursor


def test_pages_give_back_every_record_in_arrival_order(tmp_path: Path) -> None:
    sent = mixed(1000)
    store = write(tmp_path / "events.db", sent)
    with contextlib.closing(connect(tmp_path / "events.db")) as conn:
        for page_size in (1, 2, 7, 500, 5000):
            records, largest = read_all(conn, Cursor(), page_size)
            assert records == sent, page_size
            assert largest <= page_size  # memory bounded by the page, whatever the backlog
        assert journal_tail(conn) == store.journal_tail
        assert Cursor().behind(store.journal_tail) == len(sent)
    store.close()


def test_the_cursor_starts_at_the_end_and_only_moves_forward(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = write(path, mixed(100))
    with contextlib.closing(connect(path)) as conn:
        start = ensure_cursor(conn, "nats")
        assert start == store.journal_tail  # the history before is not replayed
        later = mixed(20)[5:]
        for record in later:
            store.submit(record)
        assert store.flush(timeout=10)
        assert read_all(conn, start, 4)[0] == later
        assert ensure_cursor(conn, "nats") == start  # stored, not moved by a second call
        page = read_page(conn, start, 6)
        store_cursor(conn, "nats", page.cursor)
        store_cursor(conn, "nats", start)  # never back
        assert ensure_cursor(conn, "nats") == page.cursor
        assert read_all(conn, page.cursor, 4)[0] == later[6:]
        # the gap rows behind the cursor are pruned
        (behind,) = conn.execute(
            "SELECT COUNT(*) FROM outbox_gaps WHERE seq <= ?", (page.cursor.gap_seq,)
        ).fetchone()
        assert behind == 0
    store.close()


def test_a_version_3_history_gets_the_outbox_tables(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as old:
        migrate(old, target=3)
    with contextlib.closing(connect(path)) as conn:
        assert version_of(conn) == SCHEMA_VERSION == 4
        assert ensure_cursor(conn, "nats") == Cursor()

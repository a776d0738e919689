"""The SQLite writer never stops storing: poison records are rejected, errors survived.

Each test fails on a writer that dies of an exception (``open()`` then waits for
ever, or nothing after the poison is stored) or that retries a poisoned batch for
ever; every wait is bounded.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from qmpevents.collect import sqlite_store
from qmpevents.collect.records import EventRecord, Record
from qmpevents.collect.sqlite_store import BatchPolicy, SQLiteStore
from tests.collect.conftest import event_record

_real_connect = sqlite_store.connect
LENGTH_LIMIT = 50_000


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


def limited_connect(path: Path, **options: Any) -> sqlite3.Connection:
    """The real connection, with SQLite's string/blob limit lowered (so DataError is reachable)."""
    conn = _real_connect(path, **options)
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, LENGTH_LIMIT)
    return conn


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(
        tmp_path / "events.db",
        batching=BatchPolicy(size=10, interval=0.01),
        retry_initial=0.01,
        retry_max=0.05,
    )
    yield store
    store.close(timeout=2)


def replaced(record: EventRecord, **changes: Any) -> EventRecord:
    # msgspec does not check types on replace: what a bug elsewhere could hand the sink
    return msgspec.structs.replace(record, **changes)


POISONS: dict[str, Callable[[], Record]] = {
    # a socket file name that is not UTF-8, as os.fsdecode gives it (surrogates)
    "encoding": lambda: replaced(event_record("vm", 900), vm="vm\udcff"),
    "integrity": lambda: replaced(event_record("vm", 901), name=None),  # NOT NULL
    "invalid": lambda: replaced(event_record("vm", 902), qemu_seconds=2**70),  # > INTEGER
    "data": lambda: replaced(event_record("vm", 903), raw=b"x" * (LENGTH_LIMIT + 1)),
}


@pytest.mark.parametrize("reason", sorted(POISONS))
def test_a_record_sqlite_refuses_is_rejected_alone_and_the_rest_is_stored(
    store: SQLiteStore,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    reason: str,
) -> None:
    monkeypatch.setattr(sqlite_store, "connect", limited_connect)
    good = [event_record(f"vm{i % 3}", i) for i in range(45)]
    store.open()
    with caplog.at_level(logging.ERROR):
        for record in good[:15]:
            store.submit(record)
        store.submit(POISONS[reason]())  # in the middle of a batch
        for record in good[15:30]:
            store.submit(record)
        wait_until(lambda: store.depth == 0)
        for record in good[30:]:  # the writer is still alive and writing
            store.submit(record)
        assert store.flush(timeout=10)
    assert sorted(r.raw for r in store.query()) == sorted(r.raw for r in good)
    assert store.rejected[reason] == 1 and sum(store.rejected.values()) == 1
    [parked] = store.rejections.parked
    assert parked.reason == reason
    assert "sqlite: rejected" in caplog.text
    assert store.close() == 0 and store.dropped == 0


def test_open_returns_when_the_first_connection_raises_anything(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[Path] = []

    def broken_at_first(path: Path, **options: Any) -> sqlite3.Connection:
        attempts.append(path)
        if len(attempts) <= 2:
            raise RuntimeError("injected: not an sqlite3 or OS error")
        return _real_connect(path, **options)

    monkeypatch.setattr(sqlite_store, "connect", broken_at_first)
    with caplog.at_level(logging.ERROR):
        opener = threading.Thread(target=store.open, daemon=True)
        opener.start()
        opener.join(timeout=10)
        assert not opener.is_alive(), "open() is still waiting for the writer"
        for i in range(5):
            store.submit(event_record("vm", i))
        wait_until(lambda: store.committed == 5)
    assert store.failures >= 2
    assert "injected" in caplog.text


class FailingBegin:
    """A connection whose next ``failures`` BEGINs raise what no sqlite3 code would."""

    def __init__(self, conn: sqlite3.Connection, failures: list[None]) -> None:
        self._conn = conn
        self._failures = failures

    def execute(self, sql: str, *args: Any) -> sqlite3.Cursor:
        if sql == "BEGIN" and self._failures:
            self._failures.pop()
            raise RuntimeError("injected into BEGIN")
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


def test_the_writer_survives_an_unexpected_exception_while_writing(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[None] = [None] * 3
    monkeypatch.setattr(
        sqlite_store, "connect", lambda path, **o: FailingBegin(_real_connect(path, **o), failures)
    )
    store.open()
    with caplog.at_level(logging.ERROR):
        for i in range(25):
            store.submit(event_record("vm", i))
        wait_until(lambda: store.committed == 25)
    assert not failures  # every injected error happened...
    assert store.failures >= 1  # ...was counted...
    assert "injected into BEGIN" in caplog.text  # ...and logged
    assert len(store.query()) == 25
    assert sum(store.rejected.values()) == 0  # nothing was blamed on a record


def test_an_error_outside_any_write_is_survived_and_close_still_returns(
    store: SQLiteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.open()
    real = store._next_batch
    calls: list[None] = []

    def failing_twice(retry_at: float | None) -> Any:
        calls.append(None)
        if len(calls) <= 2:
            raise RuntimeError("injected into the writer's bookkeeping")
        return real(retry_at)

    monkeypatch.setattr(store, "_next_batch", failing_twice)
    store.submit(event_record("vm", 1))
    wait_until(lambda: len(calls) > 2)  # failed twice, then went on
    store.submit(event_record("vm", 2))
    wait_until(lambda: store.committed == 2)
    assert store.failures == 2

    monkeypatch.setattr(store, "_next_batch", lambda retry_at: 1 / 0)  # for ever, now
    closing = threading.Thread(target=store.close, kwargs={"timeout": 0.2}, daemon=True)
    closing.start()
    closing.join(timeout=10)
    assert not closing.is_alive(), "close() waits for a writer that never stops failing"

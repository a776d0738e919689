"""The SQLite sink: batching, durability, migrations, indexes, and storage failures."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from qmpevents.collect.history import History
from qmpevents.collect.records import ConnectionState, EventRecord, GapRecord
from qmpevents.collect.sqlite_batches import write_batch
from qmpevents.collect.sqlite_schema import (
    SCHEMA_VERSION,
    connect,
    has_connections,
    migrate,
    migrate_connections,
    version_of,
)
from qmpevents.collect.sqlite_store import BatchPolicy, SQLiteStore
from qmpevents.errors import ConfigError
from tests.collect.conftest import event_record
from tests.helpers import FakeClock


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.01)


@pytest.fixture
def store_factory(tmp_path: Path) -> Iterator[Callable[..., SQLiteStore]]:
    stores: list[SQLiteStore] = []

    def make(path: Path | None = None, **options: object) -> SQLiteStore:
        store = SQLiteStore(path or tmp_path / "events.db", **options)  # type: ignore[arg-type]
        stores.append(store)
        return store

    yield make
    for store in stores:
        store.close(timeout=1)


# --- batching -----------------------------------------------------------------------


def test_batch_policy_is_due_by_size_or_by_age() -> None:
    policy = BatchPolicy(size=10, interval=2.0)
    clock = FakeClock()
    assert not policy.due(0, None, clock())
    assert policy.wait(None, clock()) is None
    oldest = clock()
    clock.advance(1.5)
    assert not policy.due(3, oldest, clock())
    assert policy.wait(oldest, clock()) == pytest.approx(0.5)
    assert policy.due(10, oldest, clock())
    clock.advance(0.5)
    assert policy.due(3, oldest, clock())
    assert policy.wait(oldest, clock()) == 0.0


def test_a_partial_batch_waits_for_the_interval(
    store_factory: Callable[..., SQLiteStore],
) -> None:
    clock = FakeClock()
    store = store_factory(batching=BatchPolicy(size=100, interval=0.2), clock=clock)
    store.open()
    for i in range(3):
        store.submit(event_record("vm", i))
    time.sleep(0.5)  # real time passes, the store's clock does not: nothing is due
    assert store.committed == 0
    assert store.depth == 3
    clock.advance(0.2)
    wait_until(lambda: store.committed == 3)
    assert store.depth == 0


def test_full_batches_go_at_once_and_the_rest_waits(
    store_factory: Callable[..., SQLiteStore],
) -> None:
    clock = FakeClock()
    store = store_factory(batching=BatchPolicy(size=10, interval=0.2), clock=clock)
    store.open()
    for i in range(25):
        store.submit(event_record("vm", i))
    wait_until(lambda: store.committed == 20)
    time.sleep(0.3)
    assert store.committed == 20
    assert store.close() == 0
    assert store.committed == 25


def test_flush_commits_now(store_factory: Callable[..., SQLiteStore]) -> None:
    store = store_factory(batching=BatchPolicy(size=100, interval=3600))
    store.open()
    store.submit(event_record("vm", 1))
    assert store.flush(timeout=10)
    assert len(store.query()) == 1


# --- durability and reading back -------------------------------------------------------


def test_close_commits_everything_and_a_reopened_store_reads_it(
    store_factory: Callable[..., SQLiteStore], tmp_path: Path
) -> None:
    store = store_factory(batching=BatchPolicy(size=64, interval=3600))
    store.open()
    for i in range(1000):
        store.submit(
            event_record(f"vm{i % 3}", i, "MIGRATION_PASS" if i % 2 else "VSERPORT_CHANGE")
        )
    store.submit(GapRecord("vm0", 10.0, None, "connection lost"))
    store.submit(GapRecord("vm0", 10.0, 12.5, "connection lost"))  # closes the same gap
    assert store.close() == 0
    assert (store.committed, store.dropped) == (1002, 0)

    again = store_factory(batching=BatchPolicy(size=64, interval=3600))
    again.open()
    again.submit(event_record("vm9", 5000))
    again.close()
    with History(tmp_path / "events.db") as history:
        everything = history.query()
        assert len(everything) == 1000 + 1 + 1
        assert everything[0] == GapRecord("vm0", 10.0, 12.5, "connection lost")
        events = [r for r in everything if isinstance(r, EventRecord)]
        assert [r.qemu_ts for r in events] == sorted(r.qemu_ts for r in events)
        assert events[0] == event_record("vm0", 0)
        assert len(history.query(vm="vm1")) == 333
        assert len(history.query(vm="vm0")) == 334 + 1
        assert len(history.query(vm="vm0", event="MIGRATION_PASS")) == 167
        middle = history.query(since=events[100].qemu_ts, until=events[199].qemu_ts)
        assert [r.raw for r in middle if isinstance(r, EventRecord)] == [
            r.raw for r in events[100:200]
        ]
        assert len(history.query(limit=10)) == 10
        counts = {(c.vm, c.name): c.count for c in history.stats()}
        assert counts[("vm0", "VSERPORT_CHANGE")] == 167
        assert sum(counts.values()) == 1001
        assert history.open_gaps() == []


def test_open_gaps_are_the_latest_unclosed_per_vm(
    store_factory: Callable[..., SQLiteStore], tmp_path: Path
) -> None:
    store = store_factory()
    store.open()
    for gap in [
        GapRecord("a", 1.0, 2.0, "lost"),
        GapRecord("a", 3.0, None, "collector stopped"),
        GapRecord("b", 1.0, None, "lost"),
        GapRecord("b", 1.0, 4.0, "lost"),
    ]:
        store.submit(gap)
    store.close()
    with History(tmp_path / "events.db") as history:
        assert history.open_gaps() == [GapRecord("a", 3.0, None, "collector stopped")]
        # an open gap overlaps every later range
        assert history.query(vm="a", since=100.0) == [
            GapRecord("a", 3.0, None, "collector stopped")
        ]


# --- schema ---------------------------------------------------------------------------


def test_an_older_database_is_migrated_forward(
    store_factory: Callable[..., SQLiteStore], tmp_path: Path
) -> None:
    path = tmp_path / "events.db"
    old = sqlite3.connect(path, isolation_level=None)
    migrate(old, target=1)
    record = event_record("old-vm", 7)
    old.execute(
        "INSERT INTO events (vm, name, qemu_seconds, qemu_micros, received_at, raw)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (record.vm, record.name, record.qemu_seconds, record.qemu_micros, 1.0, record.raw),
    )
    assert version_of(old) == 1
    old.close()

    store = store_factory(path)
    store.open()
    store.close()
    with History(path) as history:
        assert version_of(history._conn) == SCHEMA_VERSION
        [migrated] = history.query(since=record.qemu_ts, until=record.qemu_ts)
    assert migrated == msgspec.structs.replace(record, received_at=1.0)


def connections(path: Path) -> list[tuple[str, int, float]]:
    with contextlib.closing(sqlite3.connect(path)) as conn:
        return conn.execute("SELECT vm, connected, since FROM connections ORDER BY vm").fetchall()


def test_connection_states_are_stored_in_order_with_their_gaps(
    store_factory: Callable[..., SQLiteStore], tmp_path: Path
) -> None:
    path = tmp_path / "events.db"
    store = store_factory(path, batching=BatchPolicy(size=2, interval=3600))
    store.open()
    store.submit_state(ConnectionState("a", True, 1.0))  # a first connection: no gap
    store.submit(msgspec.structs.replace(event_record("a", 1), received_at=2.0))
    lost = GapRecord("b", 3.0, None, "connection lost")
    store.submit_state(ConnectionState("b", True, 2.5))
    store.submit_state(ConnectionState("b", False, 3.0, lost))
    store.submit_state(ConnectionState("c", True, 4.0))
    assert store.close() == 0
    assert store.committed == 5  # a state is one, its gap with it
    assert connections(path) == [("a", 1, 1.0), ("b", 0, 3.0), ("c", 1, 4.0)]
    with History(path) as history:
        assert history.query(vm="b") == [lost]
        assert history.query(vm="a") != [] and history.query(vm="c") == []  # no gap for either
        assert history.left_connected() == [("a", 2.0), ("c", 4.0)]  # a: its newest event
        assert history.open_gaps() == [lost]


def test_a_state_and_its_gap_are_written_together_or_not_at_all(tmp_path: Path) -> None:
    with contextlib.closing(connect(tmp_path / "events.db")) as conn:
        migrate_connections(conn)
        bad = GapRecord("a", 2.0, None, None)  # type: ignore[arg-type]  # NOT NULL fails
        outcome = write_batch(
            conn,
            [ConnectionState("a", True, 1.0), ConnectionState("a", False, 2.0, bad)],
        )
        assert outcome.committed == 1
        assert [(reason, state.gap) for state, reason, _ in outcome.rejected] == [
            ("integrity", bad)
        ]
        # the state that came with the refused gap is not written either
        assert conn.execute("SELECT vm, connected, since FROM connections").fetchall() == [
            ("a", 1, 1.0)
        ]
        assert conn.execute("SELECT COUNT(*) FROM gaps").fetchone() == (0,)


def test_an_older_history_gets_connection_states_from_its_latest_gaps(
    store_factory: Callable[..., SQLiteStore], tmp_path: Path
) -> None:
    path = tmp_path / "events.db"
    with contextlib.closing(connect(path)) as old:  # a history as qmpevents wrote it before
        old.executemany(
            "INSERT INTO gaps (vm, started, ended, reason) VALUES (?, ?, ?, ?)",
            [
                ("up", 1.0, 2.0, "not connected yet"),  # closed: connected when it died
                ("down", 1.0, 2.0, "not connected yet"),
                ("down", 5.0, None, "collector stopped"),  # open: not connected
                ("never", 1.0, None, "not connected yet"),
            ],
        )
        record = event_record("up", 1)
        old.execute(
            "INSERT INTO events (vm, name, qemu_seconds, qemu_micros, qemu_ts, received_at, raw)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            ("up", record.name, 0, 0, 0.0, 3.0, record.raw),
        )
        assert not has_connections(old)
    with History(path) as history:  # read as it is, not migrated (read-only)
        assert not has_connections(history._conn)
        assert history.left_connected() == [("up", 3.0)]

    store = store_factory(path)
    store.open()  # the writer migrates it
    store.close()
    assert connections(path) == [("down", 0, 5.0), ("never", 0, 1.0), ("up", 1, 2.0)]
    with History(path) as history:
        assert history.left_connected() == [("up", 3.0)]
        assert version_of(history._conn) == SCHEMA_VERSION
        version = history._conn.execute("SELECT version FROM connection_version").fetchone()
        assert version == (1,)


def test_a_newer_database_is_refused(
    store_factory: Callable[..., SQLiteStore], tmp_path: Path
) -> None:
    path = tmp_path / "events.db"
    connect(path).execute("UPDATE schema_version SET version = 99")
    with pytest.raises(ConfigError, match="schema version 99"):
        store_factory(path).open()
    with pytest.raises(ConfigError, match="schema version 99"):
        History(path)


@pytest.mark.parametrize(
    ("where", "params", "index"),
    [
        ("vm = ?", ("vm1",), "events_by_vm"),
        ("vm = ? AND qemu_ts >= ?", ("vm1", 5.0), "events_by_vm"),
        ("name = ? AND qemu_ts BETWEEN ? AND ?", ("X", 1.0, 2.0), "events_by_name"),
        ("qemu_ts >= ? AND qemu_ts <= ?", (1.0, 2.0), "events_by_time"),
    ],
)
def test_history_queries_use_an_index(
    tmp_path: Path, where: str, params: tuple[object, ...], index: str
) -> None:
    conn = connect(tmp_path / "events.db")
    plan = " ".join(
        row[3]
        for row in conn.execute(
            f"EXPLAIN QUERY PLAN SELECT * FROM events WHERE {where} ORDER BY qemu_ts", params
        )
    )
    assert f"USING INDEX {index}" in plan
    assert "TEMP B-TREE" not in plan  # ordered by the index, no sort


# --- storage failures -------------------------------------------------------------------


def test_an_unwritable_path_is_reported_kept_bounded_and_recovered(
    store_factory: Callable[..., SQLiteStore],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the database directory should be")
    path = blocker / "events.db"
    store = store_factory(
        path,
        batching=BatchPolicy(size=10, interval=0.01),
        buffer_limit=50,
        retry_initial=0.02,
        retry_max=0.05,
    )
    with caplog.at_level(logging.ERROR):
        store.open()  # no exception: the writer retries
        for i in range(80):
            store.submit(event_record("vm", i))
        wait_until(lambda: store.failures >= 3)
    assert store.last_error is not None
    assert "cannot write" in caplog.text and str(path) in caplog.text
    assert store.dropped == 30  # the 30 oldest, counted
    assert store.depth == 50

    blocker.unlink()
    wait_until(lambda: store.committed == 50)
    assert store.last_error is None
    assert [r.raw for r in store.query()] == [event_record("vm", i).raw for i in range(30, 80)]


def test_close_gives_up_after_its_timeout_and_counts_the_loss(
    store_factory: Callable[..., SQLiteStore], tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    store = store_factory(blocker / "events.db", retry_initial=0.01, retry_max=0.02)
    store.open()
    for i in range(5):
        store.submit(event_record("vm", i))
    assert store.close(timeout=0.2) == 5
    assert store.dropped == 5


@contextlib.contextmanager
def tiny_tmpfs(where: Path, size: str = "2m") -> Iterator[Path]:
    where.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here (the RLIMIT_FSIZE test covers it): {result.stderr!r}"
        )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_full_disk_is_reported_and_recovered(
    store_factory: Callable[..., SQLiteStore], tmp_path: Path
) -> None:
    with tiny_tmpfs(tmp_path / "small") as small:
        store = store_factory(
            small / "events.db",
            batching=BatchPolicy(size=50, interval=0.01),
            retry_initial=0.02,
            retry_max=0.1,
        )
        store.open()
        filler = small / "filler"
        with contextlib.suppress(OSError), filler.open("wb", buffering=0) as f:
            while True:
                f.write(b"\0" * 4096)
        for i in range(500):
            store.submit(event_record("vm", i))
        wait_until(lambda: store.failures >= 2)
        assert store.last_error is not None and "full" in store.last_error
        assert store.committed < 500
        filler.unlink()
        wait_until(lambda: store.committed == 500)
        assert store.close() == 0
        assert len(store.query()) == 500


_CHILD_PRELUDE = """
import json, resource, sys, time
from pathlib import Path
from qmpevents.collect.records import EventRecord
from qmpevents.collect.sqlite_store import BatchPolicy, SQLiteStore

def record(i):
    raw = b'{"timestamp": {"seconds": %d, "microseconds": 0}, "event": "VSERPORT_CHANGE", '\\
          b'"data": {"open": true, "id": "%s"}}' % (1780000000 + i, b"x" * 200)
    return EventRecord("vm", "VSERPORT_CHANGE", 1780000000 + i, 0, time.time(), raw)
"""


def run_child(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _CHILD_PRELUDE + code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def test_a_file_size_limit_is_a_full_disk_too(tmp_path: Path) -> None:
    # RLIMIT_FSIZE needs no privileges; Python ignores SIGXFSZ, so writes fail with EFBIG.
    child = run_child(
        """
store = SQLiteStore(Path(sys.argv[1]), batching=BatchPolicy(size=100, interval=0.01),
                    retry_initial=0.02, retry_max=0.1)
store.open()
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
resource.setrlimit(resource.RLIMIT_FSIZE, (128 * 1024, hard))
for i in range(2000):
    store.submit(record(i))
while store.failures < 2:
    time.sleep(0.01)
stuck = {"committed": store.committed, "error": store.last_error}
resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
lost = store.close()
print(json.dumps({"stuck": stuck, "committed": store.committed, "lost": lost}))
""",
        str(tmp_path / "events.db"),
    )
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    result = json.loads(out)
    assert result["stuck"]["committed"] < 2000
    assert result["stuck"]["error"]
    assert (result["committed"], result["lost"]) == (2000, 0)


def test_sigkill_loses_at_most_the_batches_not_yet_committed(tmp_path: Path) -> None:
    size = 100
    # The child submits 50 records, says how many it has submitted, and waits for
    # a word to go on: so when it is killed, the parent knows the exact count.
    child = run_child(
        """
store = SQLiteStore(Path(sys.argv[1]), batching=BatchPolicy(size=int(sys.argv[2]), interval=0.05))
store.open()
i = 0
while True:
    for _ in range(50):
        store.submit(record(i))
        i += 1
    time.sleep(0.002)  # a steady load the writer keeps up with, as in production
    print(i, flush=True)
    sys.stdin.readline()
""",
        str(tmp_path / "events.db"),
        str(size),
    )
    assert child.stdout is not None and child.stdin is not None
    submitted = 0
    while True:
        submitted = int(child.stdout.readline())
        if submitted >= 5000:
            break
        child.stdin.write("\n")
        child.stdin.flush()
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    child.stdout.close()
    child.stdin.close()

    with History(tmp_path / "events.db") as history:
        stored = [r for r in history.query() if isinstance(r, EventRecord)]
    # what is stored is a prefix: whole batches, in order
    assert [r.qemu_seconds - 1_780_000_000 for r in stored] == list(range(len(stored)))
    # exactly `submitted` records were handed over: at most two batches are lost
    assert 0 <= submitted - len(stored) <= 2 * size


def test_records_submitted_after_close_are_counted_as_dropped(
    store_factory: Callable[..., SQLiteStore],
) -> None:
    store = store_factory()
    store.open()
    store.close()
    store.submit(event_record("vm", 1))
    assert (store.dropped, store.depth) == (1, 0)

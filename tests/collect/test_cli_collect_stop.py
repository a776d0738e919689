"""``qmpevents collect`` as a process: what it refuses at start, and how it stops.

Every wait is bounded: a collector that retries an unwritable ``--db`` for ever is
killed by the subprocess timeout, and the test fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.collect.conftest import NatsServer
from tests.collect.sources import Source, stored
from tests.collect.test_cli_collect import CollectorProcess, wait_for

COLLECT = [sys.executable, "-c", "from qmpevents.cli import main; main()", "collect"]


@pytest.fixture
def spawn() -> Iterator[Callable[..., CollectorProcess]]:
    """Makes collector processes; any still running after the test (it failed) is killed."""
    made: list[CollectorProcess] = []

    def make(*args: str) -> CollectorProcess:
        made.append(CollectorProcess(*args))
        return made[-1]

    yield make
    for collector in made:
        if collector.process is not None and collector.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(collector.process.pid, signal.SIGKILL)


def refused(db: str, cwd: Path) -> tuple[int, list[str]]:
    result = subprocess.run(
        [*COLLECT, "--db", db, str(cwd / "vm.sock")],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=20,  # a collector that retries for ever fails here
        check=False,
    )
    return result.returncode, result.stderr.splitlines()


@pytest.mark.parametrize(
    ("db", "expected"),
    [
        ("/proc/x.db", "/proc/x.db: cannot write the history database"),
        ("/proc/version", "/proc/version: cannot write the history database"),
        ("regular-file/x.db", "regular-file/x.db: cannot write the history database"),
        ("", "'': an empty path is not a file"),
        ("directory", "'directory' is a directory"),
    ],
)
def test_a_db_that_cannot_be_written_is_refused_at_start(
    tmp_path: Path, db: str, expected: str
) -> None:
    (tmp_path / "regular-file").write_text("not a directory")
    (tmp_path / "directory").mkdir()
    status, lines = refused(db, tmp_path)
    assert status == 2
    assert len(lines) == 1 and expected in lines[0], lines
    if db == "regular-file/x.db":
        assert "regular-file is not a directory" in lines[0]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def received(port: int) -> int:
    """Events the collector received so far, from its /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return 0
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("qmpevents_events_total{")
    )


async def test_an_sqlite_uri_is_a_plain_file_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spawn: Callable[..., CollectorProcess]
) -> None:
    vm = await Source("vm", tmp_path / "vm.sock").start()
    name = "file:ev.db?mode=memory"
    collector = spawn("--db", name, "--batch-interval", "0.02", str(vm.path))
    monkeypatch.chdir(tmp_path)  # the child runs here: the relative --db is resolved here
    await collector.start()
    await wait_for(lambda: any("connected to" in line for line in collector.lines))
    vm.emit(10)
    await wait_for(lambda: (tmp_path / name).exists())
    assert await collector.stop(signal.SIGTERM) == 0
    events, _ = stored(tmp_path / name)  # on disk, under exactly that name
    assert [r.raw for r in events["vm"]] == vm.sent
    await vm.close()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
async def test_a_second_signal_does_not_abort_the_final_flush(
    tmp_path: Path, signum: signal.Signals, spawn: Callable[..., CollectorProcess]
) -> None:
    vm = await Source("vm", tmp_path / "vm.sock").start()
    db, port = tmp_path / "events.db", free_port()
    # nothing is committed before the collector stops: everything waits for the flush
    collector = spawn(
        "--db", str(db), "--batch-interval", "3600", "--metrics", str(port), str(vm.path)
    )
    await collector.start()
    assert collector.process is not None
    await wait_for(lambda: any("connected to" in line for line in collector.lines))
    vm.emit(200)
    await wait_for(lambda: received(port) == 200)
    # Another writer holds the database: the flush has to wait for it.
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    collector.process.send_signal(signum)
    await asyncio.sleep(0.3)  # the collector is stopping now, waiting for the lock
    collector.process.send_signal(signum)  # a second signal, as GNU timeout sends
    await asyncio.sleep(0.3)
    assert collector.process.returncode is None  # still storing
    blocker.execute("ROLLBACK")
    blocker.close()
    status = await asyncio.wait_for(collector.process.wait(), 60)
    assert status == (130 if signum is signal.SIGINT else 0), collector.lines
    events, _ = stored(db)
    assert [r.raw for r in events["vm"]] == vm.sent  # every event, in order
    assert any("already stopping" in line for line in collector.lines)
    await vm.close()


async def test_records_not_stored_make_the_exit_status_1(
    tmp_path: Path, nats_server: NatsServer, spawn: Callable[..., CollectorProcess]
) -> None:
    vm = await Source("vm", tmp_path / "vm.sock").start()
    collector = spawn("--db", str(tmp_path / "events.db"), "--nats", nats_server.url, str(vm.path))
    await collector.start()
    await wait_for(lambda: any("connected to" in line for line in collector.lines))
    vm.emit(5)
    # over NATS's max_payload (1 MiB): stored in SQLite, rejected by NATS
    vm.server.emit("VSERPORT_CHANGE", {"id": "x" * 1_100_000, "open": True})
    await wait_for(lambda: any("nats: rejected" in line for line in collector.lines))
    assert await collector.stop(signal.SIGTERM) == 1
    assert "record(s) not stored (nats: 1)" in collector.lines[-1]
    events, _ = stored(tmp_path / "events.db")
    assert len(events["vm"]) == 6
    await vm.close()


async def test_a_vm_name_with_a_newline_stays_on_one_status_line(
    tmp_path: Path, spawn: Callable[..., CollectorProcess]
) -> None:
    watched = tmp_path / "run"
    watched.mkdir()
    vm = await Source("a\nb", watched / "a\nb.sock").start()
    collector = spawn("--db", str(tmp_path / "e.db"), "--watch-dir", str(watched))
    await collector.start()
    await wait_for(lambda: any("connected to" in line for line in collector.lines))
    await vm.close()  # and a loss line
    await wait_for(lambda: any("connection lost" in line for line in collector.lines))
    assert await collector.stop(signal.SIGTERM) == 0
    status = [line for line in collector.lines if "connected to" in line or "lost" in line]
    assert status and all(line.startswith("a\\nb: ") for line in status), collector.lines
    assert not any(line.startswith(("b:", "b.sock")) for line in collector.lines)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(vm.path)

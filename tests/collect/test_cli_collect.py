"""``qmpevents collect`` as a process: usage errors, SIGKILL and restart, a full disk."""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from qmpevents.cli import main
from qmpevents.collect.collector import NOT_RUNNING
from qmpevents.collect.fanout import COLLECTOR_STOPPED
from tests.collect.conftest import STARTED
from tests.collect.sources import Source, stored


def run_cli(*args: str) -> tuple[int, list[str]]:
    result = CliRunner().invoke(main, ["collect", *args])
    return result.exit_code, result.output.splitlines()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((), "nothing to collect"),
        (("--batch-size", "x", "a.sock"), "'x' is not a valid integer"),
        (("--batch-size", "0", "a.sock"), "--batch-size"),
        (("--batch-interval", "-1", "a.sock"), "--batch-interval"),
        (("--bogus", "a.sock"), "No such option '--bogus'"),
        (("127.0.0.1:0",), "127.0.0.1:0: TCP port must be 1-65535"),
        (("=a.sock",), "expected NAME=TARGET"),
        (("a=/x.sock", "a=/y.sock"), "the name 'a' is used twice"),
        (("--metrics", "nonsense", "a.sock"), "metrics: expected HOST:PORT or PORT"),
        (("--watch-dir", "/nonexistent/qmp"), "--watch-dir /nonexistent/qmp: not a directory"),
        (("--config", "/nonexistent.toml"), "/nonexistent.toml: cannot read"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(args: tuple[str, ...], expected: str) -> None:
    status, lines = run_cli(*args)
    assert status == 2
    assert len(lines) == 1 and expected in lines[0], lines


def test_a_metrics_address_on_the_network_needs_an_opt_in(tmp_path: Path) -> None:
    status, lines = run_cli("--db", str(tmp_path / "e.db"), "--metrics", "0.0.0.0:0", "a.sock")
    assert status == 2
    assert len(lines) == 1 and "reachable from the network" in lines[0]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[collector]\nbatch_size = 'x'\n", "[collector] batch_size: expected int, got str 'x'"),
        ("[collector]\nbatch_size = 0\n", "[collector] batch-size: must be at least 1, got 0"),
        ("[collector]\nbatch-size = 0\n", "[collector] batch-size: must be at least 1, got 0"),
        ("[collector]\nbatch-size = 'x'\n", "[collector] batch-size: expected int, got str 'x'"),
        (
            "[collector]\nbatch-size = 5\nbatch_size = 5\n",
            "[collector] batch_size: given twice (also as batch-size)",
        ),
        ("[collector]\nmetrics_public = 1\n", "[collector] metrics_public: expected bool"),
        ("[collector]\nqueue_size = true\n", "[collector] queue_size: expected int, got bool"),
        ("[collector]\nbogus = 1\n", "[collector] bogus: unknown key (known: backoff, batch-"),
        ("[collectr]\n", "unknown table or key 'collectr'"),
        ("[[vm]]\nname = 'a'\n", "vm[0].target: expected a non-empty string"),
        ("[[vm]]\nname = 'a'\ntarget = 'b'\nport = 1\n", "vm[0].port: unknown key"),
        (
            "[[vm]]\nname = 'a'\ntarget = '/x'\n[[vm]]\nname = 'a'\ntarget = '/y'\n",
            "vm: the name 'a' is used twice",
        ),
        ("[collector\n", "not valid TOML"),
    ],
)
def test_config_file_errors_name_the_file_and_the_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = tmp_path / "collect.toml"
    path.write_text(text)
    status, lines = run_cli("--config", str(path))
    assert status == 2
    assert len(lines) == 1 and f"{path}: " in lines[0] and expected in lines[0], lines


# --- the collector as a process, against QMP servers in this process -------------------


class CollectorProcess:
    """``qmpevents collect ARGS`` in a subprocess; its stderr lines are kept in :attr:`lines`."""

    def __init__(self, *args: str, preexec: Callable[[], None] | None = None) -> None:
        self.args = args
        self.preexec = preexec
        self.lines: list[str] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from qmpevents.cli import main; main()",
            "collect",
            *self.args,
            stderr=asyncio.subprocess.PIPE,
            preexec_fn=self.preexec,
        )
        STARTED.append(self.process)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        async for line in self.process.stderr:
            self.lines.append(line.decode())

    async def stop(self, signum: signal.Signals) -> int:
        assert self.process is not None and self._reader is not None
        self.process.send_signal(signum)
        status = await asyncio.wait_for(self.process.wait(), 30)
        await self._reader
        return status


@contextlib.asynccontextmanager
async def emitting(vms: list[Source], period: float = 0.005) -> AsyncIterator[None]:
    """One event per VM every ``period`` seconds for as long as the block runs."""

    async def emit() -> None:
        while True:
            for vm in vms:
                vm.emit(1)
            await asyncio.sleep(period)

    task = asyncio.create_task(emit())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def committed(db: Path) -> int:
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    except sqlite3.Error:  # not created yet
        return 0


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def qemu_time(raw: bytes) -> float:
    stamp = json.loads(raw)["timestamp"]
    return float(stamp["seconds"] + stamp["microseconds"] / 1e6)


async def test_sigkill_then_restart_loses_only_the_uncommitted_and_records_the_gap(
    tmp_path: Path,
) -> None:
    vms = [await Source(f"vm{i}", tmp_path / f"vm{i}.qmp").start() for i in range(3)]
    db = tmp_path / "events.db"
    args: tuple[str, ...] = ("--db", str(db), "--batch-size", "50", "--batch-interval", "0.1")
    args += tuple(str(vm.path) for vm in vms)
    first = CollectorProcess(*args)
    await first.start()
    await wait_for(lambda: sum("connected to" in line for line in first.lines) == 3)
    async with emitting(vms):
        await wait_for(lambda: committed(db) > 300)
        killed_at = time.time()
        await first.stop(signal.SIGKILL)
        await asyncio.sleep(0.5)  # events of this time are gone for good: QEMU does not replay
        before = committed(db)
        second = CollectorProcess(*args)
        await second.start()
        await wait_for(lambda: committed(db) > before + 300)
    await asyncio.sleep(0.2)
    assert await second.stop(signal.SIGTERM) == 0

    events, gaps = stored(db)
    for vm in vms:
        recorded = {record.raw for record in events[vm.name]}
        present = [line in recorded for line in vm.sent]
        # No hole while connected: a prefix, the outage, then everything to the end.
        a = present.index(False)
        b = a + present[a:].index(True)
        assert all(present[:a]) and not any(present[a:b]) and all(present[b:])
        # The loss is bounded as documented: what was received within one batch
        # interval (plus commit time) of the kill, and what was sent while down.
        assert qemu_time(vm.sent[a]) > killed_at - 1.0
        (not_running,) = (gap for gap in gaps[vm.name] if gap.reason == NOT_RUNNING)
        assert not_running.ended is not None
        # the gap covers every lost event
        assert qemu_time(vm.sent[a - 1]) <= not_running.started <= killed_at
        assert qemu_time(vm.sent[b - 1]) <= not_running.ended
        assert gaps[vm.name][-1].reason == COLLECTOR_STOPPED
        # SIGTERM: everything received was committed (the tail is complete)
        assert present[-1]
    for vm in vms:
        await vm.close()


FSIZE_LIMIT = 256 * 1024


def _limit_file_size() -> None:
    # Only the soft limit: this test raises it again from outside (prlimit).
    resource.setrlimit(
        resource.RLIMIT_FSIZE, (FSIZE_LIMIT, resource.getrlimit(resource.RLIMIT_FSIZE)[1])
    )


async def test_a_full_disk_is_reported_and_the_collector_recovers(tmp_path: Path) -> None:
    vm = await Source("vm0", tmp_path / "vm0.qmp").start()
    db = tmp_path / "events.db"
    collector = CollectorProcess(
        "--db", str(db), "--batch-interval", "0.05", str(vm.path), preexec=_limit_file_size
    )
    await collector.start()
    assert collector.process is not None
    await wait_for(lambda: any("connected to" in line for line in collector.lines))
    async with emitting([vm], period=0.001):
        await wait_for(lambda: any("cannot write" in line for line in collector.lines))
    error = next(line for line in collector.lines if "cannot write" in line)
    assert "retrying" in error and ("full" in error or "too large" in error.lower()), error
    assert collector.process.returncode is None  # still running, still connected
    vm.emit(100)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    resource.prlimit(collector.process.pid, resource.RLIMIT_FSIZE, (hard, hard))
    await wait_for(lambda: committed(db) == len(vm.sent), timeout=40)
    assert await collector.stop(signal.SIGTERM) == 0
    events, _ = stored(db)
    assert sorted(r.raw for r in events["vm0"]) == sorted(vm.sent)
    assert any("writing again" in line for line in collector.lines)
    await vm.close()


def test_collect_refuses_a_database_it_could_never_write(tmp_path: Path) -> None:
    garbage, foreign = tmp_path / "g.bin", tmp_path / "f.db"
    garbage.write_bytes(bytes(range(256)) * 8)
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE events (x)")
    for path in (garbage, foreign):
        result = CliRunner().invoke(main, ["collect", "--db", str(path), str(tmp_path / "x.sock")])
        assert result.exit_code == 2, result.output
        assert "not a qmpevents history database" in result.output


def test_tcp_port_out_of_range_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["collect", "--db", "/tmp/unused.db", "a=127.0.0.1:70000"])
    assert result.exit_code == 2 and "TCP port must be 1-65535" in result.output
    result = CliRunner().invoke(main, ["watch", "127.0.0.1:65537"])
    assert result.exit_code == 2 and "TCP port must be 1-65535" in result.output


async def test_collect_says_where_it_stores_and_serves(tmp_path: Path) -> None:
    vm = await Source("vm0", tmp_path / "vm0.qmp").start()
    db = tmp_path / "events.db"
    collector = CollectorProcess(
        "--db", str(db), "--metrics", "127.0.0.1:0", "--http", "127.0.0.1:0", str(vm.path)
    )
    await collector.start()
    await wait_for(lambda: any("timeline on" in line for line in collector.lines))
    lines = list(collector.lines)
    assert f"qmpevents collect: storing into {db}\n" in lines
    metrics = next(line for line in lines if "metrics on" in line)
    timeline = next(line for line in lines if "timeline on" in line)
    # The bound ports, not the 0 that was asked for.
    assert metrics.startswith("qmpevents collect: metrics on http://127.0.0.1:")
    assert not metrics.rstrip().endswith(":0/metrics")
    assert not timeline.rstrip().endswith(":0/")
    assert await collector.stop(signal.SIGTERM) == 0

"""500 VMs into one collector: events/s into SQLite and into NATS, memory per VM.

Run: ``python benchmarks/bench_collect.py [vms] [events_per_vm]`` (default 500, 200).
One helper process serves ``vms`` QMP servers (``QMPServer``, unix sockets) in a
directory; ``qmpevents collect --watch-dir`` attaches them all. Each run:

1. the collector with an empty directory: its RSS is the baseline;
2. all servers appear: RSS once every VM is connected, minus the baseline, per VM;
3. every server sends ``events_per_vm`` events as fast as it can (a burst): the time
   from the first event until all are committed to SQLite (and, in the NATS run,
   read back from the SQLite journal by the outbox and acknowledged by JetStream,
   i.e. in the stream) gives the sustained rate.

The source's own rate is printed next to it: a collector rate close to it means the
source, not the collector, was the limit. Needs ``nats-server`` for the NATS run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats

SOURCE = """
import asyncio, sys
from qmpevents.server.server import QMPServer

async def main(directory, count):
    servers = [QMPServer() for _ in range(count)]
    for i, server in enumerate(servers):
        await server.listen_unix(f"{directory}/vm{i:03d}.qmp")
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        per_vm = int(line)
        start = time.perf_counter()
        for k in range(1, per_vm + 1):
            for server in servers:
                server.emit("MIGRATION_PASS", {"pass": k})
            await asyncio.sleep(0)  # let the transports write
        print(f"{time.perf_counter() - start}", flush=True)

import time
asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""

COLLECT = "from qmpevents.cli import main; main()"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition``; return when it became true (perf_counter)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout} s")
        time.sleep(0.01)
    return time.perf_counter()


def connected(metrics_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics") as response:
            text = response.read().decode()
    except OSError:
        return 0
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("qmpevents_vm_connected{")
    )


def committed(db: Path) -> int:
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
    except sqlite3.Error:
        return 0


@contextlib.contextmanager
def nats_server(workdir: Path) -> Iterator[str | None]:
    binary = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if binary is None:
        yield None
        return
    port = free_port()
    process = subprocess.Popen(
        [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(workdir / "js")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: _listening(port), 10, "nats-server")
        yield f"nats://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


def stream_messages(url: str) -> int:
    async def count() -> int:
        nc = await nats.connect(url)
        try:
            info = await nc.jetstream().stream_info("QMP_EVENTS")
            return int(info.state.messages)
        finally:
            await nc.close()

    try:
        return asyncio.run(count())
    except Exception:  # the stream may not exist yet; polled again
        return -1


@dataclass
class Result:
    sink: str
    rss_base_mib: float
    per_vm_kib: float
    rss_after_mib: float
    source_rate: float
    rate: float


def run(vms: int, per_vm: int, nats_url: str | None, workdir: Path) -> Result:
    watched = workdir / "run"
    watched.mkdir(parents=True)
    db = workdir / "events.db"
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    args = ["--watch-dir", str(watched), "--watch-interval", "0.2", "--db", str(db)]
    args += ["--metrics", f"127.0.0.1:{port}", "-q"]
    if nats_url:
        args += ["--nats", nats_url]
    collector = subprocess.Popen([sys.executable, "-c", COLLECT, "collect", *args], env=env)
    source: subprocess.Popen[str] | None = None
    try:
        wait_until(lambda: connected(port) == 0 and _listening(port), 15, "collector start")
        time.sleep(1.0)
        base = rss_kib(collector.pid)
        source = subprocess.Popen(
            [sys.executable, "-c", SOURCE, str(watched), str(vms)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert source.stdin is not None and source.stdout is not None
        assert source.stdout.readline().strip() == "ready"
        wait_until(lambda: connected(port) == vms, 30, "all VMs connected")
        time.sleep(0.5)
        attached = rss_kib(collector.pid)
        before_nats = stream_messages(nats_url) if nats_url else 0
        total = vms * per_vm
        start = time.perf_counter()
        source.stdin.write(f"{per_vm}\n")
        source.stdin.flush()
        source_seconds = float(source.stdout.readline())
        if nats_url:
            done = wait_until(
                lambda: stream_messages(nats_url) >= before_nats + total, 60, "NATS acks"
            )
        else:
            done = wait_until(lambda: committed(db) >= total, 60, "SQLite commits")
        after = rss_kib(collector.pid)
    finally:
        collector.terminate()
        collector.wait(30)
        if source is not None:
            source.kill()
            source.wait()
    return Result(
        sink="SQLite journal + NATS outbox, until acknowledged" if nats_url else "SQLite",
        rss_base_mib=base / 1024,
        per_vm_kib=(attached - base) / vms,
        rss_after_mib=after / 1024,
        source_rate=total / source_seconds,
        rate=total / (done - start),
    )


def main() -> None:
    vms = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    per_vm = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(run(vms, per_vm, None, Path(tmp) / "sqlite"))
        with nats_server(Path(tmp)) as url:
            if url is None:
                print("nats-server not installed: NATS run skipped")
            else:
                results.append(run(vms, per_vm, url, Path(tmp) / "nats"))
    print(f"{vms} VMs x {per_vm} events (burst) into one collector process")
    header = ("sink", "events/s", "source ev/s", "RSS 0 VMs", f"per VM ({vms})", "RSS after")
    width = max(len(r.sink) for r in results) + 2
    print(
        f"{header[0]:<{width}}{header[1]:>10}{header[2]:>13}{header[3]:>11}{header[4]:>14}"
        f"{header[5]:>11}"
    )
    for r in results:
        print(
            f"{r.sink:<{width}}{r.rate:>10,.0f}{r.source_rate:>13,.0f}{r.rss_base_mib:>8.1f} MiB"
            f"{r.per_vm_kib:>10.1f} KiB{r.rss_after_mib:>7.1f} MiB"
        )


if __name__ == "__main__":
    main()

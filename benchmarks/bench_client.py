"""Receiving QMP events over a unix socket: our client against qemu.qmp and raw loops.

Run: ``python benchmarks/bench_client.py [n]`` (default 200000). A server thread
in this process greets, answers ``qmp_capabilities`` and blasts the same stream of
mixed seed events (QEMU's bytes) at each contestant; every contestant runs in its
own subprocess, so that each peak RSS is its own. Prints events/s (delivered
events only), drops, peak RSS and the ratio to our client, then our default
listener at 1M events to show that it loses nothing and memory does not grow.
A row with drops is flagged: its rate is not comparable.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

try:
    from qmpevents.protocol.encoding import encode_event
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from qmpevents.protocol.encoding import encode_event

GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
    b'"package": "bench"}, "capabilities": ["oob"]}}\r\n'
)
CONTESTANTS = ("qmpevents", "qmpevents/drop", "qemu.qmp", "asyncio+json", "socket+orjson")
# Every contestant gets this long; qemu.qmp never ends its event iterator on EOF.
RUN_TIMEOUT = 90


def seed_stream(n: int) -> bytes:
    """``n`` events cycling through the seven seed events with varying members."""
    makers: list[Callable[[int], tuple[str, dict[str, object]]]] = [
        lambda i: (
            "DUMP_COMPLETED",
            {"result": {"status": "completed", "completed": i, "total": i}},
        ),
        lambda i: ("GUEST_PANICKED", {"action": "pause"}),
        lambda i: ("MEM_UNPLUG_ERROR", {"device": f"dimm{i % 8}", "msg": "rejected by guest"}),
        lambda i: ("QUORUM_FAILURE", {"reference": "qM", "sector-num": i, "sectors-count": 1}),
        lambda i: (
            "QUORUM_REPORT_BAD",
            {"type": "read", "node-name": "qM-c2", "sector-num": i, "sectors-count": 8},
        ),
        lambda i: ("MIGRATION_PASS", {"pass": i}),
        lambda i: ("VSERPORT_CHANGE", {"id": f"vs{i % 4}", "open": bool(i & 1)}),
    ]
    return b"".join(_event(makers[i % len(makers)], i) for i in range(n))


def _event(maker: Callable[[int], tuple[str, dict[str, object]]], i: int) -> bytes:
    name, data = maker(i)
    return encode_event(name, 1795799056 + i // 1000, i % 1000 * 1000, data)


def serve(listener: socket.socket, stream: bytes, repeat: int) -> None:
    """Serve one client at a time: greeting, negotiation reply, then the stream."""
    while True:
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        with conn:
            conn.sendall(GREETING)
            request = _read_request(conn)
            reply = {"return": {}, "id": request["id"]} if "id" in request else {"return": {}}
            conn.sendall(json.dumps(reply).encode() + b"\r\n")
            for _ in range(repeat):
                conn.sendall(stream)


def _read_request(conn: socket.socket) -> dict[str, object]:
    # qemu.qmp sends its request without a newline: parse as soon as it is whole.
    buffer = b""
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("client left during negotiation")
        buffer += chunk
        try:
            request: dict[str, object] = json.loads(buffer)
        except ValueError:
            continue
        return request


# -- contestants (each runs in a child process) ----------------------------------------


async def run_qmpevents(path: str, n: int, policy: str = "block") -> tuple[int, int]:
    """(delivered, dropped): the default ``events()``, or a drop-oldest listener."""
    from qmpevents.client import Dropped, QMPClient
    from qmpevents.errors import ConnectionLost

    count = dropped = 0
    qmp = QMPClient(path)
    # The default events() is what a user gets (maxsize 1000, pushing back); a
    # drop-oldest queue must hold a whole read (~2000 events per 256 KiB).
    listener = qmp.events() if policy == "block" else qmp.events(maxsize=8192, policy="drop-oldest")
    async with qmp:
        try:
            async for item in listener:
                if isinstance(item, Dropped):
                    dropped += item.count
                    if count + dropped >= n:
                        break
                    continue
                count += 1
                if count + dropped >= n:
                    break
        except ConnectionLost:
            pass
    return count, dropped


async def run_qemu_qmp(path: str, n: int) -> int:
    from qemu.qmp import QMPClient

    qmp = QMPClient("bench")
    await qmp.connect(path)
    count = 0
    async for _event in qmp.events:
        count += 1
        if count == n:
            break
    # qemu.qmp re-raises the server's close from its reader task.
    with contextlib.suppress(EOFError):
        await qmp.disconnect()
    return count


async def run_asyncio_json(path: str, n: int) -> int:
    import asyncio

    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 20)
    await reader.readline()
    writer.write(b'{"execute": "qmp_capabilities", "id": 1}\n')
    await reader.readline()
    count = 0
    while count < n:
        line = await reader.readline()
        if not line:
            break
        if "event" in json.loads(line):
            count += 1
    writer.close()
    return count


def run_socket_orjson(path: str, n: int) -> int:
    import orjson

    sock = socket.socket(socket.AF_UNIX)
    sock.connect(path)
    buffer = b""
    sock.sendall(b'{"execute": "qmp_capabilities", "id": 1}\n')
    count = -2  # the greeting and the negotiation reply come first
    while count < n:
        chunk = sock.recv(1 << 18)
        if not chunk:
            break
        lines = (buffer + chunk).split(b"\n")
        buffer = lines.pop()
        for line in lines:
            orjson.loads(line)
            count += 1
    sock.close()
    return count


def peak_rss_kb() -> int:
    """This process's peak RSS. Not ru_maxrss: Linux carries that over fork and exec,
    so every child would report at least its parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


IMPORTS = {
    "qmpevents": "qmpevents.client",
    "qmpevents/drop": "qmpevents.client",
    "qemu.qmp": "qemu.qmp",
    "asyncio+json": "asyncio",
    "socket+orjson": "orjson",
}


def child(name: str, path: str, n: int) -> None:
    """Receive ``n`` events with contestant ``name``; print one JSON result line."""
    import asyncio

    # Import what the contestant needs before the clock starts: the benchmark
    # measures receiving, not interpreter start-up (ours imports in ~0.1 s).
    importlib.import_module(IMPORTS[name])
    rss_before = peak_rss_kb()
    start = time.perf_counter()
    dropped = 0
    if name == "socket+orjson":
        count = run_socket_orjson(path, n)
    elif name.startswith("qmpevents"):
        policy = "drop-oldest" if name == "qmpevents/drop" else "block"
        count, dropped = asyncio.run(run_qmpevents(path, n, policy))
    else:
        runner = {"qemu.qmp": run_qemu_qmp, "asyncio+json": run_asyncio_json}[name]
        count = asyncio.run(runner(path, n))
    elapsed = time.perf_counter() - start
    rss = peak_rss_kb()
    print(
        json.dumps(
            {
                "count": count,
                "dropped": dropped,
                "seconds": elapsed,
                "rss_kb": rss,
                "base_kb": rss_before,
            }
        )
    )


# -- the parent ------------------------------------------------------------------------


def measure(name: str, path: str, n: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", name, path, str(n)],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
        check=True,
    )
    measured: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return measured


def bench(n: int, names: tuple[str, ...], repeat: int = 1) -> dict[str, dict[str, float]]:
    stream = seed_stream(n // repeat)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "qmp.sock")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen(1)
        thread = threading.Thread(target=serve, args=(listener, stream, repeat), daemon=True)
        thread.start()
        try:
            return {name: measure(name, path, n) for name in names}
        finally:
            listener.close()


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    results = bench(n, CONTESTANTS)
    ours = _rate(results["qmpevents"])
    print(f"{n} mixed seed events over a unix socket, each client in its own process")
    print("(events/s counts delivered events only; a row with drops is flagged !)\n")
    print(f"{'client':<16}{'events/s':>12}{'dropped':>10}{'peak RSS':>12}{'vs ours':>10}")
    for name, r in results.items():
        rate = _rate(r)
        flag = " !" if r.get("dropped") else ""
        print(
            f"{name:<16}{rate:>12,.0f}{int(r.get('dropped', 0)):>10,}"
            f"{r['rss_kb'] / 1024:>9.1f} MB{rate / ours:>9.2f}x{flag}"
        )
    print(
        f"\nqmpevents / qemu.qmp: {ours / _rate(results['qemu.qmp']):.1f}x;"
        f" qmpevents / socket+orjson: {ours / _rate(results['socket+orjson']):.2f}x"
    )
    big = 1_000_000
    r = bench(big, ("qmpevents",), repeat=big // n)["qmpevents"]
    print(
        f"\nqmpevents default events() at {big:,} events: {_rate(r):,.0f} events/s,"
        f" {int(r['count']):,} delivered, {int(r['dropped']):,} dropped, peak RSS"
        f" {r['rss_kb'] / 1024:.1f} MB (at {n:,}: {results['qmpevents']['rss_kb'] / 1024:.1f} MB)"
    )


def _rate(result: dict[str, float]) -> float:
    return result["count"] / result["seconds"]


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()

"""Events/s a QMPServer delivers to 1, 10 and 100 clients, and its memory with a stalled one.

Run: ``python benchmarks/bench_server.py [events]``. The server runs in a child
process (one core); the clients are raw asyncio protocols in this process that
only count lines. The server emits MIGRATION_PASS events (encoded, through the
rate limiter, written to every negotiated client), pausing whenever more than
1 MiB per client is unread, so the figure is a sustained rate, not a burst into
buffers. The anchor, measured in the same run, is ``encode_event`` alone in one
process: the ratio says how much of the ceiling the server's fan-out keeps.

The memory case serves 10 reading clients and one that never reads, with the
default 4 MiB output limit: the server's RSS and peak RSS (VmHWM) are reported,
and the stalled client must see its connection closed (EOF, not a timeout).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from qmpevents.protocol.encoding import encode_event
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from qmpevents.protocol.encoding import encode_event

SRC = Path(__file__).resolve().parent.parent / "src"

# The child: a server with two benchmark commands. "x-burst" emits `count`
# events, paced on unread output; "x-rss" reports the process's resident memory.
_SERVER = """
import asyncio, sys
import msgspec
from qmpevents.server.server import QMPServer

class Burst(msgspec.Struct):
    count: int

def rss(args, ctx):
    found = {}
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                found[line[2:5].lower()] = int(line.split()[1]) * 1024
    return found

async def burst(args, ctx):
    server = ctx.server
    for start in range(0, args.count, 500):
        for n in range(start, min(start + 500, args.count)):
            server.emit("MIGRATION_PASS", {"pass": n})
        while server.pending_output() > (1 << 20) * max(1, server.connections):
            await asyncio.sleep(0.0005)
        await asyncio.sleep(0)
    return {}

async def main():
    server = QMPServer()
    server.register("x-burst", burst, Burst)
    server.register("x-rss", rss)
    await server.listen_unix(sys.argv[1], multi_client=True)
    print("ready", flush=True)
    await server.wait_closed()

asyncio.run(main())
"""


class Counter(asyncio.Protocol):
    """A client that negotiates, then only counts lines."""

    def __init__(self) -> None:
        self.lines = 0
        self.target = 0
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.lines += data.count(b"\n")
        if self.target and self.lines >= self.target and not self.done.done():
            self.done.set_result(None)

    def expect(self, lines: int) -> asyncio.Future[None]:
        """Resolve once ``lines`` more lines have arrived."""
        self.done = asyncio.get_running_loop().create_future()
        self.target = self.lines + lines
        if self.lines >= self.target:
            self.done.set_result(None)
        return self.done


class Control:
    """A plain client for the benchmark commands."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def execute(self, command: str, **arguments: object) -> object:
        request = {"execute": command, "arguments": arguments}
        self.writer.write(json.dumps(request).encode() + b"\n")
        while True:
            message = json.loads(await self.reader.readline())
            if "return" in message:
                return message["return"]
            if "error" in message:
                raise RuntimeError(message["error"])


async def _control(path: str) -> Control:
    reader, writer = await asyncio.open_unix_connection(path)
    await reader.readline()
    control = Control(reader, writer)
    await control.execute("qmp_capabilities")
    return control


async def _counters(path: str, n: int) -> list[Counter]:
    loop = asyncio.get_running_loop()
    counters = []
    for _ in range(n):
        _, counter = await loop.create_unix_connection(Counter, path)
        await counter.expect(1)  # the greeting
        assert counter.transport is not None
        counter.transport.write(b'{"execute": "qmp_capabilities"}\n')
        await counter.expect(1)
        counters.append(counter)
    return counters


async def _fan_out(path: str, clients: int, events: int) -> float:
    """Deliveries per second (events x clients) for one burst."""
    control = await _control(path)
    counters = await _counters(path, clients)
    waits = [counter.expect(events) for counter in counters]
    start = time.perf_counter()
    await control.execute("x-burst", count=events)
    await asyncio.gather(*waits)
    elapsed = time.perf_counter() - start
    for counter in counters:
        assert counter.transport is not None
        counter.transport.close()
    control.writer.close()
    return events * clients / elapsed


async def _stalled_memory(path: str, events: int) -> tuple[dict[str, int], dict[str, int], int]:
    """(server memory before, after, bytes the stalled client got before EOF)."""
    control = await _control(path)
    counters = await _counters(path, 10)
    stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stalled.connect(path)
    stalled.sendall(b'{"execute": "qmp_capabilities"}\n')
    await asyncio.sleep(0.1)
    before = await control.execute("x-rss")
    waits = [counter.expect(events) for counter in counters]
    await control.execute("x-burst", count=events)
    await asyncio.gather(*waits)
    after = await control.execute("x-rss")
    stalled.settimeout(5)
    received = 0
    try:
        while data := stalled.recv(1 << 20):
            received += len(data)
    except TimeoutError:
        raise SystemExit("the stalled client was never disconnected: output unbounded") from None
    finally:
        stalled.close()
        control.writer.close()
    assert isinstance(before, dict) and isinstance(after, dict)
    return before, after, received


def _anchor(events: int) -> float:
    """encode_event alone: the ceiling of one core for the encoding step."""
    start = time.perf_counter()
    for n in range(events):
        encode_event("MIGRATION_PASS", 1795799376, 443371, {"pass": n})
    return events / (time.perf_counter() - start)


async def _run(events: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "qmp.sock")
        env = dict(os.environ, PYTHONPATH=str(SRC))
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _SERVER, path, stdout=subprocess.PIPE, env=env
        )
        assert child.stdout is not None
        await child.stdout.readline()
        try:
            anchor = _anchor(events)
            print(f"anchor: encode_event alone       {anchor:>12,.0f} events/s")
            print(f"{'clients':>7} {'events/s emitted':>17} {'deliveries/s':>13} {'vs anchor':>9}")
            for clients in (1, 10, 100):
                count = events if clients < 100 else events // 4
                rate = await _fan_out(path, clients, count)
                emitted = rate / clients
                print(f"{clients:>7} {emitted:>17,.0f} {rate:>13,.0f} {emitted / anchor:>9.2f}")
            before, after, received = await _stalled_memory(path, events * 2)
            print(
                f"memory, 10 readers + 1 stalled, {events * 2:,} events: "
                f"RSS {before['rss'] / 2**20:.1f} -> {after['rss'] / 2**20:.1f} MiB, "
                f"peak (VmHWM) {after['hwm'] / 2**20:.1f} MiB; the stalled client was"
                f" disconnected (EOF) after {received / 1024:.0f} KiB"
            )
        finally:
            child.terminate()
            await child.wait()


def main() -> None:
    """Print the table; ``argv[1]`` is the events per burst (default 50000)."""
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    asyncio.run(_run(events))


if __name__ == "__main__":
    main()

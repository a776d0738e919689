"""A stress run of the QMP server: random input, slow and non-reading clients, churn.

``run(path, scale)`` drives a server already listening on ``path`` (multi-client)
from this process, all at once:

- ``40 * scale`` clients each send ``500`` random inputs (mutated QMP), fresh
  connections, reading every reply;
- ``20 * scale`` slowloris clients trickle a request one byte at a time;
- ``5 * scale`` clients negotiate and never read, while events are broadcast;
- ``500 * scale`` connect-and-hang-up cycles.

It returns counts; the caller checks the server for tracebacks, RSS and that it
still answers. ``tests/server/test_stress.py`` runs scale 1 in CI, ``make
stress`` a larger one.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass

from tests.qemu.fuzz import SEEDS, mutate

PER_CLIENT = 500
TIMEOUT = 30.0


@dataclass
class Counts:
    inputs: int = 0
    replies: int = 0
    slow: int = 0
    stalled: int = 0
    churn: int = 0


async def _random_client(path: str, seed: int, counts: Counts) -> None:
    rng = random.Random(seed)
    reader, writer = await asyncio.open_unix_connection(path, limit=1 << 27)
    try:
        await reader.readline()
        writer.write(b'{"execute": "qmp_capabilities"}\n')
        await reader.readline()
        for n in range(PER_CLIENT):
            data = mutate(rng, rng.choice(SEEDS))
            writer.write(data + b'\n\x1b\n{"execute": "x-end", "id": "e%d"}\n' % n)
            counts.inputs += 1
            marker = b'"e%d"' % n
            while True:
                line = await reader.readline()
                if not line:
                    return  # the server may hang up on a client (an output limit)
                counts.replies += 1
                if marker in line:
                    break
    finally:
        writer.close()


async def _slowloris(path: str, counts: Counts) -> None:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        await reader.readline()
        for byte in b'{"execute": "qmp_capabilities", "id": "slow"}\n':
            writer.write(bytes([byte]))
            await asyncio.sleep(0.005)
        await reader.readline()
        counts.slow += 1
    finally:
        writer.close()


async def _stalled(path: str, counts: Counts, release: asyncio.Event) -> None:
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        await reader.readline()
        writer.write(b'{"execute": "qmp_capabilities"}\n')
        counts.stalled += 1
        await release.wait()  # never reads: the server must cut it off at its limit
    finally:
        writer.close()


async def _churn(path: str, times: int, counts: Counts) -> None:
    for _ in range(times):
        _, writer = await asyncio.open_unix_connection(path)
        writer.close()
        counts.churn += 1
        await asyncio.sleep(0)


async def run(path: str, scale: int, emit: Callable[[int], None]) -> Counts:
    """Everything at once; ``emit(n)`` broadcasts ``n`` events from the server."""
    counts = Counts()
    release = asyncio.Event()
    stalled = [asyncio.create_task(_stalled(path, counts, release)) for _ in range(5 * scale)]
    async with asyncio.timeout(TIMEOUT * scale):
        await asyncio.gather(
            *(_random_client(path, seed, counts) for seed in range(40 * scale)),
            *(_slowloris(path, counts) for _ in range(20 * scale)),
            _churn(path, 500 * scale, counts),
            _broadcast(emit, 200 * scale),
        )
    release.set()
    await asyncio.gather(*stalled, return_exceptions=True)
    return counts


async def _broadcast(emit: Callable[[int], None], rounds: int) -> None:
    for _ in range(rounds):
        emit(100)
        await asyncio.sleep(0.001)


def main() -> None:
    """``python -m tests.server.stress [--scale N]``: the long run of ``make stress``."""
    import argparse
    import logging
    import resource
    import tempfile
    import time
    from pathlib import Path

    from qmpevents.server import QMPServer

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--scale", type=int, default=10)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # warnings (disconnects) are expected

    async def go() -> None:
        with tempfile.TemporaryDirectory() as directory:
            path = str(Path(directory) / "q.sock")
            server = QMPServer(output_limit=1 << 20)
            await server.listen_unix(path, multi_client=True)
            counter = iter(range(1, 1 << 62))

            def emit(n: int) -> None:
                for _ in range(n):
                    server.emit("MIGRATION_PASS", {"pass": next(counter)})

            start = time.monotonic()
            counts = await run(path, args.scale, emit)
            await server.close()
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(f"{counts} in {time.monotonic() - start:.1f} s; peak RSS {peak:.0f} MiB")

    asyncio.run(go())


if __name__ == "__main__":
    main()

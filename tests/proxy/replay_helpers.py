"""Helpers for the replay tests: targets to record from and replay against, and the sessions."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from tests.proxy.conftest import TIMEOUT, Raw, running_proxy
from tests.qemu.conftest import BASE_ARGS, _wait_for_socket
from tests.sim.programs import SIM

QMPEVENTS = str(Path(sys.executable).with_name("qmpevents"))
VSERPORT_ARGS = ("-device", "virtio-serial-pci", "-device", "virtserialport,id=vs0")


@contextmanager
def _reaped(process: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(5)
        assert process.stderr is not None
        process.stderr.close()


@asynccontextmanager
async def target(command: tuple[str, ...], sock: Path, *extra: str) -> AsyncIterator[Path]:
    """A QEMU-like program (real QEMU or ``SIM``) with one QMP socket, killed at the end."""
    argv = [*command, *BASE_ARGS, *extra, "-qmp", f"unix:{sock},server=on,wait=off"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with _reaped(process):
        await _wait_for_socket(sock, process)
        yield sock


def sim_target(sock: Path, *extra: str) -> Any:
    """The simulator with the tests' QEMU command line."""
    return target(SIM, sock, *extra)


async def record(
    upstream: Path, tmp_path: Path, session: Callable[[Raw], Awaitable[None]], name: str = "rec"
) -> Path:
    """Run ``session`` through ``qmpevents proxy --record``; the recording's path."""
    path = tmp_path / f"{name}.jsonl"
    listen = tmp_path / f"{name}-proxy.sock"
    async with running_proxy(upstream, listen, record=str(path)):
        client = await Raw.connect(listen)
        await session(client)
        client.close()
    return path


async def standard_session(client: Raw) -> None:
    """query-status, cont and stop with their events, an argument error, query-version."""
    await client.ask(b'{"execute": "query-status", "id": "s1"}')
    await client.ask(b'{"execute": "cont", "id": 2}')
    await client.ask(b'{"execute": "stop", "id": 3}')
    await client.ask(b'{"execute": "stop", "arguments": {"now": true}, "id": 4}')
    await client.ask(b'{"execute": "query-version", "id": {"v": [5]}}')
    # two requests in one write: pipelined, as the replay must send them
    await client.send(b'{"execute": "query-status", "id": 6}\n{"execute": "query-name"}\n')
    await client.replies(2)


async def vserport_session(client: Raw) -> None:
    """A burst of VSERPORT_CHANGE: the first goes out, the last is held ~1 s by the limiter."""
    burst = b"".join(
        b'{"execute": "x-sim-vserport", "arguments": {"id": "vs0", "open": %s}, "id": %d}\n'
        % (state, n)
        for n, state in enumerate((b"true", b"false", b"true"))
    )
    await client.send(burst)
    lines = [await client.line() for _ in range(4)]  # 3 replies and the first event
    assert sum(line.startswith(b'{"timestamp"') for line in lines) == 1, lines
    await client.event("VSERPORT_CHANGE")  # the one the rate limiter held back
    await client.ask(b'{"execute": "query-status", "id": "after"}')


def run_replay(
    recording: Path, against: Path | str, *options: str
) -> subprocess.CompletedProcess[str]:
    """``qmpevents replay`` as a user runs it (bounded)."""
    argv = [QMPEVENTS, "replay", str(recording), "--against", str(against), *options]
    return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT * 6, check=False)


def read_records(path: Path) -> list[dict[str, Any]]:
    """The recording's lines as objects."""
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_records(path: Path, records: list[dict[str, Any]]) -> Path:
    """Write ``records`` as a recording at ``path``."""
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path

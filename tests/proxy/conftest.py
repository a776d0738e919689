"""Fixtures for the proxy tests: real QEMU with two QMP sockets, the proxy, raw clients.

QEMU serves one client per ``-qmp`` socket, so each VM here has two: one for
the proxy (``upstream``) and one the test talks to directly (``direct``), to
compare what the proxy relays with what QEMU itself says. Without
``qemu-system-x86_64`` the QEMU tests are skipped, unless
``QMPEVENTS_REQUIRE_QEMU=1``, which makes them fail (tests/qemu/conftest.py).
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from qmpevents.addresses import parse_address
from qmpevents.proxy import Proxy, ProxyConfig
from tests.qemu.conftest import BASE_ARGS, _wait_for_socket, qemu_binary

__all__ = ["qemu_binary"]

TIMEOUT = 10.0


@dataclass
class QEMU:
    """One running QEMU: the socket for the proxy and one to compare with."""

    process: subprocess.Popen[bytes]
    upstream: Path
    direct: Path


StartQEMU = Callable[..., AbstractAsyncContextManager[QEMU]]


@pytest.fixture
def start_qemu(qemu_binary: str, tmp_path: Path) -> Iterator[StartQEMU]:
    """``async with start_qemu(name=...) as vm``: a paused QEMU (``-S``), killed at the end."""
    processes: list[subprocess.Popen[bytes]] = []

    @asynccontextmanager
    async def start(name: str = "vm") -> AsyncIterator[QEMU]:
        upstream, direct = tmp_path / f"{name}.sock", tmp_path / f"{name}-direct.sock"
        argv = [
            qemu_binary,
            *BASE_ARGS,
            "-qmp",
            f"unix:{upstream},server=on,wait=off",
            "-qmp",
            f"unix:{direct},server=on,wait=off",
        ]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        processes.append(process)
        await _wait_for_socket(upstream, process)
        await _wait_for_socket(direct, process)
        yield QEMU(process, upstream, direct)

    yield start
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(5)
        assert process.stderr is not None
        process.stderr.close()


@asynccontextmanager
async def running_proxy(upstream: Path | str, listen: Path, **options: Any) -> AsyncIterator[Proxy]:
    """A :class:`Proxy` in this event loop, closed at the end."""
    proxy = Proxy(ProxyConfig(parse_address(str(upstream)), unix=[str(listen)], **options))
    await asyncio.wait_for(proxy.start(), TIMEOUT)
    try:
        yield proxy
    finally:
        await asyncio.wait_for(proxy.close(), TIMEOUT)


class Raw:
    """A bare client on asyncio streams that sees the exact bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.greeting = b""

    @classmethod
    async def connect(cls, path: Path | str, *, negotiate: bool = True) -> Raw:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path), limit=1 << 24), TIMEOUT
        )
        client = cls(reader, writer)
        client.greeting = await client.line()
        if negotiate:
            assert await client.ask(b'{"execute": "qmp_capabilities"}') == b'{"return": {}}\r\n'
        return client

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def line(self, timeout: float = TIMEOUT) -> bytes:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        assert line, "EOF"
        return line

    async def ask(self, request: bytes) -> bytes:
        """Send one request; its reply (events before it are skipped)."""
        await self.send(request + b"\n")
        while True:
            line = await self.line()
            if not line.startswith(b'{"timestamp"'):
                return line

    async def replies(self, n: int) -> list[bytes]:
        """The next ``n`` lines that are not events."""
        found: list[bytes] = []
        while len(found) < n:
            line = await self.line()
            if not line.startswith(b'{"timestamp"'):
                found.append(line)
        return found

    async def event(self, name: str) -> bytes:
        """The next event called ``name`` (other lines skipped)."""
        needle = f'"event": "{name}"'.encode()
        while True:
            line = await self.line()
            if line.startswith(b'{"timestamp"') and needle in line:
                return line

    async def eof(self, timeout: float = TIMEOUT) -> bytes:
        """Everything until EOF (fails after ``timeout``)."""
        return await asyncio.wait_for(self.reader.read(), timeout)

    def close(self) -> None:
        self.writer.close()


async def until(condition: Callable[[], bool], timeout: float = TIMEOUT) -> None:
    """Wait, bounded, until ``condition()`` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)

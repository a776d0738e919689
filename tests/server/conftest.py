"""Fixtures for the asyncio server tests: servers on unix sockets and raw clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from qmpevents.server.server import QMPServer

TIMEOUT = 5.0


class RawClient:
    """A bare QMP client over asyncio streams that sees the exact bytes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, path: str, *, greeting: bool = True) -> RawClient:
        reader, writer = await asyncio.open_unix_connection(path, limit=1 << 24)
        client = cls(reader, writer)
        if greeting:
            await client.line()
        return client

    async def send(self, data: bytes | str) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)
        await self.writer.drain()

    async def line(self, timeout: float = TIMEOUT) -> bytes:
        line = await asyncio.wait_for(self.reader.readline(), timeout)
        if not line:
            raise EOFError("connection closed")
        return line

    async def message(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(await self.line(timeout))
        return value

    async def silent(self, seconds: float) -> bool:
        """True when nothing (no byte, no EOF) arrives within ``seconds``."""
        try:
            await asyncio.wait_for(self.reader.read(1), seconds)
        except TimeoutError:
            return True
        return False

    async def execute(self, command: str, **arguments: Any) -> dict[str, Any]:
        """Run ``command``; returns the reply, skipping events."""
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        await self.send(json.dumps(request) + "\n")
        while True:
            message = await self.message()
            if "event" not in message:
                return message

    async def negotiate(self) -> None:
        assert await self.execute("qmp_capabilities") == {"return": {}}

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@pytest.fixture
def sock_path(tmp_path: Path) -> str:
    path = str(tmp_path / "q.sock")
    assert len(path) < 100, "unix socket paths are limited to 108 bytes"
    return path


@pytest.fixture
async def make_server(sock_path: str) -> AsyncIterator[Callable[..., Any]]:
    """``await make_server(**kwargs)`` -> (server, path), closed after the test."""
    servers: list[QMPServer] = []

    async def make(*, path: str = sock_path, multi_client: bool = True, **kwargs: Any) -> Any:
        server = QMPServer(**kwargs)
        servers.append(server)
        await server.listen_unix(path, multi_client=multi_client)
        return server, path

    yield make
    for server in servers:
        await server.close()


@pytest.fixture
async def clients() -> AsyncIterator[list[RawClient]]:
    """A list to put RawClients in; all are closed after the test."""
    opened: list[RawClient] = []
    yield opened
    for client in opened:
        await client.close()

"""Descriptors passed to a monitor over its unix socket (SCM_RIGHTS), with QEMU's rules."""

from __future__ import annotations

import array
import asyncio
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from qmpevents.server.commands import CommandContext
from qmpevents.server.fdpass import MAX_FDS, MonitorFds, descriptors
from qmpevents.server.server import QMPServer


def is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


class Client:
    """A blocking QMP client that can send descriptors with a request."""

    def __init__(self, path: str | Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rb")
        self.file.readline()
        self.request(b'{"execute": "qmp_capabilities"}')

    def request(self, line: bytes, fds: list[int] | None = None) -> bytes:
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.sock.sendmsg([line + b"\n"], ancillary)
        return self.file.readline()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


async def serve(server: QMPServer, client: Any) -> Any:
    try:
        return await asyncio.to_thread(client)
    finally:
        await server.close()


def test_descriptors_reads_scm_rights_only() -> None:
    payload = array.array("i", [7, 9]).tobytes()
    assert descriptors([(socket.SOL_SOCKET, socket.SCM_RIGHTS, payload + b"\0\0")]) == [7, 9]
    assert descriptors([(socket.SOL_SOCKET, socket.SCM_CREDENTIALS, payload)]) == []


def test_monitor_fds_keep_only_the_last_read() -> None:
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(4)]
    named: dict[str, int] = {}
    held = MonitorFds(named)
    held.receive(fds[:2])
    held.receive(fds[2:])  # a read with descriptors replaces those held
    assert not is_open(fds[0]) and not is_open(fds[1])
    assert held.take_received() == fds[2]
    assert not is_open(fds[3])  # the others of that read are closed
    assert held.take_received() is None
    held.set_named("a", fds[2])
    other = os.open(os.devnull, os.O_RDONLY)
    held.set_named("a", other)  # the name moves; the old descriptor closes
    assert not is_open(fds[2]) and named == {"a": other}
    assert held.close_named("a") and not is_open(other)
    assert not held.close_named("a")


async def test_getfd_like_command_receives_the_descriptor(tmp_path: Path) -> None:
    server = QMPServer()
    taken: list[int | None] = []

    def take(_: object, ctx: CommandContext) -> dict[str, Any]:
        assert ctx.fds is not None
        fd = ctx.fds.take_received()
        taken.append(fd)
        if fd is not None:
            os.write(fd, b"written by the server")
            ctx.fds.set_named("out", fd)
        return {}

    server.register("x-take", take)
    path = await server.listen_unix(str(tmp_path / "qmp.sock"))

    def client() -> bytes:
        read_end, write_end = os.pipe()
        first = Client(path)
        assert first.request(b'{"execute": "x-take"}', [write_end]) == b'{"return": {}}\r\n'
        os.close(write_end)
        assert first.request(b'{"execute": "x-take"}') == b'{"return": {}}\r\n'
        first.close()
        # The name belongs to the monitor: a later client finds it.
        second = Client(path)
        second.request(b'{"execute": "x-take"}')
        second.close()
        return os.read(read_end, 100)

    data = await serve(server, client)
    assert data == b"written by the server"
    assert taken[0] is not None and taken[1:] == [None, None]


async def test_unclaimed_descriptors_close_with_the_connection(tmp_path: Path) -> None:
    server = QMPServer()
    path = await server.listen_unix(str(tmp_path / "qmp.sock"))
    read_end, write_end = os.pipe()

    def client() -> None:
        connection = Client(path)
        connection.request(b'{"execute": "query-status"}', [write_end])
        connection.close()

    await asyncio.to_thread(client)
    os.close(write_end)
    await asyncio.sleep(0.1)
    await server.close()
    # Every copy of the write end is closed: the pipe reads end-of-file.
    assert os.read(read_end, 1) == b""


async def test_inherited_listening_socket(tmp_path: Path) -> None:
    path = tmp_path / "passed.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    server = QMPServer()
    seen: list[bool] = []

    def has_fd(_: object, ctx: CommandContext) -> dict[str, Any]:
        assert ctx.fds is not None
        fd = ctx.fds.take_received()
        seen.append(fd is not None)
        if fd is not None:
            os.close(fd)
        return {}

    server.register("x-has-fd", has_fd)
    address = await server.listen_fd(sock.detach())
    assert address == f"unix:{path}"

    def client() -> None:
        connection = Client(path)
        with open(os.devnull) as null:
            connection.request(b'{"execute": "x-has-fd"}', [null.fileno()] * MAX_FDS)
        connection.close()

    await serve(server, client)
    assert seen == [True]
    assert not path.exists()  # removed on close, as QEMU removes it


async def test_tcp_monitors_get_no_descriptors() -> None:
    server = QMPServer()
    seen: list[object] = []
    server.register("x-has-fd", lambda _, ctx: seen.append(ctx.fds.take_received()) or {})
    host, port = await server.listen_tcp()

    def client() -> bytes:
        with socket.create_connection((host, port), timeout=10) as sock:
            file = sock.makefile("rwb")
            file.readline()
            file.write(b'{"execute": "qmp_capabilities"}\n{"execute": "x-has-fd"}\n')
            file.flush()
            file.readline()
            return file.readline()

    assert await serve(server, client) == b'{"return": {}}\r\n'
    assert seen == [None]


def test_not_a_socket_is_refused() -> None:
    async def run() -> None:
        server = QMPServer()
        with open(os.devnull) as null, pytest.raises(Exception, match="not a socket"):
            await server.listen_fd(os.dup(null.fileno()))
        await server.close()

    asyncio.run(run())

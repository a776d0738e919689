"""Listening sockets: unix file handling, TCP binding rules, one client per socket."""

from __future__ import annotations

import asyncio
import os
import socket
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from qmpevents.errors import ConfigError
from qmpevents.server.server import QMPServer
from tests.server.conftest import RawClient


async def test_unix_socket_is_private_and_removed_on_close(sock_path: str) -> None:
    async with QMPServer() as server:
        assert await server.listen_unix(sock_path) == sock_path
        mode = os.stat(sock_path).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert not os.path.exists(sock_path)
    await server.close()  # idempotent
    assert await server.wait_closed() == 0


async def test_stale_socket_is_replaced(sock_path: str) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(sock_path)
    dead.close()  # the file stays, nobody listens
    server = QMPServer()
    try:
        await server.listen_unix(sock_path)
        client = await RawClient.connect(sock_path)
        await client.close()
    finally:
        await server.close()


async def test_live_socket_is_an_error_naming_the_path(sock_path: str) -> None:
    first = QMPServer()
    second = QMPServer()
    await first.listen_unix(sock_path)
    try:
        with pytest.raises(ConfigError, match=sock_path):
            await second.listen_unix(sock_path)
        assert os.path.exists(sock_path)
    finally:
        await first.close()
        await second.close()


async def test_regular_file_is_not_replaced(tmp_path: Path) -> None:
    path = tmp_path / "not-a-socket"
    path.write_text("keep me")
    server = QMPServer()
    with pytest.raises(ConfigError, match="not a socket"):
        await server.listen_unix(str(path))
    assert path.read_text() == "keep me"


async def test_socket_replaced_by_someone_else_is_left_alone(sock_path: str) -> None:
    server = QMPServer()
    await server.listen_unix(sock_path)
    os.unlink(sock_path)
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    other.bind(sock_path)
    try:
        await server.close()
        assert os.path.exists(sock_path)
    finally:
        other.close()


async def test_tcp_loopback_and_remote_opt_in() -> None:
    server = QMPServer()
    try:
        host, port = await server.listen_tcp()
        assert host == "127.0.0.1" and port > 0
        reader, writer = await asyncio.open_connection(host, port)
        assert b'"QMP"' in await asyncio.wait_for(reader.readline(), 5)
        writer.close()
        with pytest.raises(ConfigError, match="loopback"):
            await server.listen_tcp("0.0.0.0")
        assert (await server.listen_tcp("0.0.0.0", allow_remote=True))[1] > 0
    finally:
        await server.close()
    with pytest.raises(ConfigError, match="closed"):
        await server.listen_tcp()


async def test_second_client_waits_for_the_first(sock_path: str) -> None:
    server = QMPServer()
    await server.listen_unix(sock_path)
    try:
        first = await RawClient.connect(sock_path)
        second = await RawClient.connect(sock_path, greeting=False)
        third = await RawClient.connect(sock_path, greeting=False)
        await second.send(b'{"execute": "qmp_capabilities"}\n')
        assert await second.silent(0.3)  # no greeting, and not read either
        await third.close()  # leaves while waiting
        await first.close()
        assert b'"QMP"' in await second.line()
        assert await second.message() == {"return": {}}  # what it sent while waiting
        await second.close()
    finally:
        await server.close()


async def test_multi_client_serves_everyone_at_once(sock_path: str) -> None:
    server = QMPServer()
    await server.listen_unix(sock_path, multi_client=True)
    try:
        clients = [await RawClient.connect(sock_path) for _ in range(3)]
        for client in clients:
            await client.negotiate()
        server.emit("STOP")
        for client in clients:
            assert (await client.message())["event"] == "STOP"
            await client.close()
    finally:
        await server.close()


async def test_several_listeners_share_events(tmp_path: Path) -> None:
    server = QMPServer()
    paths = [await server.listen_unix(str(tmp_path / f"qmp{n}.sock")) for n in range(2)]
    tcp = await server.listen_tcp()
    try:
        clients = [await RawClient.connect(path) for path in paths]
        reader, writer = await asyncio.open_connection(*tcp)
        clients.append(RawClient(reader, writer))
        await clients[-1].line()
        for client in clients:
            await client.negotiate()
        server.emit("RESUME")
        for client in clients:
            assert (await client.message())["event"] == "RESUME"
            await client.close()
    finally:
        await server.close()
    assert not any(os.path.exists(path) for path in paths)


def test_running_out_of_descriptors_is_logged_once_not_per_accept(tmp_path: Path) -> None:
    """In a child with a low RLIMIT_NOFILE: hundreds of connects, one log line."""
    script = textwrap.dedent(
        """
        import asyncio, io, logging, os, resource, socket, sys
        from qmpevents.server import QMPServer
        buf = io.StringIO()
        logging.basicConfig(stream=buf, level=logging.WARNING)
        async def main():
            resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))
            server = QMPServer()
            await server.listen_unix(sys.argv[1], multi_client=True)
            socks = []
            for _ in range(200):
                try:
                    s = socket.socket(socket.AF_UNIX)
                    s.setblocking(False)
                    s.connect(sys.argv[1])
                except OSError:
                    break
                socks.append(s)
                await asyncio.sleep(0)
            await asyncio.sleep(1.5)
            await server.close()
        asyncio.run(main())
        print(buf.getvalue())
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "q.sock")],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert result.stdout.count("cannot accept new QMP connections") == 1, result.stdout[:2000]
    assert "Traceback" not in result.stdout + result.stderr


async def test_listen_errors_name_the_path_or_the_address(tmp_path: Path) -> None:
    server = QMPServer()
    missing = tmp_path / "no-such-dir" / "q.sock"
    with pytest.raises(ConfigError, match=r"no-such-dir/q\.sock: cannot listen: no such file"):
        await server.listen_unix(str(missing))
    held = socket.socket()
    held.bind(("127.0.0.1", 0))
    held.listen()
    port = held.getsockname()[1]
    try:
        with pytest.raises(ConfigError, match=f"127.0.0.1:{port}: cannot listen: address already"):
            await server.listen_tcp("127.0.0.1", port)
    finally:
        held.close()
        await server.close()

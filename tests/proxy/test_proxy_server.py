"""The proxy in front of our own QMPServer: output limit, recording, TCP, and its parts."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qmpevents.addresses import parse_address
from qmpevents.errors import ConfigError
from qmpevents.protocol.requests import Request
from qmpevents.proxy import Proxy, ProxyConfig
from qmpevents.proxy.ids import IdMap
from qmpevents.proxy.messages import forward_request, read_upstream_line, relabel
from qmpevents.server import QMPServer
from tests.proxy.conftest import TIMEOUT, Raw, running_proxy, until

QMPEVENTS = str(Path(sys.executable).with_name("qmpevents"))


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[tuple[QMPServer, Path]]:
    server = QMPServer()
    path = tmp_path / "up.sock"
    await server.listen_unix(str(path))
    yield server, path
    await asyncio.wait_for(server.close(), TIMEOUT)


async def test_a_client_that_stops_reading_is_cut_off(
    upstream: tuple[QMPServer, Path], tmp_path: Path
) -> None:
    server, path = upstream
    sock = tmp_path / "p.sock"
    limit = 256 << 10
    async with running_proxy(path, sock, output_limit=limit) as proxy:
        reader = await Raw.connect(sock)
        stalled = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stalled.connect(str(sock))
        stalled.sendall(b'{"execute": "qmp_capabilities"}\n')  # then never reads
        await until(lambda: proxy.negotiated_clients == 2)
        sent = 0
        # Far more than the limit and the kernel's buffers hold, in batches the reader keeps up
        # with: the stalled client must be gone long before the end.
        while sent < 200_000 and proxy.clients > 1:
            for n in range(sent, sent + 500):
                server.emit("MIGRATION_PASS", {"pass": n})
            for n in range(sent, sent + 500):
                line = await reader.line()
                assert json.loads(line)["data"] == {"pass": n}
            sent += 500
        assert proxy.clients == 1, "the stalled client was never disconnected"
        # The others keep receiving, every event, in order.
        server.emit("MIGRATION_PASS", {"pass": -1})
        assert json.loads(await reader.line())["data"] == {"pass": -1}
        stalled.settimeout(TIMEOUT)
        received = 0
        try:
            while data := stalled.recv(1 << 20):
                received += len(data)
        except ConnectionResetError:
            pass
        finally:
            stalled.close()
        # What it got is bounded by the limit plus what the kernel buffered.
        assert received < limit + (4 << 20)
        reader.close()


async def test_record_every_message(upstream: tuple[QMPServer, Path], tmp_path: Path) -> None:
    server, path = upstream
    sock = tmp_path / "p.sock"
    record = tmp_path / "record.jsonl"
    async with running_proxy(path, sock, record=str(record)):
        client = await Raw.connect(sock)
        reply = await client.ask(b'{"execute": "query-status", "id": "x"}')
        server.emit("MIGRATION_PASS", {"pass": 1})
        event = await client.event("MIGRATION_PASS")
        await client.send(b"\xff\n")
        error = await client.line()
        client.close()
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    seen = {(entry["dir"], entry.get("data") or entry.get("data_b64")) for entry in lines}
    assert ("up->proxy", client.greeting.decode()) in seen
    assert ("proxy->down", client.greeting.decode()) in seen
    assert ("down->proxy", '{"execute": "query-status", "id": "x"}\n') in seen
    assert ("proxy->down", reply.decode()) in seen
    assert ("proxy->down", error.decode()) in seen
    assert ("down->proxy", base64.b64encode(b"\xff\n").decode()) in seen
    forwarded = [e for e in lines if e["dir"] == "proxy->up"]
    assert any(e["data"].startswith('{"execute": "query-status", "id": ') for e in forwarded)
    assert [e["dir"] for e in lines if e.get("data") == event.decode()] == ["up->proxy"]
    assert all(isinstance(e["time"], float) for e in lines)
    assert {e["client"] for e in lines} >= {"upstream", f"unix:{sock}#1"}


async def test_tcp_is_loopback_only_unless_allowed(
    upstream: tuple[QMPServer, Path],
) -> None:
    _, path = upstream
    refused = Proxy(ProxyConfig(parse_address(str(path)), tcp=[("0.0.0.0", 0)]))
    with pytest.raises(ConfigError, match="not a loopback address"):
        await refused.start()
    proxy = Proxy(ProxyConfig(parse_address(str(path)), tcp=[("127.0.0.1", 0)]))
    (address,) = await proxy.start()
    try:
        host, port = address.rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        greeting = await asyncio.wait_for(reader.readline(), TIMEOUT)
        assert greeting.startswith(b'{"QMP": ')
        writer.close()
    finally:
        await proxy.close()


def test_cli_refuses_a_public_tcp_address(tmp_path: Path) -> None:
    done = subprocess.run(
        [QMPEVENTS, "proxy", str(tmp_path / "up.sock"), "--tcp", "0.0.0.0:4444"],
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert b"not a loopback address" in done.stderr
    assert b"--tcp-public" in done.stderr


def test_cli_unreachable_upstream_is_a_usage_error(tmp_path: Path) -> None:
    done = subprocess.run(
        [QMPEVENTS, "proxy", str(tmp_path / "none.sock"), "--listen", str(tmp_path / "p.sock")],
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert not (tmp_path / "p.sock").exists()
    assert f"upstream {tmp_path / 'none.sock'}: cannot connect:".encode() in done.stderr


def test_id_map_forgets_a_client() -> None:
    ids: IdMap[str] = IdMap()
    a1 = ids.add("a", 1, True, False)
    b1 = ids.add("b", 1, True, False)
    a2 = ids.add("a", None, False, False)
    assert len({a1, b1, a2}) == 3
    assert ids.waiting("a") == 2
    assert ids.forget_client("a") == 2
    assert ids.pop(a1) is None
    pending = ids.pop(b1)
    assert pending is not None and (pending.client, pending.id) == ("b", 1)
    assert len(ids) == 0 and ids.waiting("b") == 0


def test_forwarded_request_keeps_the_clients_member_order() -> None:
    request = Request("x", {"b": 1, "a": {"z": [1.5, "é"], "y": None}}, id="mine", has_id=True)
    assert forward_request(request, 42) == (
        b'{"execute": "x", "arguments": {"b": 1, "a": {"z": [1.5, "\\u00E9"], "y": null}},'
        b' "id": 42}\n'
    )
    assert forward_request(Request("y", oob=True), 1) == b'{"exec-oob": "y", "id": 1}\n'


def test_relabel_keeps_the_value_and_writes_the_clients_id() -> None:
    reply = read_upstream_line(b'{"return": {"b": 1,  "a": 2}, "id": 42}\r\n')
    assert reply is not None and reply.id == 42
    assert relabel(reply, "a", True) == b'{"return": {"b": 1,  "a": 2}, "id": "a"}\r\n'
    assert relabel(reply, None, False) == b'{"return": {"b": 1,  "a": 2}}\r\n'
    error = read_upstream_line(b'{"id": 3, "error": {"class": "GenericError", "desc": "x"}}\r\n')
    assert error is not None
    assert relabel(error, {"x": [1]}, True) == (
        b'{"id": {"x": [1]}, "error": {"class": "GenericError", "desc": "x"}}\r\n'
    )
    assert read_upstream_line(b'{"timestamp": {}, "event": "STOP"}') is None

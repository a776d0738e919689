"""The reference protocol transcript of real QEMU 7.2, replayed against our server.

Every client line of protocol.json is sent as its exact bytes to the monitor it
went to (A and C on the first socket, B on the second); every line QEMU sent is
compared byte for byte, event timestamps aside. Events therefore reach only the
negotiated monitor (B would otherwise read an event where the transcript has
its qmp_capabilities reply), the busy socket keeps C waiting for its greeting
until A closes, and quit ends every connection.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

from qmpevents.protocol.requests import DEVICE_NOT_FOUND, GENERIC_ERROR
from qmpevents.protocol.server_session import GreetingInfo
from qmpevents.server.commands import CommandContext, QMPCommandFailure
from qmpevents.server.server import QMPServer
from tests.helpers import load_transcript, raw_bytes
from tests.server.conftest import RawClient

PACKAGE = "Debian 1:7.2+dfsg-7+deb12u18+b3"
_TIMESTAMP = re.compile(rb'"seconds": \d+, "microseconds": \d+')
_PACKAGE = re.compile(rb'"package": "[^"]*"')


class DeviceDelArgs(msgspec.Struct):
    id: str


class BlockdevDelArgs(msgspec.Struct):
    node_name: str = msgspec.field(name="node-name")


class HumanMonitorCommandArgs(msgspec.Struct, kw_only=True):
    command_line: str = msgspec.field(name="command-line")
    cpu_index: int | None = msgspec.field(name="cpu-index", default=None)


def _device_del(args: DeviceDelArgs, ctx: CommandContext) -> None:
    raise QMPCommandFailure(DEVICE_NOT_FOUND, f"Device '{args.id}' not found")


async def _blockdev_del(args: BlockdevDelArgs, ctx: CommandContext) -> None:
    raise QMPCommandFailure(GENERIC_ERROR, f"Failed to find node with node-name='{args.node_name}'")


def _human_monitor_command(args: HumanMonitorCommandArgs, ctx: CommandContext) -> str:
    return ""


def _migrate_pause(args: object, ctx: CommandContext) -> None:
    raise QMPCommandFailure(
        GENERIC_ERROR, "migrate-pause is currently only supported during postcopy-active state"
    )


def _query_name(args: object, ctx: CommandContext) -> dict[str, Any]:
    return {}  # no -name given: NameInfo without its optional member


def reference_server() -> QMPServer:
    """A server set up like the QEMU of protocol.json (-S, Debian's package string)."""
    server = QMPServer(GreetingInfo(package=PACKAGE), start_paused=True)
    server.register("device_del", _device_del, DeviceDelArgs)
    server.register("blockdev-del", _blockdev_del, BlockdevDelArgs)
    server.register("human-monitor-command", _human_monitor_command, HumanMonitorCommandArgs)
    server.register("migrate-pause", _migrate_pause, allow_oob=True)
    server.register("query-name", _query_name)
    return server


def _normalize(line: bytes) -> bytes:
    return _TIMESTAMP.sub(b'"seconds": S, "microseconds": U', line)


def _referenced_types(entry: dict[str, Any]) -> list[str]:
    names = [entry[key] for key in ("arg-type", "ret-type", "element-type") if key in entry]
    names += [m["type"] for m in entry.get("members", []) if "type" in m]
    names += [v["type"] for v in entry.get("variants", [])]
    return [name.strip("[]") for name in names]


def _check_schema(server: QMPServer, ours: bytes, qemus: bytes) -> None:
    """Our schema lists exactly what is registered, and every type it names exists."""
    entries = json.loads(ours)["return"]
    by_name = {entry["name"]: entry for entry in entries}
    assert len(by_name) == len(entries)
    commands = {e["name"] for e in entries if e["meta-type"] == "command"}
    assert commands == {spec.name for spec in server.commands}
    assert {e["name"] for e in entries if e["meta-type"] == "event"} == set(server.events)
    for entry in entries:
        for name in _referenced_types(entry):
            assert name in by_name, f"{entry['name']} refers to missing type {name}"
    # The first command of both is query-status, so its entry is QEMU's, byte for byte.
    assert ours.split(b"}, ")[0] == qemus.split(b"}, ")[0]
    vserport = by_name[by_name["VSERPORT_CHANGE"]["arg-type"]]
    assert [m["name"] for m in vserport["members"]] == ["id", "open"]


async def replay_protocol(
    server: QMPServer, paths: dict[str, str], *, any_package: bool = False
) -> int:
    """Replay protocol.json against ``server`` listening on ``paths`` (conn -> socket).

    Returns how many server lines were compared. ``any_package`` accepts any
    package string (greeting, query-version): a server that does not pretend to be Debian's.
    """
    lines = load_transcript("protocol")["lines"]
    conns: dict[str, RawClient] = {}
    compared = 0
    done: set[int] = set()
    try:
        for index, line in enumerate(lines):
            if index in done:
                continue
            conn, direction = line["conn"], line["dir"]
            if direction == "connect":
                conns[conn] = await RawClient.connect(paths[conn], greeting=False)
            elif direction == "send":
                await conns[conn].send(raw_bytes(line))
            elif direction == "recv":
                following = lines[index + 1] if index + 1 < len(lines) else None
                if following and following["dir"] == "close" and following["conn"] != conn:
                    # The busy socket: C hears nothing until A has closed.
                    assert await conns[conn].silent(0.3)
                    await conns[following["conn"]].close()
                    done.add(index + 1)
                got = await conns[conn].line()
                expected = raw_bytes(line)
                if line["kind"] == "return" and b'"meta-type"' in expected:
                    _check_schema(server, got, expected)
                else:
                    if any_package:  # the greeting and query-version
                        got, expected = _PACKAGE.sub(b"", got), _PACKAGE.sub(b"", expected)
                    assert _normalize(got) == _normalize(expected), f"seq {line['seq']}"
                compared += 1
            elif direction in ("eof", "error"):
                # After quit QEMU's close was a clean EOF or a reset; ours is an EOF.
                assert await conns[conn].reader.read() == b""
            elif direction == "close":
                await conns[conn].close()
        assert compared == sum(1 for line in lines if line["dir"] == "recv")
        assert await server.wait_closed() == 0
        assert not any(Path(path).exists() for path in paths.values())
    finally:
        for client in conns.values():
            await client.close()
        await server.close()
    return compared


async def test_protocol_transcript_replayed_byte_for_byte(tmp_path: Path) -> None:
    server = reference_server()
    paths = {"A": str(tmp_path / "qmp0.sock"), "B": str(tmp_path / "qmp1.sock")}
    paths["C"] = paths["A"]
    await server.listen_unix(paths["A"])
    await server.listen_unix(paths["B"])
    assert await replay_protocol(server, paths) > 1000


async def test_reference_event_timestamps_are_wall_clock(tmp_path: Path) -> None:
    server = reference_server()
    path = await server.listen_unix(str(tmp_path / "q.sock"))
    client = await RawClient.connect(path)
    try:
        await client.negotiate()
        before = time.time()
        await client.send(b'{"execute": "cont"}\n')
        event = await client.message()
        after = time.time()
        stamp = event["timestamp"]["seconds"] + event["timestamp"]["microseconds"] / 1e6
        assert event["event"] == "RESUME"
        assert before - 1e-6 <= stamp <= after
        assert await client.message() == {"return": {}}
    finally:
        await client.close()
        await server.close()


@pytest.mark.parametrize("depth", [1100])
async def test_deep_nesting_gives_qemus_1027_replies(tmp_path: Path, depth: int) -> None:
    server = reference_server()
    path = await server.listen_unix(str(tmp_path / "q.sock"))
    client = await RawClient.connect(path)
    try:
        await client.negotiate()
        await client.send(b"[" * depth + b"]" * depth + b"\n")
        replies = [await client.line() for _ in range(1027)]
        assert b"nesting depth limit" in replies[0]
        assert b"must be a JSON object" in replies[1]
        assert all(b"expecting value" in reply for reply in replies[2:])
        assert await client.execute("query-status") == {
            "return": {"status": "prelaunch", "singlestep": False, "running": False}
        }
    finally:
        await client.close()
        await server.close()

"""QMPServer: built-in commands, many clients, quit, close and signals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from qmpevents.errors import ConfigError
from qmpevents.server.commands import CommandContext
from qmpevents.server.server import QMPServer, default_greeting
from tests.helpers import REPO
from tests.server.conftest import RawClient


async def test_greeting_and_query_version_bytes(
    make_server: Callable[..., Any], clients: list[RawClient]
) -> None:
    _, path = await make_server()
    client = await RawClient.connect(path, greeting=False)
    clients.append(client)
    package = default_greeting().package
    assert package.startswith("qmpevents ")
    assert await client.line() == (
        b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
        b'"package": "%s"}, "capabilities": ["oob"]}}\r\n' % package.encode()
    )
    await client.negotiate()
    await client.send(b'{"execute": "query-version", "id": "qv"}\n')
    assert await client.line() == (
        b'{"return": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
        b'"package": "%s"}, "id": "qv"}\r\n' % package.encode()
    )


async def test_stop_cont_reset_follow_qemu(
    make_server: Callable[..., Any], clients: list[RawClient]
) -> None:
    server, path = await make_server(start_paused=True)
    client = await RawClient.connect(path)
    clients.append(client)
    await client.negotiate()

    async def run(command: str) -> list[bytes]:
        await client.send(b'{"execute": "%s"}\n' % command.encode())
        lines = [await client.line()]
        while b'"return"' not in lines[-1] and b'"error"' not in lines[-1]:
            lines.append(await client.line())
        return lines

    def events(lines: list[bytes]) -> list[str]:
        return [msgspec.json.decode(line)["event"] for line in lines[:-1]]

    assert events(await run("stop")) == []  # prelaunch is not running: no STOP
    assert events(await run("cont")) == ["RESUME"]
    assert events(await run("cont")) == []
    assert events(await run("stop")) == ["STOP"]
    reset = await run("system_reset")
    assert b'"data": {"guest": false, "reason": "host-qmp-system-reset"}' in reset[0]
    assert events(reset) == ["RESET"] and reset[-1] == b'{"return": {}}\r\n'
    assert server.vm.status == "prelaunch"
    server.vm.status = "shutdown"
    assert await run("cont") == [
        b'{"error": {"class": "GenericError", '
        b'"desc": "Resetting the Virtual Machine is required"}}\r\n'
    ]


async def test_query_commands_lists_what_is_registered(
    make_server: Callable[..., Any], clients: list[RawClient]
) -> None:
    server, path = await make_server()
    server.register("x-custom", lambda args, ctx: {})
    with pytest.raises(ConfigError):
        server.register("x-custom", lambda args, ctx: {})
    client = await RawClient.connect(path)
    clients.append(client)
    await client.negotiate()
    names = [entry["name"] for entry in (await client.execute("query-commands"))["return"]]
    assert names == [
        "x-custom",
        "cont",
        "stop",
        "system_reset",
        "query-qmp-schema",
        "quit",
        "query-commands",
        "query-version",
        "qmp_capabilities",
        "query-status",
    ]
    schema = (await client.execute("query-qmp-schema"))["return"]
    entries = {entry["name"]: entry for entry in schema}
    assert set(names) <= set(entries)
    assert entries["MEM_UNPLUG_ERROR"]["features"] == ["deprecated"]
    assert entries["qmp_capabilities"]["arg-type"] != entries["query-status"]["arg-type"]


async def test_quit_shuts_down_every_monitor(
    make_server: Callable[..., Any], clients: list[RawClient]
) -> None:
    server, path = await make_server()
    quitter, other = await RawClient.connect(path), await RawClient.connect(path)
    greeted = await RawClient.connect(path)
    clients += [quitter, other, greeted]
    await quitter.negotiate()
    await other.negotiate()
    await quitter.send(b'{"execute": "quit", "id": "bye"}\n')
    shutdown = await quitter.message()
    assert shutdown["event"] == "SHUTDOWN"
    assert shutdown["data"] == {"guest": False, "reason": "host-qmp-quit"}
    assert await quitter.line() == b'{"return": {}, "id": "bye"}\r\n'
    assert (await other.message())["event"] == "SHUTDOWN"
    for client in (quitter, other, greeted):
        assert await client.reader.read() == b""
    assert await asyncio.wait_for(server.wait_closed(), 5) == 0
    assert not os.path.exists(path)


async def test_two_hundred_clients_receive_a_broadcast(
    make_server: Callable[..., Any], clients: list[RawClient]
) -> None:
    server, path = await make_server(multi_client=True)
    many = await asyncio.gather(*(RawClient.connect(path) for _ in range(200)))
    clients.extend(many)
    await asyncio.gather(*(client.negotiate() for client in many))
    assert server.connections == 200
    server.emit("VSERPORT_CHANGE", {"id": "vs0", "open": True})
    events = await asyncio.gather(*(client.message() for client in many))
    assert {msgspec.json.encode(event) for event in events} == {msgspec.json.encode(events[0])}
    assert events[0]["data"] == {"open": True, "id": "vs0"}


async def test_handler_can_close_the_server_with_a_status(
    make_server: Callable[..., Any], clients: list[RawClient]
) -> None:
    server, path = await make_server()

    def panic(args: object, ctx: CommandContext) -> dict[str, Any]:
        ctx.after_reply(lambda: ctx.server.request_close(1))
        return {}

    server.register("x-exit-failure", panic)
    client = await RawClient.connect(path)
    clients.append(client)
    await client.negotiate()
    assert await client.execute("x-exit-failure") == {"return": {}}
    assert await asyncio.wait_for(server.wait_closed(), 5) == 1


async def test_bad_output_limit_is_refused() -> None:
    with pytest.raises(ConfigError):
        QMPServer(output_limit=0)


SERVE = textwrap.dedent(
    """
    import asyncio, sys
    from qmpevents.server.server import QMPServer, install_signal_handlers

    async def main():
        server = QMPServer()
        await server.listen_unix(sys.argv[1], multi_client=True)
        install_signal_handlers(server)
        print("ready", flush=True)
        return await server.wait_closed()

    sys.exit(asyncio.run(main()))
    """
)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
async def test_signal_closes_gracefully(tmp_path: Path, signum: int) -> None:
    path = str(tmp_path / "q.sock")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVE,
        path,
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 10) == b"ready\n"
    connected = [await RawClient.connect(path) for _ in range(3)]
    await connected[0].negotiate()
    process.send_signal(signum)
    assert await asyncio.wait_for(process.wait(), 10) == 0
    assert not os.path.exists(path)
    # As from QEMU 7.2: the negotiated client hears why, the others only the close.
    shutdown = json.loads(await connected[0].reader.readline())
    assert shutdown["event"] == "SHUTDOWN"
    assert shutdown["data"] == {"guest": False, "reason": "host-signal"}
    for client in connected:
        assert await client.reader.read() == b""
        await client.close()


async def test_ids_qemu_echoes_however_deep_or_long(
    make_server: Callable[..., Any], clients: list[RawClient]
) -> None:
    """Measured on QEMU 7.2: a 1000-deep id is echoed and the next request still
    answered; an integer of 4301 digits is a double, echoed as ``inf``."""
    _, path = await make_server()
    client = await RawClient.connect(path)
    clients.append(client)
    await client.negotiate()
    deep = b"[" * 1000 + b"]" * 1000
    await client.send(
        b'{"execute": "query-status", "id": ' + deep + b'}\n{"execute": "query-status", "id": 2}\n'
    )
    first = await client.line()
    assert first.endswith(b'"id": ' + deep + b"}\r\n")
    assert (await client.line()).endswith(b'"id": 2}\r\n')
    await client.send(b'{"execute": "query-status", "id": ' + b"1" * 4301 + b"}\n")
    assert (await client.line()).endswith(b'"id": inf}\r\n')


async def test_close_awaits_the_tasks_it_cancels(make_server: Callable[..., Any]) -> None:
    server, _ = await make_server()
    cleaned: list[str] = []

    async def work() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0)  # cleanup that needs the loop once more
            cleaned.append("done")

    server.spawn(work(), "worker")
    await asyncio.sleep(0)
    await server.close()
    assert cleaned == ["done"]

"""ListenSource against fake QEMUs that connect to it: naming, markers, the socket, bad peers."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from qmpevents.client import Gap
from qmpevents.errors import ConfigError
from qmpevents.protocol.encoding import encode_event
from qmpevents.schema.events import Event
from qmpevents.sources import Connected, Disconnected, ListenSource, SourceItem, VMSource
from qmpevents.sources.peers import name_from_argv, pid_name

STEP = 5.0  # bound on every wait
GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""},'
    b' "capabilities": ["oob"]}}\r\n'
)


class FakeQEMU:
    """A QMP server that connects to a listener, as QEMU's ``-chardev socket,...`` does."""

    def __init__(self, path: Path, name: str | None = None) -> None:
        self.path = path
        self.name = name
        self.writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None

    async def connect(self) -> FakeQEMU:
        reader, writer = await asyncio.open_unix_connection(self.path)
        self.writer = writer
        writer.write(GREETING)
        self._task = asyncio.create_task(self._serve(reader, writer))
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            request: dict[str, Any] = msgspec.json.decode(line)
            command = request.get("execute")
            value: Any = {}
            if command == "query-name":
                value = {"name": self.name} if self.name else {}
            elif command == "query-status":
                value = {"status": "paused", "singlestep": False, "running": False}
            writer.write(msgspec.json.encode({"return": value, "id": request["id"]}) + b"\r\n")

    def emit(self, name: str, seconds: int = 1_780_000_000) -> None:
        assert self.writer is not None
        self.writer.write(encode_event(name, seconds, 0, None))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.writer is not None:
            self.writer.close()


async def next_vm(source: AsyncIterator[VMSource]) -> VMSource:
    return await asyncio.wait_for(anext(source), STEP)


async def next_item(items: AsyncIterator[SourceItem]) -> SourceItem:
    return await asyncio.wait_for(anext(items), STEP)


def test_the_vm_name_on_a_qemu_command_line() -> None:
    def name(*args: str) -> str | None:
        return name_from_argv(["qemu-system-x86_64", "-S", *args, "-m", "64"])

    assert name("-name", "web1") == "web1"
    assert name("-name", "guest=web1") == "web1"
    assert name("-name", "web1,process=qemu-web1") == "web1"
    assert name("-name", "process=qemu-web1,guest=web1,debug-threads=on") == "web1"
    assert name("--name", "a,,b") == "a,b"  # ",," is a literal comma in QEMU options
    assert name("-name", "first", "-name", "guest=last") == "last"
    assert name("-name", "process=only-a-process-name") is None
    assert name("-chardev", "socket,id=x,path=/run/name") is None
    assert name_from_argv(["qemu-system-x86_64", "-name"]) is None
    assert pid_name(1234) == "pid-1234"


async def test_socket_mode_live_socket_refused_and_own_file_removed(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    async with ListenSource(path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        with pytest.raises(ConfigError, match="already listening"):
            await ListenSource(path).start()
    assert not path.exists()
    # A socket nobody listens on (a listener that died) is replaced.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    async with ListenSource(path):
        assert path.exists()
    assert not path.exists()
    path.write_text("not a socket")
    with pytest.raises(ConfigError, match="not a socket"):
        await ListenSource(path).start()


async def test_each_vm_is_announced_once_and_a_reconnect_is_a_gap(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    async with ListenSource(path) as listen:
        vms = aiter(listen)
        # This test process has no -name: the name comes from query-name, else the pid.
        alpha = await FakeQEMU(path, "alpha").connect()
        vm = await next_vm(vms)
        assert vm.name == "alpha" and vm.pid == os.getpid() and vm.greeting_version == "7.2.22"
        items = aiter(vm)
        connected = await next_item(items)
        assert isinstance(connected, Connected) and f"pid {os.getpid()}" in connected.detail
        alpha.emit("STOP")
        stop = await next_item(items)
        assert isinstance(stop, Event) and stop.name == "STOP"
        await alpha.close()
        lost = await next_item(items)
        assert isinstance(lost, Disconnected) and "closed the connection" in lost.reason

        anonymous = await FakeQEMU(path).connect()
        other = await next_vm(vms)
        assert other.name == f"pid-{os.getpid()}"

        again = await FakeQEMU(path, "alpha").connect()  # the same VM, not announced again
        back = await next_item(items)
        gap = await next_item(items)
        assert isinstance(back, Connected) and isinstance(gap, Gap)
        assert gap.started == lost.at and gap.ended == back.at
        assert set(listen.vms) == {"alpha", f"pid-{os.getpid()}"}
        for fake in (anonymous, again):
            await fake.close()


async def test_bad_peers_get_one_log_line_and_are_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "qmp.sock"
    caplog.set_level(logging.WARNING, "qmpevents.sources.listen")
    async with ListenSource(path, greeting_timeout=0.3, max_pending=2) as listen:
        garbage_r, garbage_w = await asyncio.open_unix_connection(path)
        garbage_w.write(b"GET / HTTP/1.1\r\n\r\n")
        silent_r, _silent_w = await asyncio.open_unix_connection(path)
        # Both are dropped: each sees EOF, within the greeting timeout.
        assert await asyncio.wait_for(garbage_r.read(), STEP) == b""
        assert await asyncio.wait_for(silent_r.read(), STEP) == b""
        messages = [r.getMessage() for r in caplog.records]
        assert len(messages) == 2, messages
        assert all(f"peer pid {os.getpid()}" in m and "dropped" in m for m in messages)
        assert any("GET / HTTP" in m for m in messages)
        assert any("no QMP greeting within 0.3 s" in m for m in messages)
        # A QEMU is still welcome.
        fake = await FakeQEMU(path, "vm").connect()
        assert (await next_vm(aiter(listen))).name == "vm"
        await fake.close()
        assert listen.rejected == 2


async def test_unidentified_peers_are_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "qmp.sock"
    caplog.set_level(logging.WARNING, "qmpevents.sources.listen")
    async with ListenSource(path, greeting_timeout=STEP, max_pending=1) as listen:
        _holding = await asyncio.open_unix_connection(path)  # silent: holds the one slot
        async with asyncio.timeout(STEP):
            while listen.pending == 0:
                await asyncio.sleep(0.01)
        extra_r, _extra_w = await asyncio.open_unix_connection(path)
        assert await asyncio.wait_for(extra_r.read(), STEP) == b""
        assert "1 peers are already in their handshake" in caplog.text


async def test_a_second_live_connection_for_one_name_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "qmp.sock"
    async with ListenSource(path) as listen:
        first = await FakeQEMU(path, "twin").connect()
        vm = await next_vm(aiter(listen))
        second = await FakeQEMU(path, "twin").connect()
        assert second.writer is not None
        async with asyncio.timeout(STEP):
            while listen.rejected == 0:
                await asyncio.sleep(0.01)
        assert "'twin' is already connected" in caplog.text
        assert vm.connected
        for fake in (first, second):
            await fake.close()


async def test_closing_ends_every_vm_after_what_it_received(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    listen = ListenSource(path)
    await listen.start()
    fake = await FakeQEMU(path, "vm").connect()
    vm = await next_vm(aiter(listen))
    items = aiter(vm)
    assert isinstance(await next_item(items), Connected)
    fake.emit("RESUME")
    event = await next_item(items)
    assert isinstance(event, Event)
    await listen.aclose()
    async with asyncio.timeout(STEP):
        rest = [item async for item in items]
    assert rest == []  # closed by us: no Disconnected marker, iteration just ends
    assert not path.exists()
    await fake.close()

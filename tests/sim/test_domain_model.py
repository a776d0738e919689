"""The model behind libvirt's queries: QOM paths, the balloon driver, the power button, chardevs."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgspec
import pytest

from qmpevents.client.connection import QMPClient
from qmpevents.errors import CommandError
from qmpevents.server.commands import QMPCommandFailure
from qmpevents.sim.cmdline import parse_command_line
from qmpevents.sim.ghash import g_str_hash, hash_order
from qmpevents.sim.machine import Machine
from tests.sim.libvirt_domain import Monitor
from tests.sim.programs import PROGRAMS, program

BASE = ["-display", "none", "-nodefaults", "-S", "-m", "64"]


def test_hash_order_is_glibs() -> None:
    # Measured on QEMU 7.2: qom-list /chardevs of 20 null chardevs and the -qmp one,
    # which needs the table to grow twice.
    assert hash_order([f"c{i}" for i in range(20)] + ["compat_monitor0"]) == [
        "c6", "c17", "c3", "c14", "c0", "c11", "c8", "c19", "c5", "c16", "c2", "c13", "c10",
        "c7", "c18", "c4", "c15", "c1", "compat_monitor0", "c12", "c9",
    ]  # fmt: skip
    assert hash_order(["charmonitor", "charchannel0"]) == ["charchannel0", "charmonitor"]
    assert g_str_hash("") == 5381
    assert g_str_hash("\u00e9") == (5381 * 33 - 61) * 33 - 87 & 0xFFFFFFFF  # signed chars


def machine(*argv: str) -> Machine:
    return Machine(parse_command_line([*BASE, *argv]))


async def refusal(m: Machine, command: str, arguments: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(QMPCommandFailure) as failure:
        await m.execute(command, arguments)
    return failure.value.error_class, failure.value.desc


async def test_qom_paths() -> None:
    m = machine("-device", "virtio-balloon-pci,id=b0", "-device", "pvpanic")
    listing = await m.execute("qom-list", {"path": "/machine/peripheral-anon"})
    assert msgspec.to_builtins(listing) == [
        {"name": "type", "type": "string"}, {"name": "device[0]", "type": "child<pvpanic>"},
    ]  # fmt: skip
    # A partial path names the one object whose path ends with it.
    assert await m.execute("qom-list", {"path": "peripheral"}) == await m.execute(
        "qom-list", {"path": "/machine/peripheral"}
    )
    assert await refusal(m, "qom-list", {"path": "/nope"}) == (
        "DeviceNotFound", "Device '/nope' not found",
    )  # fmt: skip
    # What the model does not hold is said so, not invented and not denied.
    for path in ("b0", "/machine/i440fx"):
        error_class, desc = await refusal(m, "qom-list", {"path": path})
        assert error_class == "GenericError" and "does not model" in desc
    cpu = await m.execute("qom-list", {"path": "/machine/unattached/device[0]"})
    assert {"name": "realized", "type": "bool"} in cpu and len(cpu) > 400


async def test_the_guest_balloon_driver_reports_its_size(tmp_path: Path) -> None:
    async with started(tmp_path, "-device", "virtio-balloon-pci") as (_, qmp):
        await qmp.execute("balloon", {"value": 32 << 20})
        assert await qmp.execute("query-balloon") == {"actual": 64 << 20}  # no driver yet
        waiter = qmp.wait_for("BALLOON_CHANGE")
        await qmp.execute("x-sim-balloon", {"actual": 32 << 20})
        event = await waiter
        assert event.data == {"actual": 32 << 20}  # type: ignore[union-attr]
        assert await qmp.execute("query-balloon") == {"actual": 32 << 20}
        with pytest.raises(CommandError, match="whole 4096-byte pages"):
            await qmp.execute("x-sim-balloon", {"actual": (32 << 20) + 1})


async def test_power_button_waits_for_the_guest_to_run(tmp_path: Path) -> None:
    async with started(tmp_path, "-no-shutdown") as (_, qmp):
        async with qmp.events("POWERDOWN", "SHUTDOWN", "STOP", "RESUME") as events:
            await qmp.execute("system_powerdown")  # prelaunch: the guest cannot answer
            await asyncio.sleep(0.1)
            assert (await qmp.execute("query-status"))["status"] == "prelaunch"
            await qmp.execute("cont")
            names = [(await anext(events)).name for _ in range(4)]  # type: ignore[union-attr]
        assert names == ["POWERDOWN", "RESUME", "SHUTDOWN", "STOP"]
        assert (await qmp.execute("query-status"))["status"] == "shutdown"


async def test_machine_none_has_no_guest(tmp_path: Path) -> None:
    async with started(tmp_path, "-machine", "none") as (_, qmp):
        await qmp.execute("cont")
        await qmp.execute("system_powerdown")
        await asyncio.sleep(0.1)
        assert (await qmp.execute("query-status"))["status"] == "running"
        assert await qmp.execute("query-cpus-fast") == []


async def test_channel_chardev_follows_its_client_and_the_guest(tmp_path: Path) -> None:
    channel = tmp_path / "agent.sock"
    argv = ["-device", "virtio-serial-pci", "-chardev",
            f"socket,id=ch,path={channel},server=on,wait=off",
            "-device", "virtserialport,id=p0,chardev=ch,name=org.qemu.guest_agent.0"]  # fmt: skip

    async def ch(qmp: QMPClient) -> dict[str, Any]:
        infos = await qmp.execute("query-chardev")
        return next(info for info in infos if info["label"] == "ch")

    async with started(tmp_path, *argv) as (_, qmp):
        assert await ch(qmp) == {
            "label": "ch", "filename": f"disconnected:unix:{channel},server=on",
            "frontend-open": False,
        }  # fmt: skip
        _, writer = await asyncio.open_unix_connection(str(channel))
        writer.write(b'{"execute":"guest-sync","arguments":{"id":1}}\n')  # nobody answers
        await asyncio.sleep(0.1)
        await qmp.execute("x-sim-vserport", {"id": "p0", "open": True})
        assert await ch(qmp) == {
            "label": "ch", "filename": f"unix:{channel},server=on", "frontend-open": True,
        }  # fmt: skip
        writer.close()
        await asyncio.sleep(0.1)
        assert (await ch(qmp))["filename"].startswith("disconnected:")
    assert not channel.exists()


@asynccontextmanager
async def started(directory: Path, *argv: str) -> AsyncIterator[tuple[Machine, QMPClient]]:
    sock = directory / "qmp.sock"
    m = machine(*argv, "-qmp", f"unix:{sock},server=on,wait=off")
    await m.start()
    try:
        async with QMPClient(sock) as qmp:
            yield m, qmp
    finally:
        await m.server.close()


@pytest.mark.parametrize("which", PROGRAMS)
def test_sandbox_kills_a_spawn_as_qemu(which: str, tmp_path: Path) -> None:
    """-sandbox on,spawn=deny: a migration to exec: would fork; QEMU is killed (SIGSYS)."""
    command, _ = program(which)
    sock = tmp_path / "qmp.sock"
    process = subprocess.Popen(
        [*command, *BASE, "-sandbox", "on,spawn=deny", "-qmp", f"unix:{sock},server=on,wait=off"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        monitor = Monitor(sock)
        monitor.execute("qmp_capabilities")
        assert '"status": "prelaunch"' in monitor.execute("query-status")[-1]
        monitor.send("migrate", {"uri": "exec:true"})
        with pytest.raises((EOFError, ConnectionResetError, socket.timeout)):
            while True:
                monitor.line()
        assert process.wait(30) == -signal.SIGSYS
    finally:
        process.kill()
        process.wait(30)


def test_sandbox_allows_threads(tmp_path: Path) -> None:
    code = (
        "import threading\n"
        "from qmpevents.sim.sandbox import apply_sandbox\n"
        "apply_sandbox({'obsolete': 'deny', 'elevateprivileges': 'deny', 'spawn': 'deny',"
        " 'resourcecontrol': 'deny'})\n"
        "t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()\n"
        "import os; os.fork()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (-signal.SIGSYS, "thread\n")

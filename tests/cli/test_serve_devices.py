"""`qmpevents serve`: device options, bundled scenarios, --wait-for-client, one-line errors."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from qmpevents.cli import main
from qmpevents.client.connection import QMPClient
from qmpevents.errors import ConnectionLost
from qmpevents.schema.events import Event

SERVE = [sys.executable, "-c", "from qmpevents.cli import main; main()", "serve"]


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (("--ram", "lots"), "'--ram'"),
        (("--dimm", "dimm1"), "'--dimm'"),
        (("--dimm", "dimm1:lots"), "'--dimm'"),
        (("--dimm", "1dimm:128M"), "'--dimm'"),
        (("--vserport", "0vs"), "'--vserport'"),
        (("--vserport", "vs0", "--vserport", "vs0"), "'--vserport'"),
        (("--vserport", "vs0", "--dimm", "vs0:1G"), "'--dimm'"),
        (("--panic-action", "explode"), "'--panic-action'"),
        (("--tcp", "localhost"), "'--tcp'"),
        (("--wait-for-client",), "--wait-for-client needs --scenario"),
        (("--scenario", "no-such-scenario"), "--scenario: no-such-scenario: cannot read"),
        (("--bogus",), "'--bogus'"),
    ],
)
def test_a_bad_option_is_one_line_naming_it(args: tuple[str, ...], option: str) -> None:
    result = CliRunner().invoke(main, ["serve", "--socket", "x.sock", *args])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("qmpevents serve: ")
    assert option in result.stderr


@asynccontextmanager
async def serving(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, Path]]:
    """``qmpevents serve --socket S ARGS`` in a subprocess, once S exists; killed if left."""
    sock = Path(args[0]) if args and args[0].endswith(".sock") else None
    assert sock is not None
    process = await asyncio.create_subprocess_exec(
        *SERVE, "--socket", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(20):
            while not sock.exists():
                assert process.returncode is None
                await asyncio.sleep(0.02)
        yield process, sock
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def events_until_closed(client: QMPClient) -> list[Event]:
    """Every event a connected client receives until the server goes away."""
    listener = client.events()
    events: list[Event] = []
    async with asyncio.timeout(30):
        try:
            async for item in listener:
                if isinstance(item, Event):
                    events.append(item)
        except ConnectionLost:
            pass
    return events


def data(event: Event) -> dict[str, Any]:
    return dict(event.to_message().get("data", {}))


async def output(process: asyncio.subprocess.Process) -> tuple[int, str, str]:
    assert process.stdout is not None and process.stderr is not None
    async with asyncio.timeout(20):
        stdout, stderr = await asyncio.gather(process.stdout.read(), process.stderr.read())
        return await process.wait(), stdout.decode(), stderr.decode()


async def test_wait_for_client_delivers_the_first_event(tmp_path: Path) -> None:
    sock = str(tmp_path / "vm.sock")
    async with serving(
        sock, "--scenario", "dump", "--wait-for-client", "--exit-after-scenario"
    ) as (
        process,
        _,
    ):
        await asyncio.sleep(0.5)  # the scenario would have run by now without the option
        assert process.returncode is None
        async with QMPClient(sock) as qmp:
            events = await events_until_closed(qmp)
        status, stdout, stderr = await output(process)
    assert [event.name for event in events] == ["STOP", "DUMP_COMPLETED", "RESUME"]
    assert status == 0
    assert "waiting for a client to negotiate before the scenario" in stderr
    assert stdout.startswith("» Dump the guest's memory")


# What each bundled scenario raises, in QEMU's order (MIGRATION_PASS: as many as it takes).
EXPECTED = {
    "panic": ["GUEST_PANICKED", "STOP", "RESUME", "GUEST_CRASHLOADED"],
    "dump": ["STOP", "DUMP_COMPLETED", "RESUME"],
    "quorum": ["QUORUM_REPORT_BAD", "QUORUM_FAILURE"],
    "unplug": ["MEM_UNPLUG_ERROR", "DEVICE_UNPLUG_GUEST_ERROR", "DEVICE_UNPLUG_GUEST_ERROR"],
    "vserport": ["VSERPORT_CHANGE", "VSERPORT_CHANGE", "VSERPORT_CHANGE"],
    "migration": ["MIGRATION", "MIGRATION_PASS", "MIGRATION", "MIGRATION_PASS", "STOP"],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_bundled_scenario_through_serve(tmp_path: Path, name: str) -> None:
    sock = str(tmp_path / "vm.sock")
    args = (sock, "--scenario", name, "--wait-for-client", "--exit-after-scenario")
    async with serving(*args) as (process, _):
        async with QMPClient(sock) as qmp:
            events = await events_until_closed(qmp)
        status, stdout, _ = await output(process)
    assert status == 0
    assert stdout.startswith("» ")
    names = [event.name for event in events]
    if name != "migration":
        assert names == EXPECTED[name]
        return
    passes = [data(e)["pass"] for e in events if e.name == "MIGRATION_PASS"]
    statuses = [data(e)["status"] for e in events if e.name == "MIGRATION"]
    assert names[:2] == ["MIGRATION", "MIGRATION_PASS"] and statuses[0] == "setup"
    assert len(passes) >= 2 and passes == list(range(1, len(passes) + 1))
    assert statuses == ["setup", "active", "completed"]
    assert names[-2:] == ["MIGRATION", "RESUME"]


async def test_panic_scenario_with_exit_failure(tmp_path: Path) -> None:
    # -action panic=exit-failure: GUEST_PANICKED{poweroff}, SHUTDOWN, and QEMU exits 1.
    sock = str(tmp_path / "vm.sock")
    args = (sock, "--scenario", "panic", "--panic-action", "exit-failure", "--wait-for-client")
    async with serving(*args) as (process, _):
        async with QMPClient(sock) as qmp:
            events = await events_until_closed(qmp)
        status, _, _ = await output(process)
    assert [(event.name, data(event)) for event in events] == [
        ("GUEST_PANICKED", {"action": "poweroff"}),
        ("SHUTDOWN", {"guest": True, "reason": "guest-panic"}),
    ]
    assert status == 1


async def test_device_options_serve_the_guest_actions(tmp_path: Path) -> None:
    sock = str(tmp_path / "vm.sock")
    async with serving(sock, "--vserport", "vs0", "--dimm", "dimm1:128M", "--ram", "64M") as (
        process,
        _,
    ):
        async with QMPClient(sock) as qmp:
            listener = qmp.events()
            await qmp.execute("x-sim-vserport", {"id": "vs0", "open": True})
            await qmp.execute("device_del", {"id": "dimm1"})
            await qmp.execute("x-sim-unplug-reject", {"id": "dimm1"})
            devices = await qmp.execute("query-memory-devices")
            names = []
            while (item := listener.get_nowait()) is not None:
                if isinstance(item, Event):
                    names.append(item.name)
        process.send_signal(signal.SIGTERM)
        status, _, stderr = await output(process)
    # A pc machine: the guest's refusal comes as its ACPI _OST reports (0x84, 0x82).
    assert names == ["VSERPORT_CHANGE", "ACPI_DEVICE_OST", "ACPI_DEVICE_OST"]
    assert [d["data"]["id"] for d in devices] == ["dimm1"]
    assert status == 0
    lines = stderr.splitlines()
    assert lines[1:5] == [
        "qmpevents serve: machine pc, 64M RAM (-m 64M,slots=1,maxmem=192M)",
        "qmpevents serve: device pvpanic (guest action x-sim-pvpanic)",
        "qmpevents serve: device virtserialport vs0 on virtio-serial0 "
        "(guest action x-sim-vserport)",
        "qmpevents serve: device pc-dimm dimm1, 128M "
        "(device_del, then guest action x-sim-unplug-reject or x-sim-unplug-policy)",
    ]


async def test_plain_serve_says_it_has_no_port_and_logs_the_guest_message(
    tmp_path: Path,
) -> None:
    sock = str(tmp_path / "vm.sock")
    async with serving(sock) as (process, _):
        async with QMPClient(sock) as qmp:
            listener = qmp.events()
            # As in QEMU: a guest message for a port that does not exist is only logged.
            assert await qmp.execute("x-sim-vserport", {"id": "vs0", "open": True}) == {}
            await qmp.execute("query-status")
            assert listener.get_nowait() is None
        process.send_signal(signal.SIGTERM)
        _, _, stderr = await output(process)
    assert (
        "qmpevents serve: no virtserialport, pc-dimm (add with --vserport ID, --dimm ID:SIZE)"
        in stderr.splitlines()
    )
    assert "virtio-serial-bus: Unexpected port id 'vs0' (ports: none)" in stderr

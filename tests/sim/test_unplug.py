"""A DIMM unplug the guest refuses, on pseries and on pc, by hand and by the guest's policy.

The wire bytes are checked against QEMU 7.2 by the reference replays
(``mem_unplug`` for pseries, ``dimm_unplug_pc`` for pc); these tests cover what
the policy adds: when the guest answers, and what a pending unplug allows.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator
from typing import Any

import pytest

from qmpevents.client.connection import QMPClient
from qmpevents.errors import CommandError
from qmpevents.schema.events import AcpiDeviceOst, Event
from qmpevents.sim.cmdline import parse_command_line
from qmpevents.sim.machine import Machine

MACHINES = {
    "pc": ["-machine", "pc", "-m", "64M,slots=2,maxmem=1G"],
    "q35": ["-machine", "q35", "-m", "64M,slots=2,maxmem=1G"],
    "pseries": ["-machine", "pseries", "-m", "256M,slots=2,maxmem=1G"],
}


class Guest:
    """A simulated machine with DIMM dimm1, and a client on its monitor."""

    def __init__(self, kind: str, client: QMPClient) -> None:
        self.kind = kind
        self.client = client
        self.events = client.events()

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        return await self.client.execute(command, arguments or {})

    async def names(self) -> list[str]:
        """The events received so far (a query first, so that all of them have arrived)."""
        await self.execute("query-status")
        names = []
        while (item := self.events.get_nowait()) is not None:
            if isinstance(item, Event):
                names.append(item.name)
        return names


@pytest.fixture(params=sorted(MACHINES))
async def guest(request: pytest.FixtureRequest) -> AsyncIterator[Guest]:
    tmp = tempfile.mkdtemp(prefix="qs-")
    argv = [
        *MACHINES[request.param], "-qmp", f"unix:{tmp}/q.sock,server=on,wait=off",
        "-object", "memory-backend-ram,id=m1,size=256M", "-device", "pc-dimm,id=dimm1,memdev=m1",
        "-device", "virtio-serial-pci,id=vs",
    ]  # fmt: skip
    machine = Machine(parse_command_line(argv))
    await machine.start()
    try:
        async with QMPClient(f"{tmp}/q.sock") as client:
            yield Guest(request.param, client)
    finally:
        await machine.server.close()
        shutil.rmtree(tmp, ignore_errors=True)


REFUSED = {
    "pc": ["ACPI_DEVICE_OST", "ACPI_DEVICE_OST"],
    "q35": ["ACPI_DEVICE_OST", "ACPI_DEVICE_OST"],
    "pseries": ["MEM_UNPLUG_ERROR", "DEVICE_UNPLUG_GUEST_ERROR", "DEVICE_UNPLUG_GUEST_ERROR"],
}


async def test_without_a_policy_the_unplug_waits_for_the_guest(guest: Guest) -> None:
    kind = guest.kind
    assert await guest.execute("device_del", {"id": "dimm1"}) == {}
    await asyncio.sleep(0.05)
    assert await guest.names() == []
    if kind == "pseries":
        with pytest.raises(
            CommandError, match="Memory unplug already in progress for device dimm1"
        ):
            await guest.execute("device_del", {"id": "dimm1"})
    else:
        assert await guest.execute("device_del", {"id": "dimm1"}) == {}  # QEMU asks again
    await guest.execute("x-sim-unplug-reject", {"id": "dimm1"})
    assert await guest.names() == REFUSED[kind]
    await guest.execute("x-sim-unplug-reject", {"id": "dimm1"})  # nothing pending now
    assert await guest.names() == []


async def test_a_refusing_guest_answers_every_request_by_itself(guest: Guest) -> None:
    kind = guest.kind
    await guest.execute("x-sim-unplug-policy", {"answer": "refuse"})
    for _ in range(2):
        assert await guest.execute("device_del", {"id": "dimm1"}) == {}
        assert await guest.names() == REFUSED[kind]
    devices = await guest.execute("query-memory-devices")
    assert [device["data"]["id"] for device in devices] == ["dimm1"]
    await guest.execute("x-sim-unplug-policy", {"answer": "ignore"})
    await guest.execute("device_del", {"id": "dimm1"})
    assert await guest.names() == []


async def test_a_paused_guest_answers_once_it_runs(guest: Guest) -> None:
    await guest.execute("x-sim-unplug-policy", {"answer": "refuse"})
    await guest.execute("stop")
    await guest.execute("device_del", {"id": "dimm1"})
    await asyncio.sleep(0.05)
    assert await guest.names() == ["STOP"]
    await guest.execute("cont")
    assert await guest.names() == ["RESUME", *REFUSED[guest.kind]]


async def test_choosing_refuse_answers_the_unplugs_already_waiting(guest: Guest) -> None:
    await guest.execute("device_del", {"id": "dimm1"})
    await guest.execute("x-sim-unplug-policy", {"answer": "refuse"})
    assert await guest.names() == REFUSED[guest.kind]
    await guest.execute("device_del", {"id": "dimm1"})  # nothing pending: pseries takes it too
    assert await guest.names() == REFUSED[guest.kind]


async def test_a_pci_device_unplug_stays_pending(guest: Guest) -> None:
    """As QEMU 7.2 answers for a cold-plugged virtio-serial-pci with no guest to eject it."""
    if guest.kind == "q35":
        with pytest.raises(CommandError, match=r"Bus 'pcie\.0' does not support hotplugging"):
            await guest.execute("device_del", {"id": "vs"})
        return
    assert await guest.execute("device_del", {"id": "vs"}) == {}
    again = {
        "pc": "Device vs is already in the process of unplug",
        "pseries": "PCI device unplug already in progress for device vs",
    }[guest.kind]
    with pytest.raises(CommandError, match=again):
        await guest.execute("device_del", {"id": "vs"})
    assert await guest.names() == []


async def test_the_pc_refusal_names_the_slot_and_the_guests_status() -> None:
    tmp = tempfile.mkdtemp(prefix="qs-")
    argv = [
        "-m", "64M,slots=3,maxmem=1G", "-qmp", f"unix:{tmp}/q.sock,server=on,wait=off",
        "-object", "memory-backend-ram,id=m1,size=128M",
        "-device", "pc-dimm,id=dimm1,memdev=m1,slot=2",
    ]  # fmt: skip
    machine = Machine(parse_command_line(argv))
    await machine.start()
    try:
        async with QMPClient(f"{tmp}/q.sock") as client:
            events = client.events()
            await client.execute("x-sim-unplug-policy", {"answer": "refuse"})
            await client.execute("device_del", {"id": "dimm1"})
            await client.execute("query-status")
            reports = []
            while (item := events.get_nowait()) is not None:
                assert isinstance(item, AcpiDeviceOst)
                reports.append(item.data.info)
    finally:
        await machine.server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    assert [(i.device, i.slot, i.slot_type, i.source, i.status) for i in reports] == [
        ("dimm1", "2", "DIMM", 3, 0x84),
        ("dimm1", "2", "DIMM", 3, 0x82),
    ]

"""Every reference transcript of QEMU 7.2 replayed against the simulator (see replay.py)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

from qmpevents.sim.cmdline import parse_command_line
from qmpevents.sim.machine import Machine
from tests.helpers import load_transcript
from tests.server.test_reference_replay import replay_protocol
from tests.sim.replay import GuestAction, replay


@pytest.fixture
def tmp() -> Iterator[str]:
    # Short: unix socket paths are limited to 108 bytes.
    path = tempfile.mkdtemp(prefix="qs-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _pvpanic(*values: int) -> GuestAction:
    return GuestAction(
        "first", [{"execute": "x-sim-pvpanic", "arguments": {"value": v}} for v in values]
    )


def _vserport(*changes: tuple[str, bool]) -> GuestAction:
    return GuestAction(
        "start",
        [{"execute": "x-sim-vserport", "arguments": {"id": i, "open": o}} for i, o in changes],
    )


def _reject(device: str, times: int = 1) -> list[dict[str, object]]:
    return [{"execute": "x-sim-unplug-reject", "arguments": {"id": device}}] * times


async def test_dump(tmp: str) -> None:
    result = await replay("dump", tmp, {})
    assert result.compared == 31
    # A real ELF core of the simulated RAM size, as QEMU writes it.
    assert os.path.getsize(f"{tmp}/dump1.elf") == 67372171
    with open(f"{tmp}/dump1.elf", "rb") as f:
        assert f.read(4) == b"\x7fELF"
    assert not os.path.exists(f"{tmp}/dumpB.elf")


async def test_migration(tmp: str) -> None:
    dirty = {"execute": "x-sim-dirty-rate", "arguments": {"bytes-per-second": 4 << 20}}
    result = await replay(
        "migration",
        tmp,
        {"[dirty] migrate (cannot converge), cancel after 3 s": GuestAction("start", [dirty])},
        elastic_conns=frozenset({"dirty"}),
    )
    assert result.statuses == {"idle": 0, "paused": 0, "noevents": 0, "dirty": 0}


async def test_guest_panic(tmp: str) -> None:
    actions = {}
    for label in (
        "default", "no-shutdown", "action-panic-pause", "action-panic-none",
        "action-panic-exit-failure", "action-panic-shutdown-shutdown-pause",
    ):  # fmt: skip
        actions[f"[{label}] cont; guest writes [1] to port 0x505"] = _pvpanic(1)
    for label in ("crashloaded", "crashloaded-panic-none", "events-mask-1-write-2"):
        actions[f"[{label}] cont; guest writes [2] to port 0x505"] = _pvpanic(2)
    actions["[both-bits-value-3] cont; guest writes [3] to port 0x505"] = _pvpanic(3)
    actions["[panic-then-crashloaded] cont; guest writes [1, 2] to port 0x505"] = _pvpanic(1, 2)
    actions["[five-panics-panic-none] cont; guest writes [1, 1, 1, 1, 1] to port 0x505"] = _pvpanic(
        1, 1, 1, 1, 1
    )
    result = await replay("guest_panic", tmp, actions)
    assert result.statuses["action-panic-exit-failure"] == 1
    assert result.statuses["default"] == 0


async def test_os_term(tmp: str) -> None:
    """A pseries guest's panic: RTAS ibm,os-term, once paused and again after cont."""
    message = "Kernel panic - not syncing: sysrq triggered crash\n"
    term = GuestAction("start", [{"execute": "x-sim-os-term", "arguments": {"message": message}}])
    actions = {
        "guest calls RTAS ibm,os-term (a Linux panic on pseries)": term,
        "ibm,os-term again once running": term,
    }
    result = await replay("os_term", tmp, actions)
    recorded = load_transcript("os_term")["processes"][0]["stderr"]
    assert result.stderr.getvalue() == recorded.replace("qemu-system-ppc64", "qmpevents-qemu")


async def test_quorum(tmp: str) -> None:
    result = await replay("quorum", tmp, {})
    assert "read failed: Input/output error" in result.stdout.getvalue()
    assert "read 512/512 bytes at offset 0" in result.stdout.getvalue()
    # rewrite-corrupted repaired the bad child on disk
    with open(f"{tmp}/qRW-c2.raw", "rb") as f:
        assert f.read(512) == b"\x32" * 512


async def test_vserport(tmp: str) -> None:
    actions = {
        "burst on vs0: open, close, open, close; then open vs1; drain 2.5 s": _vserport(
            ("vs0", True), ("vs0", False), ("vs0", True), ("vs0", False), ("vs1", True)
        ),
        "after >2 s quiet: open vs0 again (already closed) -> immediate?": _vserport(("vs0", True)),
        "after >2 s quiet: PORT_OPEN 1 again on the already open vs0": _vserport(("vs0", True)),
        "PORT_OPEN for a port id that does not exist (id 7)": _vserport(("vs7", True)),
    }
    await replay("vserport", tmp, actions)


async def test_mem_unplug(tmp: str) -> None:
    actions = {
        "guest rejects: RTAS set-indicator isolation-state=unisolate on dimm1 LMB": GuestAction(
            "start", _reject("dimm1")
        ),
        "unisolate again without a pending unplug": GuestAction("start", _reject("dimm1")),
        "3 x (device_del + reject) back to back": GuestAction("each", _reject("dimm1")),
        "dimm2 (2 LMBs): device_del, reject via 2nd LMB, then 1st LMB": GuestAction(
            "each", _reject("dimm2", 2)
        ),
    }
    result = await replay("mem_unplug", tmp, actions, skip_commands=frozenset({"qom-list"}))
    assert result.stderr.getvalue().count("Device hotunplug rejected by the guest") == 10


async def test_dimm_unplug_pc(tmp: str) -> None:
    """On pc the refusal is the guest's _OST reports; a repeated device_del asks again."""
    refuse = {"execute": "x-sim-unplug-policy", "arguments": {"answer": "refuse"}}
    actions = {
        "device_del dimm1; the guest refuses (_OST 0x84, then 0x82)": GuestAction(
            "start", [refuse]
        ),
    }
    result = await replay("dimm_unplug_pc", tmp, actions)
    assert result.compared == 12  # the greeting, six answers, five events
    assert "rejected" not in result.stderr.getvalue()


async def test_reset(tmp: str) -> None:
    """system_reset and SeaBIOS's reset after it (pc, q35), and reboot=shutdown."""
    result = await replay("reset", tmp, {}, racy_repeats=frozenset({"RESET"}))
    assert result.statuses == {"pc": 0, "q35": 0, "no-reboot": 0, "reboot-shutdown-pause": 0}


async def test_protocol(tmp: str) -> None:
    """protocol.json against qmpevents-qemu started with that transcript's own argv."""
    (process,) = load_transcript("protocol")["processes"]
    argv = [arg.replace("/tmp/qmp-acc-protocol-XXXXXXXX", tmp) for arg in process["argv"][1:]]
    machine = Machine(parse_command_line(argv))
    await machine.start()
    paths = {"A": f"{tmp}/vm-qmp0.sock", "B": f"{tmp}/vm-qmp1.sock", "C": f"{tmp}/vm-qmp0.sock"}
    assert await replay_protocol(machine.server, paths, any_package=True) > 1000

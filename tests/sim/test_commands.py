"""Bad arguments to the simulated commands give QEMU's errors."""

from __future__ import annotations

from typing import Any

import pytest

from qmpevents.server.commands import QMPCommandFailure
from qmpevents.sim.config import MachineConfig
from qmpevents.sim.machine import Machine


@pytest.mark.parametrize(
    ("command", "arguments", "desc"),
    [
        ("dump-guest-memory", {"paging": False}, "Parameter 'protocol' is missing"),
        ("dump-guest-memory", {"paging": False, "protocol": "/x"}, "Invalid parameter 'protocol'"),
        ("dump-guest-memory", {"paging": False, "protocol": "file:/x", "begin": 0},
         "Parameter 'length' is missing"),
        ("dump-guest-memory", {"paging": True, "protocol": "file:/x", "format": "kdump-zlib"},
         "kdump-compressed format doesn't support paging or filter"),
        ("dump-guest-memory", {"paging": False, "protocol": "file:/x", "format": "bogus"},
         "Parameter 'format' does not accept value 'bogus'"),
        ("dump-guest-memory", {"paging": False, "protocol": "file:/x", "format": "kdump-lzo"},
         "kdump-lzo is not available now"),
        ("migrate-set-capabilities",
         {"capabilities": [{"capability": "foo", "state": True}]},
         "Parameter 'capability' does not accept value 'foo'"),
        ("migrate-set-capabilities", {"capabilities": [{"capability": "events"}]},
         "Parameter 'capabilities[0].state' is missing"),
        ("migrate-set-parameters", {"downtime-limit": 3000000},
         "Parameter 'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms"),
        ("migrate-set-parameters", {"foo": 1}, "Parameter 'foo' is unexpected"),
        ("migrate", {"uri": "bogus:x"}, "Parameter 'uri' expects a valid migration protocol"),
        ("blockdev-add", {"driver": "bogus"}, "Parameter 'driver' does not accept value 'bogus'"),
        ("blockdev-add", {"driver": "raw", "node-name": "r"}, "Parameter 'file' is missing"),
        ("blockdev-add", {"driver": "raw", "file": "nope"},
         "Cannot find device='nope' nor node-name='nope'"),
        ("blockdev-add", {"driver": "file", "filename": "/nonexistent/x"},
         "Could not open '/nonexistent/x': No such file or directory"),
        ("blockdev-del", {"node-name": "nope"}, "Failed to find node with node-name='nope'"),
        ("device_del", {"id": "nope"}, "Device 'nope' not found"),
        ("x-sim-unplug-reject", {"id": "nope"}, "Device 'nope' not found"),
        ("x-sim-vserport", {"id": "vs0"}, "Parameter 'open' is missing"),
        ("x-sim-pvpanic", {"value": "1"}, "Invalid parameter type for 'value', expected: integer"),
        ("x-sim-dirty-rate", {}, "Parameter 'bytes-per-second' is missing"),
        ("human-monitor-command", {}, "Parameter 'command-line' is missing"),
    ],
)  # fmt: skip
async def test_bad_arguments(command: str, arguments: dict[str, Any], desc: str) -> None:
    machine = Machine(MachineConfig(ram_size=16 << 20, pvpanic=True))
    with pytest.raises(QMPCommandFailure) as failure:
        await machine.execute(command, arguments)
    assert failure.value.desc == desc


async def test_x_sim_commands_are_listed() -> None:
    machine = Machine(MachineConfig())
    names = {entry["name"] for entry in await machine.execute("query-commands")}
    assert {"x-sim-pvpanic", "x-sim-vserport", "x-sim-unplug-reject", "x-sim-dirty-rate"} <= names


async def test_hmp_errors_are_text() -> None:
    machine = Machine(MachineConfig())
    hmp = "human-monitor-command"
    assert await machine.execute(hmp, {"command-line": "foo"}) == "unknown command: 'foo'\r\n"
    assert await machine.execute(hmp, {"command-line": 'qemu-io nope "read 0 512"'}) == (
        "Error: Cannot find device='' nor node-name='nope'\r\n"
    )
    assert (await machine.execute(hmp, {"command-line": "qemu-io"})).startswith(
        "qemu-io: block device name expected\r\n"
    )

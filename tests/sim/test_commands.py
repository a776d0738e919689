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
        # Measured on QEMU 7.2: the visitor's words, then migrate_params_check()'s.
        ("migrate-set-parameters", {"max-bandwidth": "x"},
         "Parameter 'max-bandwidth' expects uint64"),
        ("migrate-set-parameters", {"compress-level": -1},
         "Parameter 'compress-level' expects uint8_t"),
        ("migrate-set-parameters", {"compress-level": 10},
         "Parameter 'compress_level' expects a value between 0 and 9"),
        ("migrate-set-parameters", {"x-checkpoint-delay": 1 << 32},
         "Parameter 'x-checkpoint-delay' expects uint32_t"),
        ("migrate-set-parameters", {"tls-creds": 5},
         "Invalid parameter type for 'tls-creds', expected: StrOrNull"),
        ("migrate-set-parameters", {"max-cpu-throttle": 10},
         "Parameter 'max_cpu_throttle' expects an integer in the range of "
         "cpu_throttle_initial to 99"),
        ("migrate-set-parameters", {"xbzrle-cache-size": 1000},
         "Parameter 'xbzrle_cache_size' expects a power of two no less than the target page size"),
        ("migrate-set-parameters", {"multifd-compression": "lz4"},
         "Parameter 'multifd-compression' does not accept value 'lz4'"),
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
        ("x-sim-unplug-policy", {"answer": "accept"},
         "Parameter 'answer' does not accept value 'accept'"),
        ("x-sim-unplug-policy", {}, "Parameter 'answer' is missing"),
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
    assert {
        "x-sim-pvpanic", "x-sim-vserport", "x-sim-unplug-reject", "x-sim-unplug-policy",
        "x-sim-dirty-rate",
    } <= names  # fmt: skip


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


# query-migrate-parameters of QEMU 7.2 (-machine pc), as it answered.
QEMU_7_2_PARAMETERS = {
    "cpu-throttle-tailslow": False, "xbzrle-cache-size": 67108864, "cpu-throttle-initial": 20,
    "announce-max": 550, "decompress-threads": 2, "compress-threads": 8, "compress-level": 1,
    "multifd-channels": 2, "multifd-zstd-level": 1, "announce-initial": 50,
    "block-incremental": False, "compress-wait-thread": True, "downtime-limit": 300,
    "tls-authz": "", "multifd-compression": "none", "announce-rounds": 5, "announce-step": 100,
    "tls-creds": "", "multifd-zlib-level": 1, "max-cpu-throttle": 99,
    "max-postcopy-bandwidth": 0, "tls-hostname": "", "throttle-trigger-threshold": 50,
    "max-bandwidth": 134217728, "x-checkpoint-delay": 20000, "cpu-throttle-increment": 10,
}  # fmt: skip


async def test_migration_parameters_answer_as_qemu_7_2() -> None:
    machine = Machine(MachineConfig(ram_size=16 << 20))
    assert await machine.execute("query-migrate-parameters", {}) == QEMU_7_2_PARAMETERS
    await machine.execute(
        "migrate-set-parameters",
        {"max-bandwidth": -1, "tls-creds": "c", "multifd-zlib-level": 5, "compress-level": 9},
    )
    now = await machine.execute("query-migrate-parameters", {})
    # -1 wraps; the multifd levels are accepted but not applied, as QEMU 7.2 does.
    assert now == {**QEMU_7_2_PARAMETERS, "max-bandwidth": (1 << 64) - 1, "tls-creds": "c",
                   "compress-level": 9}  # fmt: skip
    await machine.execute("migrate-set-parameters", {"tls-creds": None})
    assert (await machine.execute("query-migrate-parameters", {}))["tls-creds"] == ""

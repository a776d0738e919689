"""What the simulated binary says about itself where the model knows better than a recording.

libvirt's capability probe asks QEMU what it is before it uses it. Most answers
come from QEMU 7.2 itself (:mod:`qmpevents.sim.recorded`), but these must
describe the simulator, or libvirt would ask it for what it cannot do (the QOM
types are :mod:`qmpevents.sim.qom`'s):

* ``query-machines`` lists the machine types the target's binary accepts
  (:mod:`qmpevents.sim.target`), with the members libvirt reads. The values are
  QEMU 7.2's own: pc, q35 and none recorded from ``qemu-system-x86_64``, pseries
  from ``qemu-system-ppc64`` (tests compare them with both recordings); the
  default is the target's (pc, or pseries).
* ``query-kvm`` says the accelerator in use, which is never KVM
  (:mod:`qmpevents.sim.accel`): ``present`` as the binary says it (x86_64 is
  built with KVM, as ``-accel help`` says; Debian's ppc64 binary is not) and
  not ``enabled``, what QEMU 7.2 says without ``/dev/kvm``. libvirt then
  probes once, under TCG.
* ``query-tpm-models`` and ``query-tpm-types`` are empty: the simulator has no
  TPM (QEMU 7.2 lists tpm-crb and tpm-tis, passthrough and emulator).
* ``query-command-line-options`` keeps QEMU 7.2's entries for the option groups
  whose option the simulator's command line takes
  (:data:`~qmpevents.sim.cmdline.OPTIONS`), so libvirt never passes
  ``-spice`` or ``-sandbox`` to a simulator that would refuse them. Their
  parameter lists are QEMU's, not narrowed to what the simulator accepts.

``query-version`` is the server's own (its greeting).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from qmpevents.protocol.requests import GENERIC_ERROR
from qmpevents.server.commands import CommandContext, QMPCommandFailure
from qmpevents.sim.cmdline import OPTIONS
from qmpevents.sim.recorded import Recording, arguments_of
from qmpevents.sim.target import TARGETS, X86_64, Target

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = [
    "MACHINE_INFO",
    "KvmInfo",
    "MachineInfo",
    "MachineTraits",
    "command_line_options",
    "install",
    "machines",
]


@dataclass(frozen=True, slots=True)
class MachineTraits:
    """What QEMU's MachineClass says of a machine type, beyond its name and description."""

    cpu_max: int
    hotpluggable_cpus: bool
    default_cpu_type: str | None
    default_ram_id: str | None
    numa_mem_supported: bool = False
    deprecated: bool = False


MACHINE_INFO: Final = {
    "pc-i440fx-7.2": MachineTraits(255, True, "qemu64-x86_64-cpu", "pc.ram"),
    "pc-q35-7.2": MachineTraits(288, True, "qemu64-x86_64-cpu", "pc.ram"),
    "pseries-7.2": MachineTraits(4096, True, "power9_v2.0-powerpc64-cpu", "ppc_spapr.ram"),
    "none": MachineTraits(1, False, None, "ram"),
}
"""The traits of each machine type of :data:`~qmpevents.sim.help.MACHINE_TYPES`."""

# QEMU's option groups named otherwise than their option (the rest: "-" + group).
_GROUP_OPTIONS: Final = {
    "memory": "-m",
    "smp-opts": "-smp",
    "boot-opts": "-boot",
    "acpi": "-acpitable",
    "": "",  # an unnamed group of QEMU's, no option of its own
}


class MachineInfo(msgspec.Struct, kw_only=True, omit_defaults=True, rename="kebab"):
    """QAPI MachineInfo (QEMU 7.2): one entry of ``query-machines``, members in its order."""

    name: str
    alias: str | None = None
    is_default: bool | None = None
    cpu_max: int
    hotpluggable_cpus: bool
    numa_mem_supported: bool
    deprecated: bool
    default_cpu_type: str | None = None
    default_ram_id: str | None = None


class KvmInfo(msgspec.Struct):
    """QAPI KvmInfo: the ``query-kvm`` return value."""

    enabled: bool
    present: bool


def machines(target: Target = X86_64) -> list[MachineInfo]:
    """The ``query-machines`` return value: the machine types ``target`` accepts."""
    found = []
    for machine in target.machine_types:
        traits = MACHINE_INFO[machine.name]
        found.append(
            MachineInfo(
                name=machine.name,
                alias=machine.alias or None,
                is_default=True if machine.name == target.default_machine else None,
                cpu_max=traits.cpu_max,
                hotpluggable_cpus=traits.hotpluggable_cpus,
                numa_mem_supported=traits.numa_mem_supported,
                deprecated=traits.deprecated,
                default_cpu_type=traits.default_cpu_type,
                default_ram_id=traits.default_ram_id,
            )
        )
    return found


def command_line_options(recording: Recording, option: str | None) -> list[dict[str, Any]]:
    """``query-command-line-options``: QEMU's groups whose option the simulator takes."""
    groups = [
        group
        for group in recording.recorded_value("query-command-line-options")
        if _GROUP_OPTIONS.get(group["option"], f"-{group['option']}") in OPTIONS
    ]
    if option is None:
        return groups
    chosen = [group for group in groups if group["option"] == option]
    if not chosen:
        raise QMPCommandFailure(GENERIC_ERROR, f"invalid option name: {option}")
    return chosen


def install(machine: Machine, recording: Recording) -> None:
    """Register the commands above on ``machine``'s server (the last as QEMU declares it)."""
    server = machine.server
    target = TARGETS[machine.config.target]

    def query_kvm(_: object, ctx: CommandContext) -> KvmInfo:
        return KvmInfo(enabled=machine.accelerator == "kvm", present=target.kvm_present)

    def query_machines(_: object, ctx: CommandContext) -> list[MachineInfo]:
        return machines(target)

    def no_tpm(_: object, ctx: CommandContext) -> list[str]:
        return []

    def query_options(args: Any, ctx: CommandContext) -> list[dict[str, Any]]:
        return command_line_options(recording, arguments_of(args).get("option"))

    server.register("query-kvm", query_kvm, returns=KvmInfo)
    server.register("query-machines", query_machines, returns=list[MachineInfo])
    server.register(
        "query-tpm-models", no_tpm, returns=list[Literal["tpm-tis", "tpm-crb", "tpm-spapr"]]
    )
    server.register("query-tpm-types", no_tpm, returns=list[Literal["passthrough", "emulator"]])
    declared = recording.declaration("query-command-line-options")
    server.register(
        "query-command-line-options", query_options, declared.args, returns=declared.returns
    )

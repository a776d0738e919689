"""Which QEMU binary the simulator stands in for: ``qemu-system-x86_64`` or ``-ppc64``.

libvirt matches a domain's ``<os><type arch=...>`` with the architecture its
emulator reports (``query-target``), so one binary cannot serve both: a pseries
domain, the one whose refused memory unplug raises MEM_UNPLUG_ERROR, needs an
emulator that says ``ppc64``. The program's name picks the target:
``qmpevents-qemu-ppc64`` (or any name ending in ``ppc64``, such as a symlink
called ``qemu-system-ppc64``) is the ppc64 one, every other name the x86_64 one.

A target decides what QEMU's binary would: its machine types and default
machine, its CPU models, its accelerators, and the recording of QEMU 7.2's
answers to libvirt's probe (:mod:`qmpevents.sim.recorded`). The x86_64 target
also accepts pseries, so that one ``qmpevents-qemu`` can raise all seven events
(the demo does); only libvirt needs the ppc64 one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from qmpevents.sim.help import DEVICE_MODELS, MACHINE_TYPES, DeviceModel, MachineType

__all__ = ["CPU_FAMILY", "PPC64", "TARGETS", "X86_64", "Target", "target_of_program"]


@dataclass(frozen=True, slots=True)
class Target:
    """One QEMU binary as the simulator presents it."""

    arch: str  # query-target's arch
    binary: str  # the QEMU binary this target stands in for
    data_file: str  # the recording of QEMU 7.2's answers, in the package's sim/data
    machines: tuple[str, ...]  # the machine types accepted; the first is the default
    cpu_models: Mapping[str, str]  # -cpu names (lower case) -> QEMU's CPU model
    accelerators: tuple[str, ...]  # what the binary is built with, in -accel help order
    kvm_present: bool  # query-kvm's "present": the binary is built with KVM
    lacks_devices: frozenset[str] = frozenset()  # -device models the binary does not have
    # Device types the machines make themselves, which libvirt looks for by name.
    board_devices: tuple[str, ...] = ()

    @property
    def default_machine(self) -> str:
        """The machine type QEMU builds without ``-machine``."""
        return self.machines[0]

    @property
    def machine_types(self) -> list[MachineType]:
        """The accepted machine types, in ``-machine help`` order."""
        return [machine for machine in MACHINE_TYPES if machine.name in self.machines]

    @property
    def device_models(self) -> list[DeviceModel]:
        """The ``-device`` models the binary has, in ``-device help`` order."""
        return [model for model in DEVICE_MODELS if model.name not in self.lacks_devices]

    def cpu_model(self, name: str) -> str | None:
        """The CPU model ``-cpu name`` selects; None if this binary has none of that name."""
        return self.cpu_models.get(name.lower())


X86_64: Final = Target(
    arch="x86_64",
    binary="qemu-system-x86_64",
    data_file="libvirt-qemu-7.2.json",
    machines=("pc-i440fx-7.2", "pc-q35-7.2", "pseries-7.2", "none"),
    cpu_models={"qemu64": "qemu64"},
    accelerators=("tcg", "kvm"),
    kvm_present=True,
)
# QEMU's ppc64 CPU names are case-insensitive aliases: libvirt passes POWER9, the
# pseries-7.2 default is power9_v2.0 (measured on qemu-system-ppc64 7.2).
PPC64: Final = Target(
    arch="ppc64",
    binary="qemu-system-ppc64",
    data_file="libvirt-qemu-7.2-ppc64.json",
    machines=("pseries-7.2", "none"),
    cpu_models={"power9": "power9_v2.0", "power9_v2.0": "power9_v2.0"},
    accelerators=("tcg",),
    kvm_present=False,
    lacks_devices=frozenset({"pvpanic"}),  # no ISA bus in qemu-system-ppc64 at all
    # pseries' PCI host bridge: libvirt's pci-root of a pseries domain, which it
    # refuses to start without.
    board_devices=("spapr-pci-host-bridge",),
)
CPU_FAMILY: Final = {"qemu64": "x86_64-cpu", "power9_v2.0": "powerpc64-cpu"}
"""The QOM type suffix of each CPU model: ``qemu64-x86_64-cpu``."""
TARGETS: Final = {target.arch: target for target in (X86_64, PPC64)}
"""The targets by architecture."""


def target_of_program(program: str) -> Target:
    """The target a program name selects: ppc64 if it ends in ``ppc64``, else x86_64."""
    return PPC64 if program.endswith("ppc64") else X86_64

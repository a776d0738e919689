"""The QOM types the simulator has, and QEMU's recorded answers about them.

libvirt decides which devices a QEMU binary supports from ``qom-list-types``
and reads their properties with ``device-list-properties`` and
``qom-list-properties``; ``virsh domcapabilities`` shows the result. QEMU 7.2
has some 600 types; the simulator has a handful. So the type list is the
model's, and the recording (:mod:`qmpevents.sim.recorded`) describes the types
in it (with one exception libvirt forces, below):

* ``qom-list-types`` lists QEMU 7.2's entries (name, parent) for the types the
  simulator has: its ``-device`` models (:data:`~qmpevents.sim.help.DEVICE_MODELS`, those
  of the target's binary),
  machine types, accelerators, the ``-object`` and ``-chardev`` types its
  command line takes (:data:`OBJECT_TYPES`, :data:`CHARDEV_TYPES`; a test keeps
  them in step with :mod:`qmpevents.sim.cmdline`) and the CPU models, whose
  questions the recording answers. A type QEMU x86_64 lacks (the pseries
  machine) gets its QEMU parent.
* ``device-list-properties`` of a device the simulator has gets QEMU's
  recorded answer; of any other type, QEMU's own answer for a device it does
  not have (``DeviceNotFound``), which libvirt takes as "not supported", or
  for a type that is no device.
* ``qom-list-properties`` gets QEMU's recorded answer even for a class the
  simulator lacks (``memory-backend-file``): libvirt 9.0 asks it about a few
  classes whatever ``qom-list-types`` says, and dereferences a NULL list when
  told one does not exist (measured: libvirtd crashed), which real QEMU never
  tells it. A machine type with no recorded answer gets the properties every
  QEMU machine type has (``none-machine``'s); any other class that neither the
  simulator nor the recording knows is ``DeviceNotFound``.
* Other arguments (``qom-list-types`` with ``implements``/``abstract``) are the
  recording's: answered if recorded, a GenericError otherwise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from qmpevents.protocol.requests import DEVICE_NOT_FOUND, GENERIC_ERROR
from qmpevents.server.commands import CommandContext, QMPCommandFailure
from qmpevents.sim.recorded import Recording, arguments_of
from qmpevents.sim.target import TARGETS, X86_64, Target

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["CHARDEV_TYPES", "OBJECT_TYPES", "TypeModel", "install"]

OBJECT_TYPES: Final = ("memory-backend-ram", "secret")
"""The ``qom-type`` values ``-object`` takes."""
CHARDEV_TYPES: Final = ("chardev-socket", "chardev-null")
"""The QOM types of the ``-chardev`` backends the command line takes (socket, null)."""

# QEMU's parents of the machine types that qemu-system-x86_64 does not have.
_FOREIGN_PARENTS: Final = {"pseries-7.2-machine": "spapr-machine"}
_GENERIC_MACHINE: Final = "none-machine"


class TypeModel:
    """The simulator's QOM types, described from ``recording``."""

    def __init__(self, recording: Recording, target: Target = X86_64) -> None:
        self.recording = recording
        qemu_types = recording.recorded_value("qom-list-types")
        parents = {str(entry["name"]): entry for entry in qemu_types}
        cpus = [
            str(cpu["typename"])
            for cpu in recording.recorded_value("query-cpu-definitions")
            if cpu["typename"]  # ppc64 lists some aliases without a type
        ]
        self.machine_types = [f"{machine.name}-machine" for machine in target.machine_types]
        names = [
            *(model.name for model in target.device_models),
            *target.board_devices,
            *self.machine_types,
            *(f"{accel}-accel" for accel in target.accelerators),
            *OBJECT_TYPES,
            *CHARDEV_TYPES,
            *cpus,
        ]
        self.types: list[dict[str, Any]] = []
        for name in dict.fromkeys(names):
            entry = parents.get(name)
            if entry is None:
                entry = {"name": name, "parent": _FOREIGN_PARENTS.get(name, "object")}
            self.types.append(entry)
        self.names = frozenset(entry["name"] for entry in self.types)
        self.not_devices = frozenset(
            [
                *self.machine_types,
                *(f"{a}-accel" for a in target.accelerators),
                *OBJECT_TYPES,
                *CHARDEV_TYPES,
            ]
        )

    def list_types(self, arguments: dict[str, Any]) -> list[dict[str, Any]]:
        """``qom-list-types``: the model's types; other arguments as recorded."""
        if not arguments:
            return list(self.types)
        return self.recording.reply("qom-list-types", arguments)  # type: ignore[no-any-return]

    def device_properties(self, typename: str) -> Any:
        """``device-list-properties``: QEMU's answer for the devices the simulator has."""
        if typename not in self.names:
            raise QMPCommandFailure(DEVICE_NOT_FOUND, f"Device '{typename}' not found")
        if typename in self.not_devices:
            raise QMPCommandFailure(
                GENERIC_ERROR, "Parameter 'typename' expects a non-abstract device type"
            )
        return self.recording.reply("device-list-properties", {"typename": typename})

    def object_properties(self, typename: str) -> Any:
        """``qom-list-properties``: QEMU's recorded answer for any class it was asked about."""
        command, arguments = "qom-list-properties", {"typename": typename}
        if self.recording.answer(command, arguments) is None:
            if typename in self.machine_types:
                arguments = {"typename": _GENERIC_MACHINE}
            elif typename not in self.names:
                raise QMPCommandFailure(DEVICE_NOT_FOUND, f"Class '{typename}' not found")
        return self.recording.reply(command, arguments)


def install(machine: Machine, recording: Recording) -> None:
    """Register the three QOM type commands, declared as QEMU 7.2 declares them."""
    model = TypeModel(recording, TARGETS[machine.config.target])
    server = machine.server

    def list_types(args: Any, ctx: CommandContext) -> list[dict[str, Any]]:
        return model.list_types(arguments_of(args))

    def device_properties(args: Any, ctx: CommandContext) -> Any:
        return model.device_properties(str(args.typename))

    def object_properties(args: Any, ctx: CommandContext) -> Any:
        return model.object_properties(str(args.typename))

    for command, handler in (
        ("qom-list-types", list_types),
        ("device-list-properties", device_properties),
        ("qom-list-properties", object_properties),
    ):
        declared = recording.declaration(command)
        server.register(command, handler, declared.args, returns=declared.returns)

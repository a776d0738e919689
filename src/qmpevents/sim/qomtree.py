"""``qom-list``: the QOM composition tree of the simulated machine, as far as it is modelled.

libvirt lists ``/machine/peripheral`` when a domain starts (to learn which
devices exist by their ids) and reads the CPU's properties under
``/machine/unattached``. The model holds the containers whose every child it
knows, with QEMU 7.2's names and types (measured):

* ``/``: ``machine`` (``child<pc-i440fx-7.2-machine>``), ``chardevs``, ``objects``;
* ``/objects``: each ``-object`` (early ones such as ``secret`` before the memory
  backends, as QEMU creates them), then the machine's default RAM backend
  (``pc.ram``) unless NUMA nodes bring their own;
* ``/chardevs``: each chardev (:mod:`qmpevents.sim.chardevs`);
* ``/machine/peripheral``: each ``-device`` with an id; ``/machine/peripheral-anon``:
  the others, as ``device[N]``.

A container lists ``type`` (a QOM class property) and then its children in
QOM's hash order (:mod:`qmpevents.sim.ghash`). Paths resolve as QEMU resolves
them: absolute, or partial (a unique object whose path ends with it).

The properties of a device or CPU are QEMU's own business, hundreds of them:
a CPU's come from QEMU 7.2's recorded answers (:mod:`qmpevents.sim.recorded`,
``qemu64``); for any other such object, and for a path in a part of the tree
the model does not hold (the board's own devices), the answer is an error that
says so, never an invented list.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from qmpevents.protocol.requests import DEVICE_NOT_FOUND
from qmpevents.server.commands import CommandContext, QMPCommandFailure
from qmpevents.sim.capabilities import MACHINE_INFO
from qmpevents.sim.config import DeviceConfig, MachineConfig
from qmpevents.sim.errors import fail
from qmpevents.sim.ghash import hash_order
from qmpevents.sim.help import machine_type_name

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["ObjectPropertyInfo", "QomTree", "device_list"]

_CONTAINERS = ("/", "/objects", "/chardevs", "/machine/peripheral", "/machine/peripheral-anon")


class QomListArguments(msgspec.Struct):
    """``qom-list`` arguments."""

    path: str


class ObjectPropertyInfo(msgspec.Struct):
    """QAPI ObjectPropertyInfo (the members QEMU 7.2 sends for ``qom-list``)."""

    name: str
    type: str


def device_list(config: MachineConfig) -> list[DeviceConfig]:
    """The ``-device``s in creation order; for a configuration not made from a command
    line, the devices its other fields describe."""
    if config.devices:
        return list(config.devices)
    devices = [DeviceConfig("virtio-serial-pci", bus) for bus in config.serial_buses]
    devices += [DeviceConfig("virtserialport", port.id) for port in config.vserports]
    devices += [DeviceConfig("pc-dimm", dimm.id) for dimm in config.dimms]
    if config.pvpanic:
        # pseries has no ISA bus: its pvpanic is the PCI model.
        devices.append(
            DeviceConfig("pvpanic-pci" if config.machine_type == "pseries" else "pvpanic")
        )
    return devices


class QomTree:
    """The modelled containers of one machine, and ``qom-list``."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine
        config = machine.config
        self.machine_type = machine_type_name(config.machine_type)
        self.children: dict[str, dict[str, str]] = {path: {} for path in _CONTAINERS}
        self._leaves: dict[str, str] = {}  # path -> QOM type, for objects listed elsewhere
        root = self.children["/"]
        root["machine"] = f"{self.machine_type}-machine"
        root["chardevs"] = root["objects"] = "container"
        self._objects(config)
        for chardev in machine.chardevs.all:
            self.children["/chardevs"][chardev.id] = f"chardev-{chardev.backend}"
        anonymous = 0
        for device in device_list(config):
            if device.id:
                self.children["/machine/peripheral"][device.id] = device.driver
            else:
                name = f"device[{anonymous}]"
                anonymous += 1
                self.children["/machine/peripheral-anon"][name] = device.driver
        for index in range(machine.cpus.present):
            self._leaves[machine.cpus.qom_path(index)] = machine.cpus.cpu_type

    def _objects(self, config: MachineConfig) -> None:
        objects = self.children["/objects"]
        listed = config.objects or [("memory-backend-ram", dimm.memdev) for dimm in config.dimms]
        for qom_type, object_id in sorted(listed, key=lambda o: o[0].startswith("memory-backend")):
            objects[object_id] = qom_type
        ram = MACHINE_INFO.get(self.machine_type)
        if ram is not None and ram.default_ram_id and not any(n.memdev for n in config.numa_nodes):
            objects[ram.default_ram_id] = "memory-backend-ram"

    def install(self) -> None:
        """Register ``qom-list``."""
        self._machine.server.register(
            "qom-list", self._qom_list, QomListArguments, returns=list[ObjectPropertyInfo]
        )

    def paths(self) -> dict[str, str]:
        """Every modelled object by absolute path, with its QOM type."""
        found = {"/": "container"}
        for parent, children in self.children.items():
            for name, qom_type in children.items():
                found[f"{parent.rstrip('/')}/{name}"] = qom_type
        found["/machine/peripheral"] = found["/machine/peripheral-anon"] = "container"
        found.update(self._leaves)
        return found

    def resolve(self, path: str) -> str | None:
        """The absolute path ``path`` names (QMPCommandFailure when it is ambiguous)."""
        known = self.paths()
        if path.startswith("/"):
            return path if path in known else None
        matches = [full for full in known if full.endswith("/" + path)]
        if len(matches) > 1:
            fail(f"Path '{path}' is ambiguous")
        return matches[0] if matches else None

    def _qom_list(self, args: QomListArguments, ctx: CommandContext) -> Any:
        path = self.resolve(args.path)
        if path is None:
            if args.path.startswith("/machine/") and not args.path.startswith(
                ("/machine/peripheral/", "/machine/peripheral-anon/")
            ):
                fail(f"qmpevents-qemu does not model the QOM object '{args.path}'")
            raise QMPCommandFailure(DEVICE_NOT_FOUND, f"Device '{args.path}' not found")
        children = self.children.get(path)
        if children is not None:
            listing = [ObjectPropertyInfo("type", "string")]
            for name in hash_order(children):
                listing.append(ObjectPropertyInfo(name, f"child<{children[name]}>"))
            return listing
        if path in self._leaves:
            return self._recorded(path)
        fail(f"qmpevents-qemu does not model the properties of '{path}'")

    def _recorded(self, path: str) -> Any:
        from qmpevents.sim import recorded

        answer = recorded.bundled(self._machine.config.target).answer("qom-list", {"path": path})
        if answer is None:
            fail(f"qmpevents-qemu knows the properties of a {self._leaves[path]} only as "
                 f"QEMU 7.2 answered libvirt: qom-list of /machine/unattached/device[0] of "
                 f"qemu-system-x86_64, not of '{path}'")  # fmt: skip
        return answer.reply()

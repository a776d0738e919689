"""``-device`` of the ``qmpevents-qemu`` command line, as QEMU 7.2 reads it.

It takes QEMU's two syntaxes: ``key=value`` lists and JSON objects. Like QEMU,
every ``-device key=value`` is created before any JSON ``-device`` (softmmu/vl.c
keeps the JSON ones on a list of their own), which decides the order of
``qom-list /machine/peripheral`` and of the first-come checks. A property's
value is checked as QEMU's visitors check it: a JSON value by its JSON type
(``Parameter 'nr' expects uint64``), a ``key=value`` one by parsing its text.

The devices are those the simulator answers for: pvpanic (ISA or PCI), virtio-serial with
its ports, pc-dimm, and the devices libvirt adds to every domain, whose QMP
side the model answers (``piix3-usb-uhci``: a child of ``/machine/peripheral``;
``virtio-balloon-pci``: ``balloon``/``query-balloon``; ``ide-hd``: an anonymous
BlockBackend in ``query-block``). Buses, PCI slots, IDE units, serial port
numbers, DIMM slots and backends, chardevs and block nodes are each claimed
once, with QEMU's message for a second claim. A property QEMU has but the
simulator cannot honour is refused by name, never dropped.
"""

from __future__ import annotations

from typing import Any, Final

from qmpevents.sim.cmdline_objects import ObjectOptions
from qmpevents.sim.config import DeviceConfig, DimmConfig, MachineConfig, VserportConfig
from qmpevents.sim.opts import OptionError, parse_bool, parse_tree
from qmpevents.sim.pci import PciBus, pci_address
from qmpevents.sim.target import TARGETS

__all__ = ["DEVICE_PROPERTIES", "DeviceOptions"]

_ANY_ID: Final = {"id": "str", "bus": "bus"}
_PCI: Final = {**_ANY_ID, "addr": "pci-addr", "multifunction": "bool"}
# Which virtio revision the guest driver may use: nothing the simulated guest shows.
_VIRTIO: Final = {"disable-modern": "bool", "disable-legacy": "on-off-auto"}
DEVICE_PROPERTIES: Final[dict[str, dict[str, str]]] = {
    "pvpanic": {**_ANY_ID, "ioport": "uint16", "events": "uint8"},
    "pvpanic-pci": {**_PCI, "events": "uint8"},
    "virtio-serial-pci": {**_PCI, **_VIRTIO, "max_ports": "uint32", "vectors": "uint32"},
    "virtserialport": {**_ANY_ID, "nr": "uint32", "chardev": "str", "name": "str"},
    "pc-dimm": {"id": "str", "memdev": "str", "node": "uint32", "slot": "int32", "addr": "uint64"},
    "piix3-usb-uhci": dict(_PCI),
    # libvirt's USB controller of a pseries domain; p2 and p3 count its USB 2 and 3 ports.
    "qemu-xhci": {**_PCI, "p2": "uint32", "p3": "uint32"},
    "virtio-balloon-pci": {
        **_PCI,
        **_VIRTIO,
        "deflate-on-oom": "bool",
        "free-page-reporting": "bool",
    },
    "ide-hd": {**_ANY_ID, "unit": "uint32", "drive": "str", "bootindex": "int32"},
    # libvirt's disk of a pseries domain, which has no IDE.
    "virtio-blk-pci": {**_PCI, **_VIRTIO, "drive": "str", "bootindex": "int32"},
}
"""The simulated device models and the properties each takes, with their QAPI types."""

_ALIASES: Final = {
    "virtio-serial": "virtio-serial-pci",
    "virtio-balloon": "virtio-balloon-pci",
    "virtio-blk": "virtio-blk-pci",
}
_RANGES: Final = {
    "uint8": (0, 0xFF), "uint16": (0, 0xFFFF), "uint32": (0, 0xFFFFFFFF),
    "uint64": (0, 2**64 - 1), "int32": (-(2**31), 2**31 - 1),
}  # fmt: skip


def _check_value(driver: str, key: str, kind: str, value: Any, from_json: bool) -> Any:
    """``value`` of property ``driver.key`` as QEMU's visitor for ``kind`` reads it."""
    if kind == "on-off-auto":
        if value not in ("on", "off", "auto"):
            raise OptionError(f"Parameter '{key}' does not accept value '{value}'")
        return value
    if kind in ("str", "bus"):
        if from_json and not isinstance(value, str):
            raise OptionError(f"Invalid parameter type for '{key}', expected: string")
        return str(value)
    if kind == "bool":
        if not from_json:
            return parse_bool(str(value), key)
        if not isinstance(value, bool):
            raise OptionError(f"Invalid parameter type for '{key}', expected: boolean")
        return value
    if kind == "pci-addr":
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise OptionError(f"Invalid parameter type for '{key}', expected int or str")
        address = pci_address(value)
        if address is None:
            raise OptionError(f"Property '{driver}.{key}' doesn't take value '{value}'")
        return address
    low, high = _RANGES[kind]
    if from_json:
        if isinstance(value, bool) or not isinstance(value, int):
            if kind.startswith("u"):
                raise OptionError(f"Parameter '{key}' expects uint64")
            raise OptionError(f"Invalid parameter type for '{key}', expected: integer")
        number = value
    else:
        try:
            number = int(str(value), 0)
        except ValueError:
            raise OptionError(f"Parameter '{key}' expects integer") from None
    if not low <= number <= high:
        raise OptionError(f"Parameter '{key}' expects {kind}_t")
    return number


class DeviceOptions:
    """The reader of ``-device`` for one command line, filling ``config``.

    ``chardevs`` holds the chardevs defined so far (``-mon`` marks the ones it
    takes in ``busy_chardevs`` before the devices are read); ``objects`` the
    memory backends that DIMMs take.
    """

    def __init__(
        self, config: MachineConfig, chardevs: dict[str, Any], objects: ObjectOptions
    ) -> None:
        self.config = config
        self.chardevs = chardevs
        self.busy_chardevs: set[str] = set()
        self.memdevs = objects.memdevs
        self.busy_memdevs = objects.busy_memdevs
        self._device_ids: set[str] = set()
        self._anonymous = 0
        self._pci: PciBus | None = None
        self._ide: dict[str, set[int]] = {}
        self._serial_ports: dict[str, set[int]] = {}
        self._drives: dict[str, str] = {}  # node or drive name -> the device using it
        self._balloon = False
        self._has_pvpanic = False

    # --- -device ----------------------------------------------------------------------

    def device(self, value: str) -> None:
        from_json = value.lstrip().startswith("{")
        tree = parse_tree(value, "driver")
        driver = tree.pop("driver", None)
        if not isinstance(driver, str):
            raise OptionError("Parameter 'driver' is missing")
        driver = _ALIASES.get(driver, driver)
        allowed = DEVICE_PROPERTIES.get(driver)
        if allowed is None or driver in TARGETS[self.config.target].lacks_devices:
            raise OptionError(f"'{driver}' is not a valid device model name")
        props: dict[str, Any] = {}
        for key, item in tree.items():
            if key in ("id", "bus") and from_json and not isinstance(item, str):
                continue  # QEMU takes these two only as strings, and ignores anything else
            kind = allowed.get(key)
            if kind is None:
                raise OptionError(f"Property '{driver}.{key}' not found")
            props[key] = _check_value(driver, key, kind, item, from_json)
        device_id = str(props.get("id", ""))
        if device_id and device_id in self._device_ids:
            raise OptionError(f"Duplicate ID '{device_id}' for device")
        path = self._path(device_id)
        getattr(self, "_" + driver.replace("-", "_"))(driver, device_id, props, path)
        if device_id:
            self._device_ids.add(device_id)
        else:
            self._anonymous += 1
        self.config.devices.append(DeviceConfig(driver, device_id, props))

    def _path(self, device_id: str) -> str:
        if device_id:
            return f"/machine/peripheral/{device_id}"
        return f"/machine/peripheral-anon/device[{self._anonymous}]"

    def _bus(self, driver: str, props: dict[str, Any], kind: str, buses: list[str]) -> str:
        """The bus the device plugs into: the one named, else the first of its kind."""
        if "bus" in props:
            if props["bus"] not in buses:
                raise OptionError(f"Bus '{props['bus']}' not found")
            return str(props["bus"])
        if not buses:
            raise OptionError(f"No '{kind}' bus found for device '{driver}'")
        return buses[0]

    def _pci_device(self, driver: str, device_id: str, props: dict[str, Any]) -> None:
        machine = self.config.machine_type
        self._bus(driver, props, "PCI", PciBus.root_buses(machine))
        if self._pci is None:
            self._pci = PciBus(machine)
        self._pci.plug(driver, device_id, props.get("addr"), bool(props.get("multifunction")))

    def _pvpanic(self, driver: str, device_id: str, props: dict[str, Any], *_: str) -> None:
        if self.config.machine_type == "pseries":
            # qemu-system-ppc64 has no ISA devices at all (measured on QEMU 7.2); the
            # x86_64 binary, which also takes pseries, refuses them there alike.
            raise OptionError(f"'{driver}' is not a valid device model name")
        isa = self.config.machine_type in ("pc", "q35")
        self._bus(driver, props, "ISA", ["isa.0"] if isa else [])
        if self._has_pvpanic:
            raise OptionError("duplicate fw_cfg file name: etc/pvpanic-port")
        self._has_pvpanic = self.config.pvpanic = True

    def _pvpanic_pci(self, driver: str, device_id: str, props: dict[str, Any], *_: str) -> None:
        # The PCI model (any machine with PCI, pseries included) has no fw_cfg port
        # file, so QEMU takes more than one.
        self._pci_device(driver, device_id, props)
        self.config.pvpanic = True

    def _virtio_serial_pci(
        self, driver: str, device_id: str, props: dict[str, Any], *_: str
    ) -> None:
        self._pci_device(driver, device_id, props)
        bus = f"{device_id}.0" if device_id else f"virtio-serial-bus.{len(self._serial_ports)}"
        self._serial_ports[bus] = set()
        self.config.serial_buses.append(
            device_id or f"virtio-serial{len(self.config.serial_buses)}"
        )

    def _virtserialport(self, driver: str, device_id: str, props: dict[str, Any], *_: str) -> None:
        bus = self._bus(driver, props, "virtio-serial-bus", list(self._serial_ports))
        used = self._serial_ports[bus]
        nr = props.get("nr")
        if nr == 0:
            raise OptionError(
                "Port number 0 on virtio-serial devices reserved for virtconsole devices "
                "for backward compatibility."
            )
        if nr is None:
            nr = next(n for n in range(1, len(used) + 2) if n not in used)
        if nr in used:
            raise OptionError(f"virtio-serial-bus: A port already exists at id {nr}")
        chardev = str(props.get("chardev", ""))
        if chardev:
            if chardev not in self.chardevs:
                raise OptionError(f"Property 'virtserialport.chardev' can't find value '{chardev}'")
            if chardev in self.busy_chardevs:
                raise OptionError(
                    f"Property 'virtserialport.chardev' can't take value '{chardev}': "
                    f"Device '{chardev}' is in use"
                )
            self.busy_chardevs.add(chardev)
        used.add(nr)
        self.config.vserports.append(
            VserportConfig(device_id, str(props.get("name", "")), bus, chardev, nr)
        )

    def _piix3_usb_uhci(self, driver: str, device_id: str, props: dict[str, Any], *_: str) -> None:
        self._pci_device(driver, device_id, props)

    def _qemu_xhci(self, driver: str, device_id: str, props: dict[str, Any], *_: str) -> None:
        self._pci_device(driver, device_id, props)

    def _virtio_balloon_pci(
        self, driver: str, device_id: str, props: dict[str, Any], *_: str
    ) -> None:
        self._pci_device(driver, device_id, props)
        if self._balloon:
            raise OptionError("Only one balloon device is supported")
        self._balloon = True

    def _ide_hd(
        self, driver: str, device_id: str, props: dict[str, Any], path: str, *_: str
    ) -> None:
        machine = self.config.machine_type
        count, units = (2, 2) if machine == "pc" else (6, 1) if machine == "q35" else (0, 0)
        buses = [f"ide.{n}" for n in range(count)]
        for bus in buses:
            self._ide.setdefault(bus, set())
        if "bus" in props:
            bus = self._bus(driver, props, "IDE", buses)
        else:
            free = [b for b in buses if len(self._ide[b]) < units]
            bus = self._bus(driver, props, "IDE", free or buses)
        unit = props.get("unit")
        if unit is None:
            unit = min(set(range(units)) - self._ide[bus], default=units)
        if unit >= units:
            raise OptionError(f"Can't create IDE unit {unit}, bus supports only {units} units")
        if unit in self._ide[bus]:
            raise OptionError(f"IDE unit {unit} is in use")
        self._take_drive(driver, device_id or path, props)
        self._ide[bus].add(unit)
        props["bus"], props["unit"] = bus, unit

    def _virtio_blk_pci(
        self, driver: str, device_id: str, props: dict[str, Any], path: str, *_: str
    ) -> None:
        self._pci_device(driver, device_id, props)
        self._take_drive(driver, device_id or path, props)

    def _take_drive(self, driver: str, user: str, props: dict[str, Any]) -> None:
        """Attach the disk's ``drive=`` (a -drive id or a node name) to ``user``, once."""
        drive = props.get("drive")
        if drive is None:
            raise OptionError("No drive specified")
        if drive not in _block_names(self.config):
            raise OptionError(f"Property '{driver}.drive' can't find value '{drive}'")
        if drive in self._drives:
            raise OptionError(
                f"Permission conflict on node '{drive}': permissions 'write' are both required "
                f"by block device '{self._drives[drive]}' (uses node '{drive}' as 'root' child) "
                f"and unshared by block device '{user}' (uses node '{drive}' as 'root' child)."
            )
        self._drives[drive] = user

    def _pc_dimm(self, driver: str, device_id: str, props: dict[str, Any], *_: str) -> None:
        config = self.config
        if not config.slots:
            raise OptionError("no slots where allocated, please specify the 'slots' option")
        memdev = str(props.get("memdev", ""))
        if memdev not in self.memdevs:
            raise OptionError(f"Property 'pc-dimm.memdev' can't find value '{memdev}'")
        if memdev in self.busy_memdevs:
            raise OptionError(f"can't use already busy memdev: {memdev}")
        node = int(props.get("node", 0))
        nodes = len(config.numa_nodes)
        if (nodes and node >= nodes) or (not nodes and node > 0):
            raise OptionError(
                f"'DIMM property node has value {node}' which exceeds the number of numa "
                f"nodes: {nodes or 1}"
            )
        taken = {dimm.slot for dimm in config.dimms}
        slot = int(props.get("slot", -1))
        if slot == -1:
            if len(taken) >= config.slots:
                raise OptionError("no free slots left")
            slot = min(set(range(config.slots)) - taken)
        elif not 0 <= slot < config.slots:
            raise OptionError(f"invalid slot number {slot}, valid range is [0-{config.slots - 1}]")
        elif slot in taken:
            raise OptionError(f"slot {slot} is busy")
        size = self.memdevs[memdev]
        used = config.ram_size + sum(dimm.size for dimm in config.dimms)
        if config.maxmem and used + size > config.maxmem:
            raise OptionError(
                f"not enough space, currently 0x{config.maxmem - used:x} in use of total "
                f"space for memory devices 0x{config.maxmem - config.ram_size:x}"
            )
        self.busy_memdevs.add(memdev)
        config.dimms.append(DimmConfig(device_id, memdev, size, slot, node))


def _block_names(config: MachineConfig) -> set[str]:
    """Every node-name and drive (BlockBackend) name of ``-blockdev``/``-drive``."""
    names: set[str] = set()

    def walk(options: Any) -> None:
        if isinstance(options, dict):
            if isinstance(options.get("node-name"), str):
                names.add(options["node-name"])
            for value in options.values():
                walk(value)
        elif isinstance(options, list):
            for value in options:
                walk(value)

    for drive in config.drives:
        walk(drive.options)
        if drive.device:
            names.add(drive.device)
    return names

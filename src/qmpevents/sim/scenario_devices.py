"""Devices added to a scenario's machine from outside its file, and a summary of them.

``qmpevents serve`` adds what its options ask for (``--pvpanic``, ``--vserport
ID``, ``--dimm ID:SIZE``) to the machine of a scenario or to its plain machine,
as QEMU's ``-device pvpanic``, ``-device virtio-serial-pci -device
virtserialport,id=ID`` and ``-object memory-backend-ram,id=mem-ID,size=SIZE
-device pc-dimm,id=ID,memdev=mem-ID`` would, with ``-m`` slots and maxmem
grown to fit the DIMMs. :func:`describe_devices` says what the machine has, so
that a guest action on a device it lacks (which QEMU only logs) is explained.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Final

from qmpevents.errors import ConfigError
from qmpevents.sim.config import DimmConfig, MachineConfig, VserportConfig
from qmpevents.sim.opts import OptionError, parse_size

__all__ = [
    "SERIAL_BUS",
    "DeviceOptionError",
    "add_devices",
    "describe_devices",
    "parse_dimm",
    "size_error",
]

SERIAL_BUS: Final = "virtio-serial0"
"""The qdev id of the virtio-serial bus added for the first virtserialport."""

# QEMU's qdev ids: a letter, then letters, digits, '-', '.' and '_'.
_DEVICE_ID: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]*$")


class DeviceOptionError(ConfigError):
    """A device option that cannot be added; ``option`` names it (``--dimm``)."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option
        self.message = message


def parse_dimm(spec: str) -> DimmConfig:
    """``ID:SIZE`` (``dimm1:128M``; a bare size is MiB) as a ``pc-dimm`` and its backend."""
    device_id, sep, size_text = spec.partition(":")
    if not sep or not device_id or not size_text:
        raise DeviceOptionError("--dimm", f"{spec!r}: expected ID:SIZE (dimm1:128M)")
    _check_id(device_id, "--dimm")
    try:
        size = parse_size(size_text, "M", name="size")
    except OptionError as error:
        raise DeviceOptionError("--dimm", f"{spec!r}: {size_error(error)}") from None
    if size <= 0:
        raise DeviceOptionError("--dimm", f"{spec!r}: a DIMM needs a size above 0")
    return DimmConfig(device_id, f"mem-{device_id}", size)


def size_error(error: OptionError) -> str:
    """QEMU's size error on one line, with the suffixes of a friendly option."""
    first = str(error).splitlines()[0]
    return f"{first} (suffix k, M, G or T; a bare number is MiB)"


def _check_id(device_id: str, option: str) -> None:
    if not _DEVICE_ID.match(device_id):
        raise DeviceOptionError(
            option, f"{device_id!r}: a device id is a letter, then letters, digits, '-', '.' or '_'"
        )


def add_devices(
    config: MachineConfig,
    *,
    vserports: Sequence[str] = (),
    dimms: Sequence[str] = (),
    pvpanic: bool | None = None,
) -> None:
    """Add ports ``vserports``, DIMMs ``dimms`` (``ID:SIZE``) and set ``pvpanic`` (unless None).

    Then give the DIMMs the ``-m`` slots and maxmem they need (a larger value
    is kept). Raises :class:`DeviceOptionError` for a bad value or a duplicate id.
    """
    if pvpanic is not None:
        config.pvpanic = pvpanic
    taken = {port.id for port in config.vserports} | {dimm.id for dimm in config.dimms}
    if vserports and not config.serial_buses:
        config.serial_buses.append(SERIAL_BUS)
    taken |= set(config.serial_buses)
    for port in vserports:
        _check_id(port, "--vserport")
        if port in taken:
            raise DeviceOptionError("--vserport", f"Duplicate device ID '{port}'")
        taken.add(port)
        config.vserports.append(VserportConfig(port, bus=config.serial_buses[0]))
    for spec in dimms:
        dimm = parse_dimm(spec)
        if dimm.id in taken:
            raise DeviceOptionError("--dimm", f"Duplicate device ID '{dimm.id}'")
        taken.add(dimm.id)
        config.dimms.append(dimm)
    if config.dimms:
        config.slots = max(config.slots, len(config.dimms))
        needed = config.ram_size + sum(dimm.size for dimm in config.dimms)
        config.maxmem = max(config.maxmem, needed)


def _size(value: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("k", 10)):
        if value and value % (1 << shift) == 0:
            return f"{value >> shift}{unit}"
    return str(value)


def describe_devices(config: MachineConfig) -> list[str]:
    """What the machine is made of and the guest action each device serves, a line each.

    The last line names the kinds of device it lacks and the options that add them.
    """
    memory = f"machine {config.machine_type}, {_size(config.ram_size)} RAM"
    if config.dimms:
        memory += f" (-m {_size(config.ram_size)},slots={config.slots},"
        memory += f"maxmem={_size(config.maxmem)})"
    lines = [memory]
    if config.pvpanic:
        model = "pvpanic-pci" if config.machine_type == "pseries" else "pvpanic"
        lines.append(f"device {model} (guest action x-sim-pvpanic)")
    for port in config.vserports:
        bus = port.bus or (config.serial_buses[0] if config.serial_buses else "?")
        lines.append(f"device virtserialport {port.id} on {bus} (guest action x-sim-vserport)")
    for dimm in config.dimms:
        lines.append(
            f"device pc-dimm {dimm.id}, {_size(dimm.size)} "
            "(device_del, then guest action x-sim-unplug-reject or x-sim-unplug-policy)"
        )
    kinds = (
        ("pvpanic", "--pvpanic", config.pvpanic),
        ("virtserialport", "--vserport ID", bool(config.vserports)),
        ("pc-dimm", "--dimm ID:SIZE", bool(config.dimms)),
    )
    missing = [(kind, option) for kind, option, present in kinds if not present]
    if missing:
        names = ", ".join(kind for kind, _ in missing)
        options = ", ".join(option for _, option in missing)
        lines.append(f"no {names} (add with {options})")
    return lines

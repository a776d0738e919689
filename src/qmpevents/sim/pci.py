"""The root PCI bus of the simulated machine: which slot and function each device takes.

QEMU 7.2 (hw/pci/pci.c) puts a device at the ``addr`` it is given (``slot`` or
``slot.function``, hexadecimal, or a devfn number in JSON) or at the first slot
whose function 0 is free, and refuses a taken function naming its user
(``PCI: slot 1 function 1 not available for piix3-usb-uhci, in use by
piix3-ide,id=(null)``). Functions above 0 need a multifunction device at
function 0. The board's own devices come first: on ``pc`` the host bridge at
0.0 and the PIIX3 (ISA, IDE, ACPI) at 1.0, 1.1, 1.3; on ``q35`` the host bridge
at 0.0 and the ICH9 (LPC, AHCI, SMBus) at 31.0, 31.2, 31.3.
"""

from __future__ import annotations

import re
from typing import Final

from qmpevents.sim.opts import OptionError

__all__ = ["PciBus", "pci_address"]

_SLOTS: Final = 32
_FUNCTIONS: Final = 8
# (slot, function) -> (device, multifunction) of each board, as -nodefaults leaves it.
_BOARD: Final = {
    "pc": {(0, 0): ("i440FX", False), (1, 0): ("PIIX3", True), (1, 1): ("piix3-ide", False),
           (1, 3): ("PIIX4_PM", False)},
    "q35": {(0, 0): ("mch", False), (31, 0): ("ICH9-LPC", True), (31, 2): ("ich9-ahci", False),
            (31, 3): ("ICH9-SMB", False)},
    "pseries": {},
}  # fmt: skip
_ROOT_BUS: Final = {"pc": "pci.0", "q35": "pcie.0", "pseries": "pci.0"}
_ADDRESS: Final = re.compile(r"^([0-9a-fA-F]{1,2})(?:\.([0-7]))?$")


def pci_address(value: int | str) -> tuple[int, int] | None:
    """``addr`` as ``(slot, function)``: ``"0x1.0x2"``, ``"3"`` or a devfn number; None if bad."""
    if isinstance(value, int):
        return (value >> 3, value & 7) if 0 <= value < _SLOTS * _FUNCTIONS else None
    text = value.replace("0x", "").replace("0X", "")
    match = _ADDRESS.match(text)
    if match is None:
        return None
    slot = int(match[1], 16)
    if slot >= _SLOTS:
        return None
    return slot, int(match[2] or "0")


class PciBus:
    """The root bus of one machine type and the devices plugged into it."""

    def __init__(self, machine_type: str) -> None:
        self._used = {
            address: (f"{name},id=(null)", multifunction)
            for address, (name, multifunction) in _BOARD.get(machine_type, {}).items()
        }

    @staticmethod
    def root_buses(machine_type: str) -> list[str]:
        """The names of the machine's PCI buses (none without PCI)."""
        bus = _ROOT_BUS.get(machine_type)
        return [bus] if bus else []

    def plug(
        self, driver: str, device_id: str, address: tuple[int, int] | None, multifunction: bool
    ) -> tuple[int, int]:
        """Take ``address`` (or the first free slot) for ``driver``; OptionError as QEMU."""
        if address is None:
            for slot in range(_SLOTS):
                if (slot, 0) not in self._used:
                    address = (slot, 0)
                    break
            else:
                raise OptionError(f"PCI: no slot/function available for {driver}, all in use")
        slot, function = address
        user = self._used.get(address)
        if user is not None:
            raise OptionError(
                f"PCI: slot {slot} function {function} not available for {driver}, "
                f"in use by {user[0]}"
            )
        first = self._used.get((slot, 0))
        if function and first is not None and not first[1]:
            raise OptionError(
                f"PCI: single function device can't be populated in function {slot:x}.{function:x}"
            )
        name = f"{driver},id={device_id or '(null)'}"
        self._used[address] = (name, multifunction)
        return address

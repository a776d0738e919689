"""The guest's physical memory map, as QEMU 7.2 lays it out for the simulated machines.

Guest RAM holds no data in the simulator (it reads as zeros), but its layout
decides the sizes QEMU reports: ``dump-guest-memory`` walks the mapped blocks
(``total`` in DUMP_COMPLETED) and migration counts every RAM block
(``ram.total`` in ``query-migrate``). The figures were measured on QEMU 7.2 with
``-machine pc``: a 64 MiB guest dumps 64 MiB + 256 KiB (the BIOS image mapped
below 4 GiB) and migrates 64 MiB + 520 KiB (BIOS, option ROM and ACPI blobs).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from qmpevents.sim.config import MachineConfig

__all__ = ["GuestMemory", "MemoryBlock"]

_GIB: Final = 1 << 30
_LOW_RAM_END: Final = 0xC0000  # RAM below the option ROM area
_PC_ROM: Final = (0xC0000, 0x20000)
_ISA_BIOS: Final = (0xE0000, 0x20000)
_HIGH_RAM_START: Final = 0x100000
_BIOS: Final = (0xFFFC0000, 0x40000)
_PC_LOWMEM: Final = 0xE0000000  # pc: RAM above this moves above 4 GiB
_MIGRATION_EXTRA_PC: Final = 532480  # non-RAM blocks migrated with -machine pc


@dataclass(frozen=True, slots=True)
class MemoryBlock:
    """One guest-physical range backed by RAM or ROM."""

    start: int
    size: int

    @property
    def end(self) -> int:
        """First address after the block."""
        return self.start + self.size


class GuestMemory:
    """The memory map of one machine configuration (``pc``/``q35`` or ``pseries``)."""

    def __init__(self, config: MachineConfig) -> None:
        self.ram_size = config.ram_size
        self.machine_type = config.machine_type
        self._x86 = config.machine_type != "pseries"
        self.dimm_base = self._device_memory_base()
        self.dimm_addresses: dict[str, int] = {}
        address = self.dimm_base
        dimm_blocks: list[MemoryBlock] = []
        for dimm in config.dimms:
            self.dimm_addresses[dimm.id] = address
            dimm_blocks.append(MemoryBlock(address, dimm.size))
            address += dimm.size
        self.blocks = self._ram_blocks() + dimm_blocks

    def _ram_blocks(self) -> list[MemoryBlock]:
        if not self._x86:
            return [MemoryBlock(0, self.ram_size)]
        below = min(self.ram_size, _PC_LOWMEM)
        blocks = [MemoryBlock(0, min(below, _LOW_RAM_END))]
        if below > _LOW_RAM_END:
            blocks += [MemoryBlock(*_PC_ROM), MemoryBlock(*_ISA_BIOS)]
        if below > _HIGH_RAM_START:
            blocks.append(MemoryBlock(_HIGH_RAM_START, below - _HIGH_RAM_START))
        blocks.append(MemoryBlock(*_BIOS))
        if self.ram_size > below:
            blocks.append(MemoryBlock(4 * _GIB, self.ram_size - below))
        return blocks

    def _device_memory_base(self) -> int:
        if not self._x86:
            # spapr: hotpluggable memory starts at the next GiB after RAM
            return -(-self.ram_size // _GIB) * _GIB
        above = max(0, self.ram_size - _PC_LOWMEM)
        return 4 * _GIB + -(-above // _GIB) * _GIB

    @property
    def dump_size(self) -> int:
        """Bytes a dump without a filter covers (DumpQueryResult ``total``)."""
        return sum(block.size for block in self.blocks)

    @property
    def migration_size(self) -> int:
        """Bytes of RAM blocks migration sends (``ram.total`` of ``query-migrate``)."""
        extra = _MIGRATION_EXTRA_PC if self._x86 else 0
        dimms = sum(block.size for block in self.blocks if block.start >= self.dimm_base)
        return self.ram_size + extra + dimms

    def filtered(self, begin: int, length: int) -> list[MemoryBlock]:
        """The parts of the blocks inside ``[begin, begin + length)`` (a dump filter)."""
        end = begin + length
        parts: list[MemoryBlock] = []
        for block in self.blocks:
            start, stop = max(block.start, begin), min(block.end, end)
            if start < stop:
                parts.append(MemoryBlock(start, stop - start))
        return parts

"""The files ``dump-guest-memory`` writes: an ELF core and a flattened kdump.

Both are written for real, with the simulated guest's memory map, so that
``crash``/``readelf``-style tools can open them and their sizes match QEMU's.
Guest RAM reads as zeros, so the ELF data area is extended with ``ftruncate``
(a sparse file) rather than written, when the target is a regular file.
"""

from __future__ import annotations

import os
import stat
import struct
import time
import zlib
from collections.abc import Sequence
from typing import Final

from qmpevents.sim.memory import MemoryBlock

__all__ = ["ElfLayout", "kdump_flat_header", "kdump_image", "write_zeros"]

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")
_SHDR = struct.Struct("<IIQQQQIIQQ")
_PHDR = struct.Struct("<IIQQQQQQ")
_NHDR = struct.Struct("<III")
_SHSTRTAB: Final = b"\0.shstrtab\0"
_ET_CORE: Final = 4
_PT_LOAD: Final = 1
_PT_NOTE: Final = 4
_SHT_STRTAB: Final = 3
# An x86 guest that has not left real mode gets 32-bit notes (EM_386), as in
# QEMU's dump of a freshly started pc machine.
_MACHINES: Final = {"x86": 3, "ppc64": 21}
_PRSTATUS_SIZE: Final = 144
_QEMU_CPUSTATE_SIZE: Final = 440
_ZERO_CHUNK: Final = bytes(1 << 20)


def _note(name: bytes, note_type: int, desc: bytes) -> bytes:
    name_z = name + b"\0"
    pad_name = b"\0" * (-len(name_z) % 4)
    pad_desc = b"\0" * (-len(desc) % 4)
    return _NHDR.pack(len(name_z), len(desc), note_type) + name_z + pad_name + desc + pad_desc


def _cpu_notes(cpus: int) -> bytes:
    notes = []
    for index in range(cpus):
        prstatus = bytearray(_PRSTATUS_SIZE)
        struct.pack_into("<I", prstatus, 24, index + 1)  # pr_pid: QEMU numbers CPUs from 1
        cpustate = bytearray(_QEMU_CPUSTATE_SIZE)
        struct.pack_into("<II", cpustate, 0, 1, _QEMU_CPUSTATE_SIZE)  # version, size
        notes.append(_note(b"CORE", 1, bytes(prstatus)) + _note(b"QEMU", 0, bytes(cpustate)))
    return b"".join(notes)


class ElfLayout:
    """QEMU 7.2's ELF core layout for ``blocks`` (paging off).

    Header, two section headers, one PT_NOTE and one PT_LOAD per block, the CPU
    notes, the memory in block order, then the section-name string table.
    """

    def __init__(self, blocks: Sequence[MemoryBlock], cpus: int, arch: str = "x86") -> None:
        notes = _cpu_notes(cpus)
        phnum = 1 + len(blocks)
        shoff = _EHDR.size
        phoff = shoff + 2 * _SHDR.size
        note_offset = phoff + phnum * _PHDR.size
        self.data_offset = note_offset + len(notes)
        self.data_size = sum(block.size for block in blocks)
        strtab_offset = self.data_offset + self.data_size
        ident = b"\x7fELF\x02\x01\x01" + bytes(9)
        # e_ehsize is 8 in QEMU 7.2's output (a QEMU quirk kept for byte equality).
        header = _EHDR.pack(
            ident, _ET_CORE, _MACHINES[arch], 1, 0, phoff, shoff, 0, 8, _PHDR.size, phnum,
            _SHDR.size, 2, 1,
        )  # fmt: skip
        sections = bytes(_SHDR.size) + _SHDR.pack(
            1, _SHT_STRTAB, 0, 0, strtab_offset, len(_SHSTRTAB), 0, 0, 0, 0
        )
        phdrs = [_PHDR.pack(_PT_NOTE, 0, note_offset, 0, 0, len(notes), len(notes), 0)]
        offset = self.data_offset
        for block in blocks:
            phdrs.append(
                _PHDR.pack(_PT_LOAD, 0, offset, block.start, block.start, block.size, block.size, 0)
            )
            offset += block.size
        self.header = header + sections + b"".join(phdrs) + notes
        self.trailer = _SHSTRTAB

    @property
    def file_size(self) -> int:
        """The size of the finished file."""
        return self.data_offset + self.data_size + len(self.trailer)


def write_zeros(fd: int, offset: int, count: int) -> None:
    """Extend the dump by ``count`` zero bytes at ``offset``: a hole in a regular file."""
    if stat.S_ISREG(os.fstat(fd).st_mode):
        os.ftruncate(fd, offset + count)
        os.lseek(fd, offset + count, os.SEEK_SET)
        return
    while count:
        step = min(count, len(_ZERO_CHUNK))
        written = os.write(fd, _ZERO_CHUNK[:step])
        count -= written


# --- kdump (makedumpfile's flattened format, zlib pages) ------------------------------

_PAGE: Final = 4096
_FLAT_SIGNATURE: Final = b"makedumpfile".ljust(16, b"\0")
_DISKDUMP_HEADER = struct.Struct("<8si65s65s65s65s65s65s2xqqIiiIIIIIi")
_SUB_HEADER_SIZE: Final = _PAGE
_PAGE_DESC = struct.Struct("<qIIQ")


def _flat_record(offset: int, data: bytes) -> bytes:
    return struct.pack(">qq", offset, len(data)) + data


def kdump_flat_header() -> bytes:
    """The 4 KiB start header of a flattened makedumpfile stream."""
    return (_FLAT_SIGNATURE + struct.pack(">qq", 1, 1)).ljust(_PAGE, b"\0")


def kdump_image(blocks: Sequence[MemoryBlock], cpus: int) -> list[bytes]:
    """The records of a kdump-zlib dump after the flat header, end marker included.

    Every page of the simulated guest is zero, so, as QEMU does for zero pages,
    all page descriptors share one compressed zero page.
    """
    max_mapnr = max(block.end for block in blocks) // _PAGE
    bitmap = bytearray(-(-max_mapnr // (8 * _PAGE)) * _PAGE)
    dumpable = 0
    for block in blocks:
        for pfn in range(block.start // _PAGE, block.end // _PAGE):
            bitmap[pfn >> 3] |= 1 << (pfn & 7)
            dumpable += 1
    bitmap_blocks = 2 * len(bitmap) // _PAGE
    uname = [name.encode()[:64] for name in ("Linux", "", "", "", "x86_64", "")]
    header = _DISKDUMP_HEADER.pack(
        b"KDUMP   ", 6, *uname, int(time.time()), 0, 1, _PAGE, 1, 0, 0, bitmap_blocks,
        max_mapnr, 0, cpus,
    )  # fmt: skip
    offset_sub = _PAGE
    offset_bitmap = offset_sub + _SUB_HEADER_SIZE
    offset_desc = offset_bitmap + 2 * len(bitmap)
    offset_data = offset_desc + dumpable * _PAGE_DESC.size
    zero_page = zlib.compress(bytes(_PAGE))
    desc = _PAGE_DESC.pack(offset_data, len(zero_page), 1, 0)  # flags 1: DUMP_DH_COMPRESSED_ZLIB
    return [
        _flat_record(0, header.ljust(_PAGE, b"\0")),
        _flat_record(offset_sub, bytes(_SUB_HEADER_SIZE)),
        _flat_record(offset_bitmap, bytes(bitmap) * 2),
        _flat_record(offset_desc, desc * dumpable),
        _flat_record(offset_data, zero_page),
        struct.pack(">qq", -1, -1),
    ]

"""Guests for a real QEMU: 512-byte boot sectors that run in real mode at 0x7c00.

Each stands in for a guest OS in one recording or test: it idles, writes the
pvpanic port, dirties memory, panics on a key press, shuts down on the ACPI
power button, refuses DIMM unplugs, or writes all of its RAM (as a guest OS
comes to use its memory).
Used by tools/record_reference.py and by the tests that run QEMU under libvirt.
"""

from __future__ import annotations

__all__ = [
    "boot_sector",
    "dirtying_guest",
    "idle_guest",
    "panic_guest",
    "panic_on_key_guest",
    "power_button_guest",
    "ram_writing_guest",
    "refusing_unplug_guest",
]


def boot_sector(code: bytes) -> bytes:
    """A 512-byte MBR running ``code`` in real mode at 0x7c00."""
    if len(code) > 510:
        raise ValueError("boot code over 510 bytes")
    return code + bytes(510 - len(code)) + b"\x55\xaa"


def idle_guest() -> bytes:
    # cli; hlt; jmp back to hlt
    return boot_sector(bytes([0xFA, 0xF4, 0xEB, 0xFD]))


def panic_guest(values: list[int]) -> bytes:
    # cli; mov dx, 0x505; (mov al, V; out dx, al)...; hlt; jmp back to hlt
    code = bytearray([0xFA, 0xBA, 0x05, 0x05])
    for value in values:
        code += bytes([0xB0, value, 0xEE])
    code += bytes([0xF4, 0xEB, 0xFD])
    return boot_sector(bytes(code))


def dirtying_guest() -> bytes:
    """Rewrites 512 KiB (linear 0x10000-0x8ffff) forever.

    Under TCG, QEMU 7.2 only notices re-dirtied pages after a bitmap sync once
    the TLB is flushed, so every sweep toggles CR0.WP, which flushes it.
    """
    code = bytearray([0xFA, 0xFC])  # cli; cld
    outer = len(code)
    code += bytes([0xBB, 0x00, 0x10])  # mov bx, 0x1000
    sweep = len(code)
    code += bytes([0x8E, 0xC3, 0x31, 0xFF, 0xB9, 0x00, 0x80, 0xF3, 0xAB])  # es=bx; di=0; rep stosw
    code += bytes([0x81, 0xC3, 0x00, 0x10, 0x81, 0xFB, 0x00, 0x90])  # bx += 0x1000; cmp 0x9000
    code += bytes([0x72, (sweep - (len(code) + 2)) & 0xFF])  # jb sweep
    code += bytes([0x0F, 0x20, 0xC0, 0x66, 0x35, 0x00, 0x00, 0x01, 0x00, 0x0F, 0x22, 0xC0])
    code += bytes([0xEB, (outer - (len(code) + 2)) & 0xFF])  # jmp outer
    return boot_sector(bytes(code))


def refusing_unplug_guest() -> bytes:
    """Refuses every unplug of the DIMM in slot 0, as a Linux guest reports it.

    QEMU's ACPI memory hotplug registers (docs/specs/acpi_mem_hotplug.rst, I/O
    0xa00, slot 0 selected): it polls the slot's remove-event bit, clears it (as
    the firmware's scan method does), then writes the two ``_OST`` reports of
    Linux's acpi_device_hotplug() for an eject it cannot do: event 3 (eject
    request) with status 0x84 (in progress), then with 0x82 (device busy).
    """
    code = bytearray([0xFA])  # cli
    poll = len(code)
    code += bytes([0xBA, 0x14, 0x0A])  # mov dx, 0xa14
    test = len(code)
    code += bytes([0xEC, 0xA8, 0x04])  # in al, dx; test al, 4 (remove event)
    code += bytes([0x74, (test - (len(code) + 2)) & 0xFF])  # jz test
    code += bytes([0xB0, 0x04, 0xEE])  # mov al, 4; out dx, al (clear the remove event)
    for status in (0x84, 0x82):
        # mov dl, 4; mov al, 3; out dx, al (_OST event); mov dl, 8; mov al, S; out dx, al
        code += bytes([0xB2, 0x04, 0xB0, 0x03, 0xEE, 0xB2, 0x08, 0xB0, status, 0xEE])
    code += bytes([0xEB, (poll - (len(code) + 2)) & 0xFF])  # jmp poll
    return boot_sector(bytes(code))


def panic_on_key_guest() -> bytes:
    """A 512-byte boot sector: drain the keyboard, wait for a key, panic through pvpanic."""
    code = bytearray([0xFA])  # cli
    # drain: in al,0x64; test al,1; jz wait; in al,0x60; jmp drain
    code += bytes([0xE4, 0x64, 0xA8, 0x01, 0x74, 0x04, 0xE4, 0x60, 0xEB, 0xF6])
    # wait: in al,0x64; test al,1; jz wait
    code += bytes([0xE4, 0x64, 0xA8, 0x01, 0x74, 0xFA])
    # mov dx,0x505; mov al,1; out dx,al; hlt; jmp back to hlt
    code += bytes([0xBA, 0x05, 0x05, 0xB0, 0x01, 0xEE, 0xF4, 0xEB, 0xFD])
    return boot_sector(bytes(code))


def ram_writing_guest(megabytes: int) -> bytes:
    """Writes every byte from 1 MiB up to ``megabytes`` MiB once, then halts.

    A guest OS comes to touch its memory (page cache, allocations); this one does
    it at once, so that the emulator's resident memory shows what a busy guest
    costs. It enters 32-bit protected mode with flat segments (SeaBIOS leaves A20
    on) and fills the range with ``rep stosl``.
    """
    if megabytes < 2:
        raise ValueError("the guest writes from 1 MiB up: give it at least 2 MiB")
    dwords = (megabytes - 1) << 18
    code = bytearray([0xFA, 0x31, 0xC0, 0x8E, 0xD8])  # cli; xor ax,ax; mov ds,ax
    code += bytes([0x66, 0x0F, 0x01, 0x16, 0x50, 0x7C])  # lgdtl [0x7c50]
    code += bytes([0x0F, 0x20, 0xC0, 0x0C, 0x01, 0x0F, 0x22, 0xC0])  # cr0 |= PE
    code += bytes([0x66, 0xEA, 0x1B, 0x7C, 0x00, 0x00, 0x08, 0x00])  # ljmpl 0x08:0x7c1b
    # 32-bit: ds = es = 0x10; edi = 1 MiB; ecx = dwords; eax = pattern; cld; rep stosl
    code += bytes([0x66, 0xB8, 0x10, 0x00, 0x8E, 0xD8, 0x8E, 0xC0])
    code += bytes([0xBF, 0x00, 0x00, 0x10, 0x00, 0xB9]) + dwords.to_bytes(4, "little")
    code += bytes([0xB8, 0x5A, 0x5A, 0x5A, 0x5A, 0xFC, 0xF3, 0xAB])
    code += bytes([0xF4, 0xEB, 0xFD])  # hlt; jmp back to hlt
    code += bytes(0x38 - len(code))  # the GDT at 0x7c38: null, flat code, flat data
    code += bytes([0] * 8)
    code += bytes([0xFF, 0xFF, 0x00, 0x00, 0x00, 0x9A, 0xCF, 0x00])
    code += bytes([0xFF, 0xFF, 0x00, 0x00, 0x00, 0x92, 0xCF, 0x00])
    code += bytes([0x17, 0x00, 0x38, 0x7C, 0x00, 0x00])  # its descriptor, at 0x7c50
    return boot_sector(bytes(code))


def power_button_guest() -> bytes:
    """Shuts the machine down (ACPI S5) when the power button is pressed, as an OS does.

    SeaBIOS puts the ACPI PM registers of pc and q35 at 0x600. The guest enables
    the power button event (PWRBTN_EN, bit 8 of PM1a_EN at 0x602: QEMU sets the
    status only when it is enabled), polls PM1a_STS for PWRBTN_STS, which
    ``system_powerdown`` sets, then writes SLP_EN with sleep type 0, QEMU's
    soft-off, to PM1a_CNT (0x604).
    """
    code = bytearray([0xFA])  # cli
    code += bytes([0xBA, 0x02, 0x06, 0xB8, 0x00, 0x01, 0xEF])  # mov dx, 0x602; mov ax, 0x100; out
    poll = len(code)
    code += bytes([0xBA, 0x00, 0x06, 0xED])  # mov dx, 0x600; in ax, dx
    code += bytes([0xA9, 0x00, 0x01])  # test ax, 0x100
    code += bytes([0x74, (poll - (len(code) + 2)) & 0xFF])  # jz poll
    code += bytes([0xBA, 0x04, 0x06, 0xB8, 0x00, 0x20, 0xEF])  # mov dx, 0x604; mov ax, 0x2000; out
    code += bytes([0xF4, 0xEB, 0xFD])  # hlt; jmp back to hlt
    return boot_sector(bytes(code))

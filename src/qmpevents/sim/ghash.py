"""The iteration order of a GLib hash table of strings, as QEMU's QOM lists its children.

QEMU keeps an object's properties (its children among them) in a ``GHashTable``
keyed by name, so ``qom-list`` and ``query-chardev`` list them in the table's
slot order, reversed (each answer is built by prepending). That order follows
from GLib 2.74's ghash.c, reproduced here: ``g_str_hash`` (djb2 over signed
chars), slot ``(hash * 11) % prime`` with 32-bit wrap-around, quadratic probing,
the table growing from 8 slots when 15/16 full and rehashed in place. Measured
against QEMU 7.2 (``/chardevs``, ``/objects``, ``/machine/peripheral``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

__all__ = ["g_str_hash", "hash_order"]

_U32: Final = 0xFFFFFFFF
_MIN_SHIFT: Final = 3
# prime_mod[] of ghash.c: the modulus for each table size 1 << shift.
_PRIMES: Final = (
    1, 2, 3, 7, 13, 31, 61, 127, 251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521,
    131071, 262139, 524287, 1048573, 2097143, 4194301, 8388593, 16777213, 33554393,
)  # fmt: skip


def g_str_hash(key: str) -> int:
    """GLib's ``g_str_hash()`` of ``key`` (its UTF-8 bytes, each a signed char)."""
    value = 5381
    for byte in key.encode():
        value = (value * 33 + (byte - 256 if byte >= 128 else byte)) & _U32
    return value


class _Table:
    def __init__(self) -> None:
        self._set_shift(_MIN_SHIFT)
        self.hashes = [0] * self.size
        self.keys: list[str | None] = [None] * self.size
        self.nodes = 0
        self.occupied = 0

    def _set_shift(self, shift: int) -> None:
        self.size = 1 << shift
        self.mod = _PRIMES[shift]
        self.mask = self.size - 1

    def _slot(self, hash_value: int) -> int:
        return ((hash_value * 11) & _U32) % self.mod

    def insert(self, key: str) -> None:
        hash_value = max(g_str_hash(key), 2)  # 0 and 1 mark unused and removed slots
        index, step = self._slot(hash_value), 0
        while self.hashes[index]:
            if self.hashes[index] == hash_value and self.keys[index] == key:
                return
            step += 1
            index = (index + step) & self.mask
        self.hashes[index], self.keys[index] = hash_value, key
        self.nodes += 1
        self.occupied += 1
        if self.size <= self.occupied + self.occupied // 16:
            self._resize()

    def _resize(self) -> None:
        old_size = self.size
        wanted, shift = int(self.nodes * 1.333), 0
        while wanted:
            shift, wanted = shift + 1, wanted >> 1
        self._set_shift(max(shift, _MIN_SHIFT))
        if self.size > old_size:
            self.hashes += [0] * (self.size - old_size)
            self.keys += [None] * (self.size - old_size)
        placed = [False] * max(self.size, old_size)
        for index in range(old_size):
            hash_value = self.hashes[index]
            if hash_value < 2 or placed[index]:
                if hash_value < 2:
                    self.hashes[index] = 0
                continue
            key = self.keys[index]
            self.hashes[index], self.keys[index] = 0, None
            while True:  # move it home, evicting whoever is there (resize_map in ghash.c)
                slot, step = self._slot(hash_value), 0
                while placed[slot]:
                    step += 1
                    slot = (slot + step) & self.mask
                placed[slot] = True
                evicted_hash, evicted_key = self.hashes[slot], self.keys[slot]
                self.hashes[slot], self.keys[slot] = hash_value, key
                if evicted_hash < 2:
                    break
                hash_value, key = evicted_hash, evicted_key
        if self.size < old_size:
            del self.hashes[self.size :], self.keys[self.size :]
        self.occupied = self.nodes


def hash_order(keys: Iterable[str]) -> list[str]:
    """``keys``, inserted in this order, as QEMU lists them (the table's order, reversed)."""
    table = _Table()
    for key in keys:
        table.insert(key)
    return [key for key in reversed(table.keys) if key is not None]

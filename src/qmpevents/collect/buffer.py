"""A bounded FIFO that drops its oldest items when full and counts every drop.

Every sink keeps records that are not yet stored in one of these: memory stays
bounded whatever happens downstream, and a loss is a number someone can read
(``dropped``), never silent. Not thread-safe: a sink that shares one between
threads guards it with its own lock.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Generic, TypeVar

__all__ = ["DropOldestBuffer"]

T = TypeVar("T")


class DropOldestBuffer(Generic[T]):
    """At most ``limit`` items in arrival order; overflow drops the oldest into ``dropped``."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"buffer limit must be at least 1, got {limit}")
        self.limit = limit
        self.dropped = 0
        self._items: deque[T] = deque()

    def __len__(self) -> int:
        return len(self._items)

    def append(self, item: T) -> None:
        """Add ``item`` at the end, dropping (and counting) the oldest if full."""
        if len(self._items) >= self.limit:
            self._items.popleft()
            self.dropped += 1
        self._items.append(item)

    def oldest(self) -> T:
        """The oldest item, left in place (``IndexError`` when empty)."""
        return self._items[0]

    def take(self, count: int) -> list[T]:
        """Remove and return up to ``count`` of the oldest items."""
        count = min(count, len(self._items))
        return [self._items.popleft() for _ in range(count)]

    def restore(self, items: Iterable[T]) -> None:
        """Put back ``items`` taken earlier (and not stored) in front of the newer ones.

        If that exceeds the limit, the oldest are dropped and counted, as on append.
        """
        self._items.extendleft(reversed(list(items)))
        excess = len(self._items) - self.limit
        for _ in range(max(0, excess)):
            self._items.popleft()
        self.dropped += max(0, excess)

    def drop_all(self) -> int:
        """Drop (and count) every item; return how many there were."""
        count = len(self._items)
        self._items.clear()
        self.dropped += count
        return count

"""How long to wait between connection attempts: the one backoff schedule.

Both the client's own reconnect and every event source's retry loop draw their
delays from a :class:`Backoff`, so "reconnect with backoff" has one definition.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits of ``initial`` seconds, doubling up to ``maximum``.

    ``give_up_after`` bounds the time without a connection (``None``: never give up).
    """

    initial: float = 0.1
    maximum: float = 5.0
    give_up_after: float | None = None

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.maximum:
            raise ValueError(f"need 0 < initial <= maximum, got {self}")
        if self.give_up_after is not None and self.give_up_after <= 0:
            raise ValueError(f"need give_up_after > 0, got {self}")

    def delays(self) -> Iterator[float]:
        """The waits before each attempt, forever (the caller keeps the deadline)."""
        delay = self.initial
        while True:
            yield delay
            delay = min(delay * 2, self.maximum)

"""Whether a VM's run state changed while nobody listened.

QEMU does not replay events: a VM that stopped, panicked or shut down while a
client was disconnected is, to that client, still in its old state. After each
reconnect the client asks ``query-status``; :class:`RunStateTracker` compares
the answer with what was last seen (the previous answer, as moved on by STOP
and RESUME events) and yields a :class:`RunState` marker when they differ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from qmpevents.schema.events import Event

__all__ = ["RunState", "RunStateTracker", "parse_status"]


@dataclass(frozen=True, slots=True)
class RunState:
    """After a reconnect, the VM's run state differs from the last one seen.

    ``status`` and ``running`` are ``query-status``'s; ``previous`` is the status
    known before the connection was lost (``None`` when only STOP told us the VM
    was not running). A VM that stopped or panicked while nobody listened is
    thereby never silently taken to be still running.
    """

    status: str
    running: bool
    previous: str | None
    was_running: bool


def parse_status(value: Any) -> tuple[str, bool] | None:
    """``query-status``'s return value as (status, running); None when malformed."""
    if not isinstance(value, Mapping):
        return None
    status, running = value.get("status"), value.get("running")
    if not isinstance(status, str) or not isinstance(running, bool):
        return None
    return status, running


class RunStateTracker:
    """The last run state seen on a connection, carried across reconnects."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        # (status, running); status None after a STOP (QEMU has several stopped states).
        self._last: tuple[str | None, bool] | None = None

    def observe(self, events: Iterable[Event]) -> None:
        """Move the state on by the STOP and RESUME events among ``events``."""
        for event in events:
            name = event.name
            if name == "RESUME":
                self._last = ("running", True)
            elif name == "STOP":
                self._last = (None, False)

    def connected(self, now: tuple[str, bool] | None) -> RunState | None:
        """The marker for a (re)connection that found the VM in state ``now``, if changed."""
        if now is None:
            return None
        last, self._last = self._last, now
        if last is None:
            return None
        status, running = now
        previous, was_running = last
        if running != was_running or (previous is not None and status != previous):
            return RunState(status, running, previous, was_running)
        return None

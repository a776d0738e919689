"""The run state of the machine a server speaks for, with QEMU's STOP/RESUME rules.

QEMU's ``do_vm_stop()`` only acts (and only sends STOP) when the VM is running,
so ``stop`` on a paused or prelaunch VM changes nothing and sends nothing;
``vm_prepare_start()`` likewise sends RESUME only when the VM was not running.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

__all__ = ["NEEDS_RESET", "VMState"]

NEEDS_RESET: Final = frozenset({"internal-error", "shutdown"})
"""Run states from which ``cont`` is refused until a reset (``runstate_needs_reset``)."""


class VMState:
    """The RunState of QAPI's StatusInfo and the transitions that emit events.

    ``emit`` is called with the event name (``STOP``, ``RESUME``) when a
    transition sends one. ``status`` starts as ``"prelaunch"`` for a VM started
    paused (QEMU's ``-S``), else ``"running"``.
    """

    def __init__(self, emit: Callable[[str], object], *, start_paused: bool = False) -> None:
        self._emit = emit
        self._has_run = asyncio.Event()
        self._is_running = asyncio.Event()
        self.status = "prelaunch" if start_paused else "running"

    @property
    def status(self) -> str:
        """QAPI RunState: ``running``, ``paused``, ``prelaunch``, ``shutdown``..."""
        return self._status

    @status.setter
    def status(self, value: str) -> None:
        self._status = value
        if value == "running":
            self._has_run.set()
            self._is_running.set()
        else:
            self._is_running.clear()

    async def first_run(self) -> None:
        """Return once the VM has been running (at once if it ever was)."""
        await self._has_run.wait()

    async def until_running(self) -> None:
        """Return once the VM runs (at once if it does): when the guest can act."""
        await self._is_running.wait()

    @property
    def running(self) -> bool:
        """True when the status is ``running`` (StatusInfo ``running``)."""
        return self.status == "running"

    def stop(self, status: str = "paused") -> bool:
        """Stop a running VM into ``status`` and send STOP; False (and nothing sent) otherwise."""
        if not self.running:
            return False
        self.status = status
        self._emit("STOP")
        return True

    def start(self) -> bool:
        """Start a stopped VM and send RESUME; False (and nothing sent) if already running."""
        if self.running:
            return False
        self.status = "running"
        self._emit("RESUME")
        return True

    def reset(self) -> None:
        """The state change of a system reset: a VM that is not running goes to prelaunch."""
        if not self.running and self.status not in ("inmigrate", "finish-migrate"):
            self.status = "prelaunch"

"""The power button: ``system_powerdown``, and a guest that shuts down when it is pressed.

QEMU 7.2 sends POWERDOWN for ``system_powerdown`` on any machine and raises the
ACPI power button event (pc, q35; EPOW on pseries). What follows is the
guest's doing. The simulated guest acts as a guest OS with ACPI does, as soon
as its vCPUs run (at once when running, else once ``cont`` starts them): it
shuts the machine down. QEMU then sends SHUTDOWN ``{"guest": true, "reason":
"guest-shutdown"}`` and exits with status 0, or, under ``-no-shutdown`` /
``-action shutdown=pause``, stops instead (STOP, run state ``shutdown``, from
which ``cont`` needs a ``system_reset`` first). Measured on QEMU 7.2 with a
boot sector that writes the ACPI sleep register when the button is pressed:
POWERDOWN, the reply, then SHUTDOWN and STOP within a millisecond. A
``-machine none`` has no guest, so nothing follows its POWERDOWN.

This is how ``virsh shutdown`` and ``virsh reboot`` work on a simulated domain:
libvirt presses the button, and on SHUTDOWN either ends QEMU or (reboot)
resets and continues it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from qmpevents.server.commands import CommandContext

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["PowerButton"]


class PowerButton:
    """``system_powerdown`` and the guest's answer to it."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine
        self._pending: asyncio.Task[None] | None = None

    def install(self) -> None:
        """Register ``system_powerdown``."""
        self._machine.server.register("system_powerdown", self._powerdown)

    def _powerdown(self, _: object, ctx: CommandContext) -> dict[str, Any]:
        server = self._machine.server
        server.emit("POWERDOWN")
        if self._machine.config.machine_type != "none" and self._pending is None:
            ctx.after_reply(self._press)
        return {}

    def _press(self) -> None:
        self._pending = self._machine.server.spawn(self._guest_shuts_down(), "acpi-guest")

    async def _guest_shuts_down(self) -> None:
        vm = self._machine.server.vm
        await asyncio.sleep(0)
        await vm.until_running()
        self._pending = None
        self.guest_shutdown()

    def guest_shutdown(self) -> None:
        """The guest powers the machine off (ACPI S5): SHUTDOWN, then stop or exit."""
        server = self._machine.server
        server.emit("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})
        if self._machine.config.shutdown_action == "pause":
            server.vm.stop("shutdown")
        else:
            server.request_close(0)

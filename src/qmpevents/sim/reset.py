"""``system_reset`` as QEMU 7.2 runs it on a machine: the reboot action, then the firmware.

``qemu_system_reset_request()`` (softmmu/runstate.c) first looks at the reboot
action (``-action reboot=``, ``-no-reboot``): under ``shutdown`` a reset
request is a shutdown request with the same reason, so ``system_reset`` sends
SHUTDOWN ``{"guest": false, "reason": "host-qmp-system-reset"}`` and QEMU
exits after the reply, or stops (STOP, run state ``shutdown``) under
``-no-shutdown``. Otherwise it sends RESET and resets the machine.

What follows a reset is the firmware's doing, and was measured on QEMU 7.2
with a boot-sector guest: on pc and q35, SeaBIOS resets the machine once more
itself, about 40 ms after its vCPUs start again (at once when running, else
after ``cont``): RESET ``{"guest": true, "reason": "guest-reset"}``. It does
not on a cold start, and pseries' SLOF does not. libvirt's ``virsh reboot``
(``system_reset`` then ``cont``) therefore ends RESET, RESUME, RESET on pc.
A pseries reset applies the machine's capabilities again, with their TCG
warnings on stderr (measured on qemu-system-ppc64 7.2).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Final

from qmpevents.server.commands import CommandContext, CommandSpec

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["SystemReset"]

_FIRMWARE_RESET_AFTER: Final = 0.04  # seconds of vCPU time before SeaBIOS resets
_SEABIOS_MACHINES: Final = frozenset({"pc", "q35"})


class SystemReset:
    """``system_reset`` with the machine's reboot action, and SeaBIOS's reset after it."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine
        self._firmware: asyncio.Task[None] | None = None

    def install(self) -> None:
        """Give the server's ``system_reset`` this machine's behaviour (its place kept)."""
        self._machine.server.commands.replace(CommandSpec("system_reset", self._system_reset))

    def _system_reset(self, _: object, ctx: CommandContext) -> dict[str, Any]:
        self.request(guest=False, reason="host-qmp-system-reset", ctx=ctx)
        return {}

    def request(self, *, guest: bool, reason: str, ctx: CommandContext | None = None) -> None:
        """``qemu_system_reset_request()``: a reset, or a shutdown under reboot=shutdown."""
        config = self._machine.config
        server = self._machine.server
        if config.reboot_action == "shutdown":
            server.emit("SHUTDOWN", {"guest": guest, "reason": reason})
            if config.shutdown_action == "pause":
                server.vm.stop("shutdown")
            elif ctx is not None:
                ctx.after_reply(server.request_close)
            else:
                server.request_close(0)
            return
        if config.machine_type == "pseries":  # the machine's reset re-applies its caps
            self._machine.apply_spapr_caps()
        server.emit("RESET", {"guest": guest, "reason": reason})
        server.vm.reset()
        if not guest and config.machine_type in _SEABIOS_MACHINES and self._firmware is None:
            self._firmware = server.spawn(self._seabios_resets(), "seabios-reset")

    async def _seabios_resets(self) -> None:
        vm = self._machine.server.vm
        while True:
            await vm.until_running()
            await asyncio.sleep(_FIRMWARE_RESET_AFTER)
            if vm.running:  # else stopped before SeaBIOS got there: wait for it to run again
                break
        self._firmware = None
        self.request(guest=True, reason="guest-reset")

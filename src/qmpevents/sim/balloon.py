"""The virtio balloon: ``balloon``, ``query-balloon`` and BALLOON_CHANGE, as QEMU 7.2 has them.

libvirt sets the balloon target when a domain starts (``balloon``, the
domain's current memory) and reads it back (``query-balloon``). QEMU only
passes the target to the guest's balloon driver; the size the guest reports
back is ``actual``, and each change of it is BALLOON_CHANGE (rate-limited to
one a second). A guest without a driver (a firmware-only guest, as libvirt's
test domains are) never reports, so ``actual`` stays the full memory: measured.

The simulated guest has no driver until it acts: ``x-sim-balloon {"actual":
BYTES}`` is its driver reporting that the guest now has ``BYTES`` of memory
(all of it minus the pages it gave the balloon; whole 4 KiB pages).

Errors as QEMU's (hw/virtio/virtio-balloon.c, softmmu/balloon.c): without a
balloon device ``DeviceNotActive`` "No balloon device has been activated";
a target of 0 or less "Parameter 'target' expects a size"; a target above the
memory is taken as the memory. "Memory" is RAM plus plugged DIMMs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

import msgspec

from qmpevents.server.commands import CommandContext, QMPCommandFailure
from qmpevents.sim.errors import fail
from qmpevents.sim.qomtree import device_list

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["Balloon", "BalloonChangeData", "BalloonInfo"]

_PAGE: Final = 4096  # VIRTIO_BALLOON_PFN_SHIFT


class BalloonArguments(msgspec.Struct):
    """``balloon`` arguments."""

    value: int


class BalloonInfo(msgspec.Struct):
    """QAPI BalloonInfo."""

    actual: int


class BalloonChangeData(msgspec.Struct):
    """BALLOON_CHANGE members."""

    actual: int


class GuestBalloonArguments(msgspec.Struct):
    """``x-sim-balloon``: the guest memory the guest's balloon driver reports."""

    actual: int


def _inactive() -> QMPCommandFailure:
    return QMPCommandFailure("DeviceNotActive", "No balloon device has been activated")


class Balloon:
    """The balloon device of a machine (if it has one) and its commands."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine
        config = machine.config
        self.present = any(d.driver == "virtio-balloon-pci" for d in device_list(config))
        self.memory = config.ram_size + sum(dimm.size for dimm in config.dimms)
        self.target = self.memory
        self.actual = self.memory

    def install(self) -> None:
        """Register ``balloon``, ``query-balloon``, BALLOON_CHANGE and the guest's action."""
        server = self._machine.server
        server.register_event("BALLOON_CHANGE", BalloonChangeData)
        server.register("balloon", self._balloon, BalloonArguments)
        server.register("query-balloon", self._query, returns=BalloonInfo)
        server.register("x-sim-balloon", self._guest, GuestBalloonArguments)

    def _balloon(self, args: BalloonArguments, ctx: CommandContext) -> dict[str, Any]:
        if not self.present:
            raise _inactive()
        if args.value <= 0:
            fail("Parameter 'target' expects a size")
        self.target = min(args.value, self.memory)
        return {}

    def _query(self, _: object, ctx: CommandContext) -> BalloonInfo:
        if not self.present:
            raise _inactive()
        return BalloonInfo(self.actual)

    def _guest(self, args: GuestBalloonArguments, ctx: CommandContext) -> dict[str, Any]:
        if not self.present:
            fail("The machine has no balloon device (-device virtio-balloon-pci)")
        given = self.memory - args.actual
        if not 0 <= given < self.memory or given % _PAGE:
            fail(
                f"'actual' must be the guest memory ({self.memory}) minus whole "
                f"{_PAGE}-byte pages, more than 0"
            )
        if args.actual != self.actual:
            self.actual = args.actual
            self._machine.server.emit("BALLOON_CHANGE", BalloonChangeData(args.actual))
        return {}

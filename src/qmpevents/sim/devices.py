"""Guest-visible devices: pvpanic, virtio-serial ports and pc-dimm, with their guest actions.

The guest's side is played by QMP commands in QEMU's experimental ``x-`` style
(listed by ``query-commands``):

* ``x-sim-pvpanic {"value": V}``: the guest writes byte V to the pvpanic port.
  Bit 0 (panicked) wins over bit 1 (crash loaded), as in hw/misc/pvpanic.c, and
  the panic is handled by ``-action panic=`` / ``shutdown=`` as in
  softmmu/runstate.c: ``pause`` sends GUEST_PANICKED{pause} and STOP
  (``guest-panicked``); ``shutdown`` and ``exit-failure`` send
  GUEST_PANICKED{poweroff} and SHUTDOWN{guest-panic} and QEMU exits (status 0,
  or 1 for ``exit-failure``) after the reply, unless ``shutdown=pause`` (or
  ``-no-shutdown``) turns that into the pause case; ``none`` sends
  GUEST_PANICKED{run}. Neither event is rate-limited.
* ``x-sim-os-term {"message": M}``: a pseries guest's RTAS call ibm,os-term,
  which Linux makes when it panics there (pseries has no pvpanic port; libvirt's
  ``<panic model='pseries'/>``). QEMU prints ``OS terminated: M`` (up to 511
  bytes, to the first NUL) and handles the panic as above (measured on
  qemu-system-ppc64 7.2, tests/data/qemu-7.2/os_term.json).
* ``x-sim-vserport {"id": ID, "open": B}``: the guest driver's PORT_OPEN on the
  ``virtserialport`` with qdev id ID: VSERPORT_CHANGE, throttled per id, sent
  again for a port already in that state; an unknown id does nothing.
* ``x-sim-unplug-reject {"id": ID}``: the guest refuses the pending unplug of
  DIMM ID; nothing when no unplug is pending. How QEMU 7.2 reports it depends on
  the machine. pseries (spapr): MEM_UNPLUG_ERROR, then DEVICE_UNPLUG_GUEST_ERROR
  twice. pc and q35 (ACPI): the guest's ``_OST`` reports, as a Linux guest writes
  them to the memory hotplug registers (drivers/acpi/scan.c): ACPI_DEVICE_OST
  with status 0x84 (eject in progress), then 0x82 (device busy), which libvirt
  takes as the guest's refusal. On x86 QEMU sends MEM_UNPLUG_ERROR only when its
  own unplug fails after the guest ejected the DIMM, which cannot happen for a
  pc-dimm.
* ``x-sim-unplug-policy {"answer": A}``: how the guest answers the DIMM unplugs
  asked from now on. ``ignore`` (the default, a guest without memory hot-unplug
  support): the unplug stays pending. ``refuse`` (a guest whose memory cannot
  be taken offline): the guest refuses each request right after ``device_del``
  returns, as above, so that a caller that waits for the answer (libvirt's
  ``detach-device``) gets it.

The guest answers only while its vCPUs run: a refusal due while the machine
is paused (``-S``, ``stop``) comes after ``cont``, as from a real guest.
Choosing ``refuse`` also answers the unplugs already waiting.

``device_del`` starts a DIMM unplug (the guest must answer), removes a
``virtserialport`` at once (DEVICE_DELETED), refuses the ISA pvpanic, and
leaves a PCI device's unplug pending on pc and pseries (no simulated guest
ejects one) while q35's root bus refuses it. A second ``device_del`` of a DIMM
whose unplug is pending is refused on pseries ("already in progress"); on pc
and q35 QEMU asks the guest again.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any, Final

import msgspec

from qmpevents.schema.events import DeviceDeletedData
from qmpevents.server.commands import CommandContext
from qmpevents.sim.config import UnplugAnswer
from qmpevents.sim.errors import device_not_found, fail

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["Devices"]


class PvpanicArguments(msgspec.Struct):
    """``x-sim-pvpanic``: the byte the guest writes to the pvpanic I/O port."""

    value: int


class OsTermArguments(msgspec.Struct):
    """``x-sim-os-term``: the message the guest passes to RTAS ibm,os-term."""

    message: str = ""


class VserportArguments(msgspec.Struct):
    """``x-sim-vserport``: the port's qdev id and the guest's PORT_OPEN value."""

    id: str
    open: bool


class DeviceIdArguments(msgspec.Struct):
    """Arguments naming a device by its qdev id (``device_del``, ``x-sim-unplug-reject``)."""

    id: str


class UnplugPolicyArguments(msgspec.Struct):
    """``x-sim-unplug-policy``: the guest's answer to the DIMM unplugs asked from now on."""

    answer: UnplugAnswer


class MemoryDeviceData(msgspec.Struct, kw_only=True):
    """QAPI PCDIMMDeviceInfo."""

    id: str
    addr: int
    size: int
    slot: int
    node: int
    memdev: str
    hotplugged: bool
    hotpluggable: bool


class MemoryDeviceInfo(msgspec.Struct):
    """QAPI MemoryDeviceInfo, ``dimm`` branch."""

    type: str
    data: MemoryDeviceData


_PCI_DRIVERS: Final = frozenset(
    {
        "virtio-serial-pci",
        "virtio-balloon-pci",
        "piix3-usb-uhci",
        "qemu-xhci",
        "pvpanic-pci",
        "virtio-blk-pci",
    }
)

_PANICKED = 1
_CRASH_LOADED = 2

# ACPI _OST of an Eject Request (source 3), as Linux reports a memory eject it
# cannot do: "in progress" first, then "device busy" (memory it cannot offline).
_OST_EJECT_REQUEST: Final = 3
_OST_EJECT_IN_PROGRESS: Final = 0x84
_OST_DEVICE_BUSY: Final = 0x82


class Devices:
    """The machine's pvpanic, virtio-serial ports and DIMMs."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine
        config = machine.config
        self.ports: dict[str, bool] = {port.id: False for port in config.vserports}
        named = [(d.driver, d.id) for d in config.devices if d.id]
        self.isa_devices = {"pvpanic"} | {i for driver, i in named if driver == "pvpanic"}
        self.pci_devices = set(config.serial_buses) | {i for d, i in named if d in _PCI_DRIVERS}
        self.pci_unplug_pending: set[str] = set()
        self.dimms = {dimm.id: dimm for dimm in config.dimms}
        self.unplug_pending: set[str] = set()
        self.unplug_answer: UnplugAnswer = "ignore"

    def install(self) -> None:
        """Register ``device_del``, ``query-memory-devices`` and the guest actions."""
        server = self._machine.server
        server.register("device_del", self._device_del, DeviceIdArguments)
        server.register(
            "query-memory-devices", self._query_memory_devices, returns=list[MemoryDeviceInfo]
        )
        server.register("x-sim-pvpanic", self._pvpanic, PvpanicArguments)
        server.register("x-sim-os-term", self._os_term, OsTermArguments)
        server.register("x-sim-vserport", self._vserport, VserportArguments)
        server.register("x-sim-unplug-reject", self._unplug_reject, DeviceIdArguments)
        server.register("x-sim-unplug-policy", self._unplug_policy, UnplugPolicyArguments)

    # --- pvpanic --------------------------------------------------------------------

    def _pvpanic(self, args: PvpanicArguments, ctx: CommandContext) -> Any:
        if not self._machine.config.pvpanic:
            fail("The machine has no pvpanic device (-device pvpanic or pvpanic-pci)")
        if not 0 <= args.value <= 0xFF:
            fail("Parameter 'value' expects uint8")
        if args.value & _PANICKED:
            self.guest_panicked(ctx)
        elif args.value & _CRASH_LOADED:
            self._machine.server.emit("GUEST_CRASHLOADED", {"action": "run"})
        return {}

    def _os_term(self, args: OsTermArguments, ctx: CommandContext) -> Any:
        machine_type = self._machine.config.machine_type
        if machine_type != "pseries":
            fail(f"ibm,os-term is an RTAS call of the pseries machine, not of {machine_type}")
        # QEMU reads 511 bytes of guest memory and prints them up to the first NUL.
        message = args.message.encode()[:511].split(b"\0", 1)[0]
        self._machine.error_report(f"OS terminated: {message.decode(errors='replace')}")
        self.guest_panicked(ctx)
        return {}

    def guest_panicked(self, ctx: CommandContext | None) -> None:
        """``qemu_system_guest_panicked()`` under the machine's -action settings."""
        config = self._machine.config
        server = self._machine.server
        pause_on_shutdown = config.shutdown_action == "pause"
        if config.panic_action == "pause" or (
            config.panic_action == "shutdown" and pause_on_shutdown
        ):
            server.emit("GUEST_PANICKED", {"action": "pause"})
            server.vm.stop("guest-panicked")
        elif config.panic_action in ("shutdown", "exit-failure"):
            server.emit("GUEST_PANICKED", {"action": "poweroff"})
            server.emit("SHUTDOWN", {"guest": True, "reason": "guest-panic"})
            if pause_on_shutdown:
                server.vm.stop("shutdown")
                return
            status = 1 if config.panic_action == "exit-failure" else 0
            if ctx is not None:
                ctx.after_reply(lambda: server.request_close(status))
            else:
                server.request_close(status)
        else:
            server.emit("GUEST_PANICKED", {"action": "run"})

    # --- virtio-serial --------------------------------------------------------------

    def _vserport(self, args: VserportArguments, ctx: CommandContext) -> Any:
        if args.id not in self.ports:
            # QEMU only logs an unknown port id; so do we, so the silence is explained.
            known = ", ".join(sorted(self.ports)) or "none"
            print(
                f"{self._machine.program}: virtio-serial-bus: Unexpected port id {args.id!r}"
                f" (ports: {known})",
                file=self._machine.stderr,
            )
            return {}
        self.ports[args.id] = args.open
        self._machine.server.emit("VSERPORT_CHANGE", {"id": args.id, "open": args.open})
        return {}

    # --- DIMMs and device_del ---------------------------------------------------------

    def _device_del(self, args: DeviceIdArguments, ctx: CommandContext) -> Any:
        device = args.id
        if device in self.dimms:
            if self._machine.migration.active:
                fail("device_del not allowed while migrating")
            if not self._acpi and device in self.unplug_pending:
                fail(f"Memory unplug already in progress for device {device}")
            self.unplug_pending.add(device)
            if self.unplug_answer == "refuse":
                ctx.after_reply(partial(self._answer_when_running, device))
            return {}
        if device in self.ports:
            del self.ports[device]
            path = f"/machine/peripheral/{device}"
            self._machine.server.emit("DEVICE_DELETED", DeviceDeletedData(device=device, path=path))
            return {}
        if device in self.isa_devices:
            fail("Bus 'isa.0' does not support hotplugging")
        if device in self.pci_devices:
            return self._pci_unplug(device)
        device_not_found(device)

    def _pci_unplug(self, device: str) -> Any:
        """A PCI device's unplug request: the guest must eject it, and none here does.

        As measured on QEMU 7.2: pc's pci.0 hotplugs through ACPI and pseries
        through its DRCs, so the request stays pending; q35's root bus pcie.0 has
        no hotplug (devices go on root ports for that).
        """
        machine_type = self._machine.config.machine_type
        if machine_type == "q35":
            fail("Bus 'pcie.0' does not support hotplugging")
        if device in self.pci_unplug_pending:
            if machine_type == "pseries":
                fail(f"PCI device unplug already in progress for device {device}")
            fail(f"Device {device} is already in the process of unplug")
        self.pci_unplug_pending.add(device)
        return {}

    def _unplug_reject(self, args: DeviceIdArguments, ctx: CommandContext) -> Any:
        if args.id not in self.dimms:
            device_not_found(args.id)
        self._guest_refuses(args.id)
        return {}

    def _unplug_policy(self, args: UnplugPolicyArguments, ctx: CommandContext) -> Any:
        self.unplug_answer = args.answer
        if args.answer == "refuse":
            # The guest now answers the requests it has left waiting, too.
            for device in sorted(self.unplug_pending):
                ctx.after_reply(partial(self._answer_when_running, device))
        return {}

    def _answer_when_running(self, device: str) -> None:
        """The guest answers once its vCPUs run: at once, or after ``cont``."""

        async def answer() -> None:
            await asyncio.sleep(0)
            await self._machine.server.vm.until_running()
            self._guest_refuses(device)

        self._machine.server.spawn(answer(), f"guest-unplug-{device}")

    @property
    def _acpi(self) -> bool:
        """pc and q35 hotplug memory through ACPI; pseries (spapr) through its DRCs."""
        return self._machine.config.machine_type in ("pc", "q35")

    def _guest_refuses(self, device: str) -> None:
        """The guest refuses the pending unplug of DIMM ``device``, reported as QEMU 7.2 does."""
        if device not in self.unplug_pending:
            return
        self.unplug_pending.discard(device)
        server = self._machine.server
        if self._acpi:
            for status in (_OST_EJECT_IN_PROGRESS, _OST_DEVICE_BUSY):
                info = {
                    "device": device,
                    "source": _OST_EJECT_REQUEST,
                    "status": status,
                    "slot": str(self._slots()[device]),
                    "slot-type": "DIMM",
                }
                server.emit("ACPI_DEVICE_OST", {"info": info})
            return
        message = f"Memory hotunplug rejected by the guest for device {device}"
        server.emit("MEM_UNPLUG_ERROR", {"device": device, "msg": message})
        path = {"device": device, "path": f"/machine/peripheral/{device}"}
        for _ in range(2):
            # QEMU 7.2 reports the rejection from both the DRC and the memory code.
            self._machine.stderr.write(
                f"{self._machine.program}: Device hotunplug rejected by the guest "
                f"for device {device}\n"
            )
            server.emit("DEVICE_UNPLUG_GUEST_ERROR", path)

    def _slots(self) -> dict[str, int]:
        """Each DIMM's slot: the one it was given, else its place among the DIMMs."""
        return {
            dimm.id: dimm.slot if dimm.slot >= 0 else index
            for index, dimm in enumerate(self.dimms.values())
        }

    def _query_memory_devices(self, _: object, ctx: CommandContext) -> list[MemoryDeviceInfo]:
        addresses = self._machine.memory.dimm_addresses
        slots = self._slots()
        return [
            MemoryDeviceInfo(
                "dimm",
                MemoryDeviceData(
                    id=dimm.id,
                    addr=addresses[dimm.id],
                    size=dimm.size,
                    slot=slots[dimm.id],
                    node=dimm.node,
                    memdev=f"/objects/{dimm.memdev}",
                    hotplugged=False,
                    hotpluggable=True,
                ),
            )
            for dimm in self.dimms.values()
        ]

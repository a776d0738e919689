"""Typed models of QMP events, their registry, and the generic fallback.

Each modeled event is a frozen msgspec ``Struct`` tagged on the wire member
``event``, with ``timestamp`` and (when the event has members) ``data``. ``data``
structs list their members in QAPI schema order and use Python-style attribute
names with QEMU's wire names as msgspec field names. Optional members default to
``None`` and are omitted on encode.

The current QAPI schema is the authority. Differences from QEMU 7.2 (the reference
recordings) are noted on the affected classes.
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import msgspec

from qmpevents.schema.members import unknown_members
from qmpevents.schema.types import (
    AcpiOstInfo,
    DumpQueryResult,
    GuestPanicAction,
    GuestPanicInformation,
    MigrationStatus,
    QuorumOpType,
    ShutdownCause,
    Timestamp,
)

__all__ = [
    "EVENT_TYPES",
    "RAW_KEY",
    "AcpiDeviceOst",
    "AcpiDeviceOstData",
    "DeviceDeleted",
    "DeviceDeletedData",
    "DeviceUnplugGuestError",
    "DeviceUnplugGuestErrorData",
    "DumpCompleted",
    "DumpCompletedData",
    "Event",
    "GenericEvent",
    "GuestCrashloaded",
    "GuestCrashloadedData",
    "GuestPanicked",
    "GuestPanickedData",
    "KnownEvent",
    "MemUnplugError",
    "MemUnplugErrorData",
    "Migration",
    "MigrationData",
    "MigrationPass",
    "MigrationPassData",
    "ModeledEvent",
    "Powerdown",
    "QuorumFailure",
    "QuorumFailureData",
    "QuorumReportBad",
    "QuorumReportBadData",
    "Reset",
    "ResetData",
    "Resume",
    "Shutdown",
    "ShutdownData",
    "Stop",
    "VserportChange",
    "VserportChangeData",
    "known_event_names",
]

# Where the received bytes live in an event's instance ``__dict__``: the bytes are
# not a wire member, so they must stay out of the Struct's fields (and out of encode).
RAW_KEY = "_raw"
"""Key of the received bytes in an event instance's ``__dict__`` (see ``raw``)."""


class _EventBase(msgspec.Struct, frozen=True, dict=True):
    """What every event offers, modeled or not: ``raw`` and ``extra_members()``."""

    @property
    def raw(self) -> bytes | None:
        """The exact bytes QEMU sent, or ``None`` for an event built in Python."""
        raw: bytes | None = self.__dict__.get(RAW_KEY)
        return raw

    def extra_members(self) -> dict[str, Any]:
        """Members of ``data`` that the model does not know, computed from ``raw``.

        Keys are paths below ``data`` (``"new-member"``, ``"result.progress"``);
        values are the decoded JSON values. Empty for events built in Python and for
        :class:`GenericEvent`, whose ``data`` already keeps every member.
        """
        return {}


def _timestamp_dict(timestamp: Timestamp) -> dict[str, int]:
    return {"seconds": timestamp.seconds, "microseconds": timestamp.microseconds}


def bind_raw(event: _EventBase, raw: bytes) -> None:
    """Record the bytes an event was decoded from (for the decoder only)."""
    event.__dict__[RAW_KEY] = raw


class KnownEvent(_EventBase, frozen=True, dict=True, tag_field="event"):
    """Base of every modeled event; ``name`` is the wire event name (the tag)."""

    timestamp: Timestamp

    @property
    def name(self) -> str:
        """The event name as on the wire, e.g. ``"QUORUM_REPORT_BAD"``."""
        return str(self.__struct_config__.tag)

    def extra_members(self) -> dict[str, Any]:
        """Members of ``data`` that the model does not know (see the base class)."""
        raw = self.raw
        if raw is None:
            return {}
        return unknown_members(raw, type(self))

    def to_message(self) -> dict[str, Any]:
        """The event as a QMP message: ``timestamp``, ``event``, then ``data`` if any.

        ``data`` members come in schema order with wire names, absent optional
        members left out; an event without members has no ``data`` key, as on the wire.
        """
        message: dict[str, Any] = {"timestamp": _timestamp_dict(self.timestamp), "event": self.name}
        data = getattr(self, "data", None)
        if data is not None:
            message["data"] = msgspec.to_builtins(data)
        return message


class _Data(msgspec.Struct, frozen=True, omit_defaults=True, gc=False):
    """Base of event ``data`` structs; ``omit_defaults`` leaves absent optional members out.

    Subclasses restate ``frozen`` (mypy reads each class on its own) and set
    ``kw_only``, which msgspec does not inherit: it lets an optional member precede a
    required one, as QAPI allows, so that fields keep schema order.
    """


# --- the seven seed events -------------------------------------------------------


class DumpCompletedData(_Data, frozen=True, kw_only=True):
    """DUMP_COMPLETED members; ``error`` is present only when the dump failed."""

    result: DumpQueryResult
    error: str | None = None


class DumpCompleted(KnownEvent, frozen=True, tag="DUMP_COMPLETED"):
    """A guest memory dump finished (successfully or not)."""

    data: DumpCompletedData


class GuestPanickedData(_Data, frozen=True, kw_only=True):
    """GUEST_PANICKED / GUEST_CRASHLOADED members.

    ``info`` is a GuestPanicInformation union on ``type``. QEMU 7.2 knows only the
    ``hyper-v`` and ``s390`` variants; ``tdx`` is newer.
    """

    action: GuestPanicAction
    info: GuestPanicInformation | None = None


# QAPI declares the two events with identical members.
GuestCrashloadedData = GuestPanickedData


class GuestPanicked(KnownEvent, frozen=True, tag="GUEST_PANICKED"):
    """The guest OS panicked; ``data.action`` says what QEMU did about it."""

    data: GuestPanickedData


class GuestCrashloaded(KnownEvent, frozen=True, tag="GUEST_CRASHLOADED"):
    """The guest loaded a crash kernel after a panic (pvpanic ``crash-loaded``)."""

    data: GuestCrashloadedData


class MemUnplugErrorData(_Data, frozen=True, kw_only=True):
    """MEM_UNPLUG_ERROR members."""

    device: str
    msg: str


class MemUnplugError(KnownEvent, frozen=True, tag="MEM_UNPLUG_ERROR"):
    """The guest rejected a memory unplug.

    Deprecated since QEMU 6.2 and removed in 9.1 (the current schema no longer has
    it); DEVICE_UNPLUG_GUEST_ERROR is the successor. QEMU 7.2 still sends both.
    """

    data: MemUnplugErrorData


class QuorumFailureData(_Data, frozen=True, kw_only=True):
    """QUORUM_FAILURE members; ``reference`` is the device name, else the node name."""

    reference: str
    sector_num: int = msgspec.field(name="sector-num")
    sectors_count: int = msgspec.field(name="sectors-count")


class QuorumFailure(KnownEvent, frozen=True, tag="QUORUM_FAILURE"):
    """The quorum block driver could not reach a quorum. QEMU rate-limits it."""

    data: QuorumFailureData


class QuorumReportBadData(_Data, frozen=True, kw_only=True):
    """QUORUM_REPORT_BAD members; ``error`` is present only for I/O errors."""

    type: QuorumOpType
    error: str | None = None
    node_name: str = msgspec.field(name="node-name")
    sector_num: int = msgspec.field(name="sector-num")
    sectors_count: int = msgspec.field(name="sectors-count")


class QuorumReportBad(KnownEvent, frozen=True, tag="QUORUM_REPORT_BAD"):
    """One quorum child disagreed or failed. QEMU rate-limits it per ``node-name``."""

    data: QuorumReportBadData


class MigrationPassData(_Data, frozen=True, kw_only=True):
    """MIGRATION_PASS members; ``pass`` is a Python keyword, hence ``pass_``."""

    pass_: int = msgspec.field(name="pass")


class MigrationPass(KnownEvent, frozen=True, tag="MIGRATION_PASS"):
    """A RAM dirty-bitmap sync started; the count starts at 1 per migration."""

    data: MigrationPassData


class VserportChangeData(_Data, frozen=True, kw_only=True):
    """VSERPORT_CHANGE members."""

    id: str
    open: bool


class VserportChange(KnownEvent, frozen=True, tag="VSERPORT_CHANGE"):
    """The guest opened or closed a virtio-serial port. QEMU rate-limits it per ``id``."""

    data: VserportChangeData


# --- related events ----------------------------------------------------------------


class DeviceUnplugGuestErrorData(_Data, frozen=True, kw_only=True):
    """DEVICE_UNPLUG_GUEST_ERROR members; ``device`` is absent for id-less devices."""

    device: str | None = None
    path: str


class DeviceUnplugGuestError(KnownEvent, frozen=True, tag="DEVICE_UNPLUG_GUEST_ERROR"):
    """The guest refused a device unplug (the successor of MEM_UNPLUG_ERROR)."""

    data: DeviceUnplugGuestErrorData


class AcpiDeviceOstData(_Data, frozen=True, kw_only=True):
    """ACPI_DEVICE_OST members."""

    info: AcpiOstInfo


class AcpiDeviceOst(KnownEvent, frozen=True, tag="ACPI_DEVICE_OST"):
    """The guest reported on a hotplug request through ``_OST``.

    On pc and q35 this is how a guest refuses a DIMM unplug (source 3, an eject
    request, with a failure status); libvirt reports the refusal from it.
    """

    data: AcpiDeviceOstData


class DeviceDeletedData(_Data, frozen=True, kw_only=True):
    """DEVICE_DELETED members; ``device`` is absent for id-less devices."""

    device: str | None = None
    path: str


class DeviceDeleted(KnownEvent, frozen=True, tag="DEVICE_DELETED"):
    """A device finished unplugging."""

    data: DeviceDeletedData


class MigrationData(_Data, frozen=True, kw_only=True):
    """MIGRATION members."""

    status: MigrationStatus


class Migration(KnownEvent, frozen=True, tag="MIGRATION"):
    """The migration state changed (sent only with the ``events`` capability)."""

    data: MigrationData


class ShutdownData(_Data, frozen=True, kw_only=True):
    """SHUTDOWN members; ``guest`` tells a guest-initiated shutdown from a host one."""

    guest: bool
    reason: ShutdownCause


class Shutdown(KnownEvent, frozen=True, tag="SHUTDOWN"):
    """The VM is shutting down (or was asked to)."""

    data: ShutdownData


class ResetData(_Data, frozen=True, kw_only=True):
    """RESET members (same shape as SHUTDOWN's)."""

    guest: bool
    reason: ShutdownCause


class Reset(KnownEvent, frozen=True, tag="RESET"):
    """The VM was reset."""

    data: ResetData


class Stop(KnownEvent, frozen=True, tag="STOP"):
    """The VM stopped running; the event has no ``data``."""


class Resume(KnownEvent, frozen=True, tag="RESUME"):
    """The VM resumed running; the event has no ``data``."""


class Powerdown(KnownEvent, frozen=True, tag="POWERDOWN"):
    """The host requested an ACPI power-down; the event has no ``data``."""


# --- anything else -----------------------------------------------------------------


class GenericEvent(_EventBase, frozen=True, dict=True, omit_defaults=True):
    """An event this library does not model (for instance one from a newer QEMU).

    ``name`` is the wire member ``event``; ``data`` holds every member as decoded JSON
    (empty when QEMU sent none). The timestamp is validated like any other.
    """

    name: str = msgspec.field(name="event")
    timestamp: Timestamp
    data: dict[str, Any] = msgspec.field(default_factory=dict)

    def to_message(self) -> dict[str, Any]:
        """The event as a QMP message; ``data`` is left out when empty."""
        message: dict[str, Any] = {"timestamp": _timestamp_dict(self.timestamp), "event": self.name}
        if self.data:
            message["data"] = self.data
        return message


ModeledEvent = (
    DumpCompleted
    | GuestPanicked
    | MemUnplugError
    | QuorumFailure
    | QuorumReportBad
    | MigrationPass
    | VserportChange
    | GuestCrashloaded
    | DeviceUnplugGuestError
    | AcpiDeviceOst
    | DeviceDeleted
    | Migration
    | Shutdown
    | Reset
    | Stop
    | Resume
    | Powerdown
)
"""The tagged union of every modeled event (what the typed decoder decodes)."""

EVENT_TYPES: Mapping[str, type[KnownEvent]] = MappingProxyType(
    {str(cls.__struct_config__.tag): cls for cls in typing.get_args(ModeledEvent)}
)
"""Event name -> model class, for every modeled event (read-only)."""

Event = ModeledEvent | GenericEvent
"""What :func:`~qmpevents.schema.decode.decode_event` returns."""


def known_event_names() -> frozenset[str]:
    """The names of all modeled events."""
    return frozenset(EVENT_TYPES)

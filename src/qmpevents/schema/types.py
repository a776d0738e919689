"""Nested QAPI types used by the modeled events: enums, structs and the panic-info union.

Enums are ``Literal`` aliases: they decode to plain ``str`` at C speed, compare with
``==`` against the wire spelling, and an unknown value is rejected by the decoder.
Integer widths follow the current QAPI schema (``uint32``/``uint64`` members reject
negative values); ``query-qmp-schema`` collapses every integer type to ``int``.
"""

from __future__ import annotations

import datetime
from typing import Annotated, Literal

import msgspec

__all__ = [
    "AcpiOstInfo",
    "AcpiSlotType",
    "DumpQueryResult",
    "DumpStatus",
    "GuestPanicAction",
    "GuestPanicInformation",
    "GuestPanicInformationHyperV",
    "GuestPanicInformationS390",
    "GuestPanicInformationTdx",
    "MigrationStatus",
    "QuorumOpType",
    "S390CrashReason",
    "ShutdownCause",
    "Timestamp",
    "UInt32",
    "UInt64",
]

UInt32 = Annotated[int, msgspec.Meta(ge=0, le=2**32 - 1)]
# msgspec cannot express le=2**64-1 (bounds must fit in int64), so only the sign of a
# uint64 member is checked.
UInt64 = Annotated[int, msgspec.Meta(ge=0)]

AcpiSlotType = Literal["DIMM", "CPU"]
DumpStatus = Literal["none", "active", "completed", "failed"]
GuestPanicAction = Literal["pause", "poweroff", "run"]
QuorumOpType = Literal["read", "write", "flush"]
S390CrashReason = Literal["unknown", "disabled-wait", "extint-loop", "pgmint-loop", "opint-loop"]
ShutdownCause = Literal[
    "none",
    "host-error",
    "host-qmp-quit",
    "host-qmp-system-reset",
    "host-signal",
    "host-ui",
    "guest-shutdown",
    "guest-reset",
    "guest-panic",
    "subsystem-reset",
    "snapshot-load",
]
# Current schema. QEMU 7.2 lacks postcopy-recover-setup (9.1) and postcopy-device (10.2).
MigrationStatus = Literal[
    "none",
    "setup",
    "cancelling",
    "cancelled",
    "active",
    "postcopy-device",
    "postcopy-active",
    "postcopy-paused",
    "postcopy-recover-setup",
    "postcopy-recover",
    "completed",
    "failed",
    "colo",
    "pre-switchover",
    "device",
    "wait-unplug",
]

_MICROS = 1_000_000


class Timestamp(msgspec.Struct, frozen=True, gc=False):
    """The wall-clock time of an event as QEMU sends it (``g_get_real_time``).

    ``seconds`` is ``>= 0`` and fits QEMU's ``int64_t``, and ``microseconds`` lies
    in ``[0, 999999]``; the decoder rejects anything else (so a broken server's
    ``2**64 - 1`` fails here, not in a database column later).
    """

    seconds: Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]
    microseconds: Annotated[int, msgspec.Meta(ge=0, le=_MICROS - 1)]

    @classmethod
    def from_float(cls, when: float) -> Timestamp:
        """The timestamp of ``when`` (seconds since the epoch), to the microsecond."""
        total = round(when * _MICROS)
        return cls(seconds=total // _MICROS, microseconds=total % _MICROS)

    def as_float(self) -> float:
        """Seconds since the epoch as a float (microsecond precision is kept)."""
        return self.seconds + self.microseconds / _MICROS

    def as_datetime(self) -> datetime.datetime:
        """A timezone-aware UTC datetime, exact to the microsecond."""
        epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
        return epoch + datetime.timedelta(seconds=self.seconds, microseconds=self.microseconds)


class DumpQueryResult(msgspec.Struct, frozen=True, gc=False):
    """Progress of a guest memory dump (QAPI DumpQueryResult)."""

    status: DumpStatus
    completed: int
    total: int


class AcpiOstInfo(msgspec.Struct, frozen=True, omit_defaults=True, gc=False, kw_only=True):
    """A guest's ``_OST`` report on a hotplug slot (QAPI ACPIOSTInfo).

    ``source`` is the ACPI event it answers (1 device check, 3 eject request) and
    ``status`` the guest's answer (0 success, 1 failure, 0x80-0x84 eject codes).
    """

    device: str | None = None
    slot: str
    slot_type: AcpiSlotType = msgspec.field(name="slot-type")
    source: int
    status: int


class _PanicInfoBase(msgspec.Struct, frozen=True, gc=False, tag_field="type"):
    """Common base so that the three variants form a union tagged on ``type``."""


class GuestPanicInformationHyperV(_PanicInfoBase, frozen=True, tag="hyper-v"):
    """Hyper-V crash MSRs (``type: "hyper-v"``)."""

    arg1: UInt64
    arg2: UInt64
    arg3: UInt64
    arg4: UInt64
    arg5: UInt64


class GuestPanicInformationS390(_PanicInfoBase, frozen=True, tag="s390"):
    """s390 crash data (``type: "s390"``); ``core`` is a uint32."""

    core: UInt32
    psw_mask: UInt64 = msgspec.field(name="psw-mask")
    psw_addr: UInt64 = msgspec.field(name="psw-addr")
    reason: S390CrashReason


class GuestPanicInformationTdx(_PanicInfoBase, frozen=True, tag="tdx", omit_defaults=True):
    """Intel TDX guest crash (``type: "tdx"``, since QEMU 10.1; absent in 7.2)."""

    error_code: UInt32 = msgspec.field(name="error-code")
    message: str
    gpa: UInt64 | None = None


# QAPI union GuestPanicInformation, discriminated by ``type``.
GuestPanicInformation = (
    GuestPanicInformationHyperV | GuestPanicInformationS390 | GuestPanicInformationTdx
)

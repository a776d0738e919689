"""The ``event`` label of the per-event metrics, with a bounded number of values.

A VM chooses the names of the events it sends; if each name became a label value,
one VM sending 400k distinct names would create 400k series. So a name gets its own
label value only if it is

- an event qmpevents models (:func:`~qmpevents.schema.events.known_event_names`) or
  one of QEMU's (:data:`QEMU_EVENTS`, every event of QEMU 7.2's schema), or
- one of the first ``cap`` (100 by default) other names a collector sees that look
  like a QEMU event name (``[A-Z][A-Z0-9_]*``, at most 64 characters), so the events
  of a newer QEMU still show by name;

every other name is counted under :data:`OTHER` (``"other"``, which no QEMU event
name can be, being lowercase). The events themselves are stored whatever the name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from qmpevents.schema.events import known_event_names

__all__ = ["OTHER", "QEMU_EVENTS", "EventLabels"]

OTHER = "other"
"""The label value shared by names past the cap and names that do not look like events."""

QEMU_EVENTS = frozenset(
    {
        "ACPI_DEVICE_OST",
        "BALLOON_CHANGE",
        "BLOCK_EXPORT_DELETED",
        "BLOCK_IMAGE_CORRUPTED",
        "BLOCK_IO_ERROR",
        "BLOCK_JOB_CANCELLED",
        "BLOCK_JOB_COMPLETED",
        "BLOCK_JOB_ERROR",
        "BLOCK_JOB_PENDING",
        "BLOCK_JOB_READY",
        "BLOCK_WRITE_THRESHOLD",
        "COLO_EXIT",
        "DEVICE_DELETED",
        "DEVICE_TRAY_MOVED",
        "DEVICE_UNPLUG_GUEST_ERROR",
        "DUMP_COMPLETED",
        "FAILOVER_NEGOTIATED",
        "GUEST_CRASHLOADED",
        "GUEST_PANICKED",
        "JOB_STATUS_CHANGE",
        "MEMORY_DEVICE_SIZE_CHANGE",
        "MEMORY_FAILURE",
        "MEM_UNPLUG_ERROR",
        "MIGRATION",
        "MIGRATION_PASS",
        "NETDEV_STREAM_CONNECTED",
        "NETDEV_STREAM_DISCONNECTED",
        "NIC_RX_FILTER_CHANGED",
        "POWERDOWN",
        "PR_MANAGER_STATUS_CHANGED",
        "QUORUM_FAILURE",
        "QUORUM_REPORT_BAD",
        "RDMA_GID_STATUS_CHANGED",
        "RESET",
        "RESUME",
        "RTC_CHANGE",
        "SHUTDOWN",
        "SPICE_CONNECTED",
        "SPICE_DISCONNECTED",
        "SPICE_INITIALIZED",
        "SPICE_MIGRATE_COMPLETED",
        "STOP",
        "SUSPEND",
        "SUSPEND_DISK",
        "UNPLUG_PRIMARY",
        "VFU_CLIENT_HANGUP",
        "VNC_CONNECTED",
        "VNC_DISCONNECTED",
        "VNC_INITIALIZED",
        "VSERPORT_CHANGE",
        "WAKEUP",
        "WATCHDOG",
    }
)
"""Every event in QEMU 7.2's ``query-qmp-schema`` (``tests/data/qemu-7.2``; a test keeps
the two equal)."""

_EVENT_SHAPED = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


class EventLabels:
    """Maps event names to label values; see the module docstring. Not thread-safe."""

    def __init__(self, cap: int = 100, known: Iterable[str] | None = None) -> None:
        if cap < 0:
            raise ValueError(f"cap must be >= 0, got {cap}")
        self.cap = cap
        self.known = frozenset(known_event_names() | QEMU_EVENTS if known is None else known)
        self.admitted: set[str] = set()
        """Names outside :attr:`known` that got a label value of their own (at most ``cap``)."""

    def label(self, name: str) -> str:
        """The label value of event ``name``: itself, or :data:`OTHER`."""
        if name in self.known or name in self.admitted:
            return name
        if len(self.admitted) < self.cap and _EVENT_SHAPED.fullmatch(name):
            self.admitted.add(name)
            return name
        return OTHER

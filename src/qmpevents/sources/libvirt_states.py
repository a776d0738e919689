"""libvirt's numbered states and reasons, in the words QMP and a user would use.

The numbers are libvirt's stable ABI (``virDomainState``, ``virDomainPausedReason``,
``virDomainEventStoppedDetailType``, ``virConnectCloseReason``); they are spelled
out here so that this module, and its tests, need no libvirt.
"""

from __future__ import annotations

__all__ = ["close_reason", "run_state", "stop_reason"]

_RUNNING, _PAUSED, _SHUTDOWN, _SHUTOFF, _CRASHED, _PMSUSPENDED = 1, 3, 4, 5, 6, 7

# virDomainPausedReason -> QMP's RunState (query-status "status").
_PAUSED_STATUS = {
    2: "finish-migrate",  # MIGRATION
    3: "save-vm",  # SAVE
    5: "io-error",  # IOERROR
    6: "watchdog",  # WATCHDOG
    7: "restore-vm",  # FROM_SNAPSHOT
    8: "shutdown",  # SHUTTING_DOWN
    10: "guest-panicked",  # CRASHED
    11: "prelaunch",  # STARTING_UP
    12: "postmigrate",  # POSTCOPY
    13: "postmigrate",  # POSTCOPY_FAILED
}

_STOPPED = {
    0: "shut down",
    1: "destroyed",
    2: "crashed",
    3: "migrated away",
    4: "saved",
    5: "failed",
    6: "restored from a snapshot",
}

_CLOSED = {
    0: "connection error",
    1: "libvirtd closed the connection",
    2: "libvirtd stopped answering keepalives",
    3: "closed by the client",
}


def run_state(state: int, reason: int) -> tuple[str, bool] | None:
    """``virDomainGetState``'s answer as ``query-status``'s (status, running); None if unknown."""
    if state == _RUNNING:
        return "running", True
    if state == _PAUSED:
        return _PAUSED_STATUS.get(reason, "paused"), False
    if state == _CRASHED:
        return "guest-panicked", False
    if state == _PMSUSPENDED:
        return "suspended", False
    if state in (_SHUTDOWN, _SHUTOFF):
        return "shutdown", False
    return None


def stop_reason(detail: int) -> str:
    """The ``VIR_DOMAIN_EVENT_STOPPED`` detail in words: "stopped (destroyed)"."""
    return f"stopped ({_STOPPED.get(detail, f'reason {detail}')})"


def close_reason(reason: int) -> str:
    """Why libvirt closed a connection (``virConnectCloseReason``), in words."""
    return _CLOSED.get(reason, f"closed (reason {reason})")

"""How simulated commands fail: QEMU's error classes with QEMU's wording."""

from __future__ import annotations

from typing import NoReturn

from qmpevents.protocol.requests import DEVICE_NOT_FOUND, GENERIC_ERROR
from qmpevents.server.commands import QMPCommandFailure

__all__ = ["device_not_found", "fail"]


def fail(desc: str) -> NoReturn:
    """Answer the running command with ``GenericError`` ``desc``."""
    raise QMPCommandFailure(GENERIC_ERROR, desc)


def device_not_found(device_id: str) -> NoReturn:
    """Answer with ``DeviceNotFound`` for qdev id ``device_id``, as ``device_del`` does."""
    raise QMPCommandFailure(DEVICE_NOT_FOUND, f"Device '{device_id}' not found")

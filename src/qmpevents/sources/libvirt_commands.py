"""QMP commands sent through libvirt (``virsh qemu-monitor-command``): text in, value out.

libvirt takes the command as JSON text and hands back QEMU's reply as text; the
id and the negotiation are libvirt's own business.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import msgspec

from qmpevents.errors import CommandError, QMPConnectionError

__all__ = ["command_text", "reply_value"]

_ANY_JSON = msgspec.json.Decoder()


def command_text(command: str, arguments: Mapping[str, Any] | None) -> str:
    """The QMP message for ``command`` with ``arguments`` (left out when empty)."""
    message: dict[str, Any] = {"execute": command}
    if arguments:
        message["arguments"] = dict(arguments)
    return json.dumps(message)


def reply_value(command: str, reply: str) -> Any:
    """The ``return`` of QEMU's reply text; :class:`CommandError` for an ``error`` reply."""
    try:
        decoded = _ANY_JSON.decode(reply)
    except msgspec.DecodeError as error:
        raise QMPConnectionError(
            f"{command}: libvirt passed on a reply that is not JSON: {error}"
        ) from None
    if not isinstance(decoded, dict) or ("return" not in decoded and "error" not in decoded):
        raise QMPConnectionError(f"{command}: not a QMP reply: {reply[:200]!r}")
    if "error" in decoded:
        details = decoded["error"] if isinstance(decoded["error"], dict) else {}
        raise CommandError(command, str(details.get("class", "")), str(details.get("desc", "")))
    return decoded["return"]

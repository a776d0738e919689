"""Client requests as QEMU's dispatcher reads them, and the replies it builds.

:func:`parse_request` is ``qmp_dispatch_check_obj()`` of qapi/qmp-dispatch.c:
it looks at the members of a request in QDict iteration order (which is why a
request with both ``execute`` and ``exec-oob`` is answered "QMP input member
'execute' clashes with 'exec-oob'") and gives either a :class:`Request` or the
GenericError text QEMU replies with. The reply builders insert members in the
order QEMU does (``return``/``error`` first, then ``id``); the encoder turns that
into the wire order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from qmpevents.protocol.encoding import qdict_order
from qmpevents.protocol.framing import JSONValue

GENERIC_ERROR: Final = "GenericError"
COMMAND_NOT_FOUND: Final = "CommandNotFound"
DEVICE_NOT_FOUND: Final = "DeviceNotFound"


@dataclass(slots=True)
class Request:
    """One well-formed command request.

    ``has_id`` tells an absent ``id`` from ``"id": null``: QEMU echoes any
    ``id`` member, null included, and adds none when there was none.
    """

    command: str
    arguments: dict[str, JSONValue] = field(default_factory=dict)
    id: JSONValue = None
    has_id: bool = False
    oob: bool = False


@dataclass(slots=True)
class BadRequest:
    """A request QEMU refuses before looking up the command."""

    desc: str
    id: JSONValue = None
    has_id: bool = False
    error_class: str = GENERIC_ERROR


def parse_request(value: JSONValue, *, allow_oob: bool) -> Request | BadRequest:
    """Check one JSON value from the client as QEMU's dispatcher does."""
    if not isinstance(value, dict):
        return BadRequest("QMP input must be a JSON object")
    has_id = "id" in value
    request_id = value.get("id")
    exec_key: str | None = None
    for name in qdict_order(list(value)):
        member = value[name]
        if name == "execute" or (name == "exec-oob" and allow_oob):
            if not isinstance(member, str):
                return BadRequest(f"QMP input member '{name}' must be a string", request_id, has_id)
            if exec_key is not None:
                return BadRequest(
                    f"QMP input member '{name}' clashes with '{exec_key}'", request_id, has_id
                )
            exec_key = name
        elif name == "arguments":
            if not isinstance(member, dict):
                return BadRequest(
                    "QMP input member 'arguments' must be an object", request_id, has_id
                )
        elif name != "id":
            return BadRequest(f"QMP input member '{name}' is unexpected", request_id, has_id)
    if exec_key is None:
        return BadRequest("QMP input lacks member 'execute'", request_id, has_id)
    command = value[exec_key]
    assert isinstance(command, str)
    arguments = value.get("arguments", {})
    assert isinstance(arguments, dict)
    return Request(command, arguments, request_id, has_id, oob=exec_key == "exec-oob")


def return_message(value: Any, request_id: JSONValue, has_id: bool) -> dict[str, Any]:
    """``{"return": value, "id": id}`` in QEMU's insertion order."""
    message: dict[str, Any] = {"return": value}
    if has_id:
        message["id"] = request_id
    return message


def error_message(
    error_class: str, desc: str, request_id: JSONValue, has_id: bool
) -> dict[str, Any]:
    """``{"error": {"class": ..., "desc": ...}, "id": id}`` in QEMU's insertion order."""
    message: dict[str, Any] = {"error": {"class": error_class, "desc": desc}}
    if has_id:
        message["id"] = request_id
    return message

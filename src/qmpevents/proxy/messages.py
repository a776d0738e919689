"""What the proxy reads and writes on the wire, without I/O.

* :func:`parse_greeting`: the upstream's greeting line, as the ``GreetingInfo``
  every client's :class:`~qmpevents.protocol.server_session.ServerSession`
  negotiates against (the clients get the line itself, byte for byte).
* :func:`forward_request`: a client's request as sent upstream, with the proxy
  id in place of the client's. Arguments keep the client's member order, so
  QEMU sees the members in the order the client wrote them.
* :func:`read_upstream_line`: events (kept as raw bytes), replies (the
  ``return``/``error`` value kept as raw bytes) and anything else.
* :func:`relabel`: a reply as QEMU would have sent it to the client: the value
  QEMU wrote, untouched, and the client's own id, encoded by QEMU's writer, the
  members in QEMU's QDict order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec

from qmpevents.errors import GreetingError
from qmpevents.protocol.encoding import encode, qdict_order
from qmpevents.protocol.framing import JSONValue
from qmpevents.protocol.requests import Request
from qmpevents.protocol.server_session import GreetingInfo

__all__ = [
    "EVENT_PREFIX",
    "UpstreamReply",
    "forward_request",
    "is_shutdown",
    "parse_greeting",
    "read_upstream_line",
    "relabel",
]

# QEMU writes every event's timestamp first (its QDict bucket comes first).
EVENT_PREFIX: Final = b'{"timestamp"'
_SHUTDOWN: Final = b'"event": "SHUTDOWN"'


class _Triple(msgspec.Struct):
    major: int
    minor: int
    micro: int


class _Version(msgspec.Struct):
    qemu: _Triple
    package: str = ""


class _Body(msgspec.Struct):
    version: _Version
    capabilities: list[str]


class _Greeting(msgspec.Struct):
    QMP: _Body


_GREETING: Final = msgspec.json.Decoder(_Greeting)


def parse_greeting(line: bytes) -> GreetingInfo:
    """The greeting ``line`` (with or without its line end) as a ``GreetingInfo``."""
    try:
        body = _GREETING.decode(line).QMP
    except (msgspec.DecodeError, msgspec.ValidationError) as error:
        raise GreetingError(f"not a QMP greeting: {error}", line) from None
    qemu = body.version.qemu
    return GreetingInfo(qemu.major, qemu.minor, qemu.micro, body.version.package, body.capabilities)


def _ordered(value: JSONValue) -> str:
    """``value`` in QEMU's JSON text, objects in the order their members were given."""
    if isinstance(value, dict):
        members = [_ordered(key) + ": " + _ordered(item) for key, item in value.items()]
        return "{" + ", ".join(members) + "}"
    if isinstance(value, list):
        return "[" + ", ".join(map(_ordered, value)) + "]"
    return encode(value)[:-2].decode("ascii")


def forward_request(request: Request, proxy_id: int) -> bytes:
    """``request`` as the proxy sends it upstream, under ``proxy_id``."""
    key = "exec-oob" if request.oob else "execute"
    text = '{"' + key + '": ' + encode(request.command)[:-2].decode("ascii")
    if request.arguments:
        try:
            arguments = _ordered(request.arguments)
        except RecursionError:
            # Nested deeper than Python's stack: QEMU's member order will do.
            arguments = encode(request.arguments)[:-2].decode("ascii")
        text += ', "arguments": ' + arguments
    return (text + f', "id": {proxy_id:d}}}\n').encode("ascii")


def is_shutdown(event_line: bytes) -> bool:
    """Whether an event line (as QEMU writes it) is SHUTDOWN."""
    return _SHUTDOWN in event_line[:96]


class _Envelope(msgspec.Struct):
    return_: msgspec.Raw | msgspec.UnsetType = msgspec.field(name="return", default=msgspec.UNSET)
    error: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    id: Any = msgspec.UNSET


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    """A reply from upstream: ``key`` is return or error, ``value`` its exact bytes."""

    key: str
    value: bytes
    id: JSONValue
    has_id: bool


def read_upstream_line(line: bytes) -> UpstreamReply | None:
    """A reply line as an :class:`UpstreamReply`; None for anything that is not one."""
    try:
        envelope = _ENVELOPE.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if not isinstance(envelope.return_, msgspec.UnsetType):
        key, raw = "return", envelope.return_
    elif not isinstance(envelope.error, msgspec.UnsetType):
        key, raw = "error", envelope.error
    else:
        return None
    has_id = envelope.id is not msgspec.UNSET
    return UpstreamReply(key, bytes(raw), envelope.id if has_id else None, has_id)


def relabel(reply: UpstreamReply, request_id: JSONValue, has_id: bool) -> bytes:
    """``reply`` as QEMU would have written it to a client that asked with ``request_id``."""
    members = {reply.key: reply.value}
    if has_id:
        members["id"] = encode(request_id)[:-2]
    order = qdict_order(list(members))
    parts = [b'"' + key.encode("ascii") + b'": ' + members[key] for key in order]
    return b"{" + b", ".join(parts) + b"}\r\n"

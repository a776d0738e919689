"""The server side of one QMP connection as a sans-IO state machine.

A :class:`ServerSession` owns the JSON stream framer of one monitor connection
and the negotiation state (capabilities-negotiation mode, then command mode).
Bytes go in through :meth:`ServerSession.receive_data`; out comes an ordered
list of work items: :class:`Reply` (bytes ready to send) and
:class:`~qmpevents.protocol.requests.Request` (a command for the caller to
dispatch and answer with :meth:`ServerSession.reply` or
:meth:`ServerSession.reply_error`). The caller must handle the items in order,
as QEMU's monitor does, so that replies keep the order of the requests.

Everything QEMU answers without running a command is answered here, worded as
QEMU 7.2 words it: JSON parse errors, non-object input, malformed requests,
commands before negotiation, ``qmp_capabilities`` and its arguments, and
``exec-oob`` on a monitor that did not enable oob.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from qmpevents.errors import JSONParseError
from qmpevents.protocol.arguments import ArgumentError, convert_arguments
from qmpevents.protocol.encoding import encode
from qmpevents.protocol.framing import JSONStreamFramer, Parsed
from qmpevents.protocol.requests import (
    COMMAND_NOT_FOUND,
    GENERIC_ERROR,
    BadRequest,
    Request,
    error_message,
    parse_request,
    return_message,
)
from qmpevents.protocol.states import ServerState, server_move


@dataclass(frozen=True, slots=True)
class Reply:
    """Bytes to send, in their place among the replies."""

    data: bytes


WorkItem = Reply | Request


@dataclass(frozen=True, slots=True)
class GreetingInfo:
    """What a server announces in its greeting (QEMU 7.2's shape by default)."""

    major: int = 7
    minor: int = 2
    micro: int = 22
    package: str = ""
    capabilities: Sequence[str] = field(default=("oob",))

    def message(self) -> dict[str, Any]:
        """The greeting in QEMU's insertion order (monitor/qmp.c qmp_greeting)."""
        version = {
            "qemu": {"major": self.major, "minor": self.minor, "micro": self.micro},
            "package": self.package,
        }
        return {"QMP": {"version": version, "capabilities": list(self.capabilities)}}


class CapabilitiesArguments(msgspec.Struct, frozen=True):
    """The arguments of ``qmp_capabilities`` (checked here; declared for the schema)."""

    enable: list[Literal["oob"]] | None = None


_NEEDS_NEGOTIATION = "Expecting capabilities negotiation with 'qmp_capabilities'"


class ServerSession:
    """One monitor connection, from greeting to close, without I/O."""

    def __init__(
        self, greeting: GreetingInfo | None = None, *, framer: JSONStreamFramer | None = None
    ) -> None:
        self.greeting = greeting or GreetingInfo()
        self._framer = framer or JSONStreamFramer()
        self.state = ServerState.NEGOTIATING
        self.oob_enabled = False

    @property
    def negotiated(self) -> bool:
        """Whether the client finished negotiation (command mode: events reach it)."""
        return self.state is ServerState.READY

    def greeting_bytes(self) -> bytes:
        """The greeting line QEMU sends as soon as a client connects."""
        return encode(self.greeting.message())

    def receive_data(self, data: bytes) -> list[WorkItem]:
        """Feed bytes from the client; returns the work they complete, in order."""
        return [self._handle(frame) for frame in self._framer.feed(data)]

    def receive_eof(self) -> list[WorkItem]:
        """The client closed its side: whatever it left unfinished is dropped, as QEMU does."""
        self.state = server_move(self.state, "eof")
        self._framer = JSONStreamFramer(
            max_token_size=self._framer.max_token_size,
            max_token_count=self._framer.max_token_count,
            max_nesting=self._framer.max_nesting,
        )
        return []

    def reply(self, request: Request, value: Any) -> bytes:
        """The success reply to ``request``."""
        return encode(return_message(value, request.id, request.has_id))

    def reply_error(self, request: Request | BadRequest, error_class: str, desc: str) -> bytes:
        """The error reply to ``request``."""
        return encode(error_message(error_class, desc, request.id, request.has_id))

    def _handle(self, frame: Parsed | JSONParseError) -> WorkItem:
        if isinstance(frame, JSONParseError):
            return Reply(encode(error_message(GENERIC_ERROR, frame.desc, None, False)))
        request = parse_request(frame.value, allow_oob=self.oob_enabled)
        if isinstance(request, BadRequest):
            return Reply(self.reply_error(request, request.error_class, request.desc))
        if request.command == "qmp_capabilities":
            if not request.oob:
                return Reply(self._capabilities(request))
            if self.state is ServerState.READY:
                # QEMU 7.2: known to the dispatcher, which refuses it out of band.
                return Reply(
                    self.reply_error(
                        request, GENERIC_ERROR, "The command qmp_capabilities does not support OOB"
                    )
                )
        if self.state is not ServerState.READY:
            return Reply(self.reply_error(request, COMMAND_NOT_FOUND, _NEEDS_NEGOTIATION))
        self.state = server_move(self.state, "dispatch")
        return request

    def _capabilities(self, request: Request) -> bytes:
        # QEMU's marshaller checks the arguments before the command looks at the
        # negotiation state, so bad arguments win over "already complete".
        try:
            arguments = convert_arguments(CapabilitiesArguments, request.arguments)
        except ArgumentError as error:
            return self.reply_error(request, GENERIC_ERROR, error.desc)
        if self.state is ServerState.READY:
            return self.reply_error(
                request,
                COMMAND_NOT_FOUND,
                "Capabilities negotiation is already complete, command ignored",
            )
        enable: list[str] = list(arguments.enable or ())
        # QEMU lists every unavailable entry, repeats included (qmp_caps_accept)
        unavailable = [cap for cap in enable if cap not in self.greeting.capabilities]
        if unavailable:
            return self.reply_error(
                request, GENERIC_ERROR, f"Capability {', '.join(unavailable)} not available"
            )
        self.state = server_move(self.state, "negotiated")
        self.oob_enabled = "oob" in enable
        return self.reply(request, {})

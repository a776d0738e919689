"""The client side of one QMP connection as a sans-IO state machine.

Bytes from the server go into :meth:`ClientSession.receive_data`; out come the
messages they completed, classified: the :class:`Greeting`, :class:`Response`
and :class:`ErrorResponse` (matched to the command that asked, by ``id``),
events (the schema's typed models, or ``GenericEvent`` for names we do not model)
and :class:`ProtocolViolation` for everything a server should not have sent.
A violation never ends the stream: the next good line is still delivered.

Events may arrive anywhere, including between the greeting and the reply to
``qmp_capabilities``. The hot path for events is one msgspec decode per line.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from qmpevents.errors import (
    GreetingError,
    JSONParseError,
    LocalProtocolError,
    MessageError,
    ProtocolError,
    ValidationError,
)
from qmpevents.protocol.lines import DEFAULT_MAX_LINE, LineFramer, OversizedLine
from qmpevents.protocol.states import ClientState, client_move
from qmpevents.schema.decode import MODELED_DECODER, decode_event
from qmpevents.schema.events import RAW_KEY, Event, GenericEvent, bind_raw

_EVENT_PREFIX: Final = b'{"timestamp"'


@dataclass(frozen=True, slots=True)
class Greeting:
    """The server's greeting: QEMU's version triple, package and capabilities."""

    major: int
    minor: int
    micro: int
    package: str
    capabilities: tuple[str, ...]
    raw: bytes

    @property
    def version(self) -> str:
        """``"7.2.22"``."""
        return f"{self.major}.{self.minor}.{self.micro}"


@dataclass(frozen=True, slots=True)
class Response:
    """A successful reply; ``value`` is the decoded ``return`` member."""

    id: Any
    command: str
    raw_value: bytes
    raw: bytes

    @property
    def value(self) -> Any:
        """The ``return`` value as plain Python data."""
        return msgspec.json.decode(self.raw_value)


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """An error reply with QEMU's error class and description."""

    id: Any
    command: str
    error_class: str
    desc: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class ProtocolViolation:
    """Something the server should not have sent; the stream goes on after it."""

    error: ProtocolError | ValidationError


ServerMessage = Greeting | Response | ErrorResponse | ProtocolViolation | Event

# Where events go: a list of events, or the same list as every other message.
_EventSink = list[Event] | list[ServerMessage]


class _ErrorBody(msgspec.Struct):
    desc: str
    class_: str = msgspec.field(name="class")


class _VersionTriple(msgspec.Struct):
    major: int
    minor: int
    micro: int


class _Version(msgspec.Struct):
    qemu: _VersionTriple
    package: str = ""


class _GreetingBody(msgspec.Struct):
    version: _Version
    capabilities: list[str]


class _Envelope(msgspec.Struct):
    """Any server message, with the parts decoded lazily (``Raw``)."""

    QMP: _GreetingBody | None = None
    return_: msgspec.Raw | msgspec.UnsetType = msgspec.field(name="return", default=msgspec.UNSET)
    error: _ErrorBody | None = None
    id: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    event: str | None = None


_ENVELOPE: Final = msgspec.json.Decoder(_Envelope)
_ANY: Final = msgspec.json.Decoder()
_GENERIC: Final = msgspec.json.Decoder(GenericEvent)


@dataclass(slots=True)
class _Pending:
    command: str
    id: Any


@dataclass(slots=True)
class ClientSession:
    """One client connection's protocol state, without I/O.

    ``max_line`` bounds one server message (QEMU's own input limit is 64 MiB).
    """

    max_line: int = DEFAULT_MAX_LINE
    state: ClientState = ClientState.AWAITING_GREETING
    greeting: Greeting | None = None
    oob_enabled: bool = False
    protocol_errors: int = 0
    _framer: LineFramer = field(init=False)
    _pending: dict[Any, _Pending] = field(default_factory=dict, init=False)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1), init=False)
    _negotiation_id: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._framer = LineFramer(self.max_line)

    # -- sending -------------------------------------------------------------

    def negotiate(self, *, enable_oob: bool = True) -> bytes:
        """The ``qmp_capabilities`` request, asking for oob when the server offers it."""
        self.state = client_move(self.state, "send-negotiation")
        assert self.greeting is not None  # NEGOTIATING follows the greeting
        enable = ["oob"] if enable_oob and "oob" in self.greeting.capabilities else []
        arguments = {"enable": enable} if enable else None
        request_id, data = self.command("qmp_capabilities", arguments)
        self._negotiation_id = request_id
        self.oob_enabled = bool(enable)
        return data

    def command(
        self,
        name: str,
        arguments: dict[str, Any] | None = None,
        *,
        oob: bool = False,
        request_id: Any = None,
    ) -> tuple[Any, bytes]:
        """A request; returns (its id, bytes to send).

        The id is a fresh integer unless ``request_id`` names one (any JSON value
        but null; it must not be in use by another pending request).
        """
        self.state = client_move(self.state, "send-command")
        if request_id is None:
            request_id = next(self._ids)
        elif request_id in self._pending:
            raise LocalProtocolError(f"request id {request_id!r} is already waiting for a reply")
        message: dict[str, Any] = {("exec-oob" if oob else "execute"): name}
        if arguments:
            message["arguments"] = arguments
        message["id"] = request_id
        self._pending[request_id] = _Pending(name, request_id)
        return request_id, msgspec.json.encode(message) + b"\n"

    @property
    def negotiation_id(self) -> Any:
        """The id of the ``qmp_capabilities`` request still awaiting its reply, else None."""
        return self._negotiation_id

    @property
    def pending(self) -> int:
        """Requests sent and not yet answered."""
        return len(self._pending)

    # -- receiving -----------------------------------------------------------

    def receive_data(self, data: bytes) -> list[ServerMessage]:
        """Feed bytes from the server; returns the messages they completed, in order."""
        out: list[ServerMessage] = []
        self._receive_into(data, out, out)
        return out

    def _receive_into(self, data: bytes, events: _EventSink, others: list[ServerMessage]) -> None:
        """Internal, for the client's transport: feed bytes, split events from the rest.

        Events go to ``events`` and every other message to ``others``, each in
        order (the same list twice gives one ordered stream). Splitting lets the
        transport skip a dispatch per message: this is the client's hot path.
        """
        decode = MODELED_DECODER.decode
        append_event = events.append
        for line in self._framer.feed(data):
            # Inlined fast path: a modeled event in QEMU's member order.
            if line.startswith(_EVENT_PREFIX):
                try:
                    event = decode(line)
                except (msgspec.DecodeError, RecursionError):
                    self._slow_line(line, events, others)
                    continue
                event.__dict__[RAW_KEY] = line
                append_event(event)
            elif line:
                self._slow_line(line, events, others)

    def _slow_line(self, line: bytes, events: _EventSink, others: list[ServerMessage]) -> None:
        try:
            self._classify_line(line, events, others)
        except (msgspec.DecodeError, RecursionError, ValueError) as exc:
            # Whatever a line holds, it is one counted violation, never the end
            # of the stream: the next good line is still delivered.
            reason = "nesting too deep" if isinstance(exc, RecursionError) else str(exc)
            others.append(
                self._violation(JSONParseError(f"JSON parse error, {reason}", line[:256]))
            )

    def _classify_line(self, line: bytes, events: _EventSink, others: list[ServerMessage]) -> None:
        if isinstance(line, OversizedLine):
            others.append(
                self._violation(
                    ProtocolError(
                        f"server message of {line.size} bytes exceeds the "
                        f"{self.max_line}-byte limit; skipped",
                        line.head,
                    )
                )
            )
        elif line.startswith(_EVENT_PREFIX):
            self._event(line, events, others)
        else:
            self._classify(line, events, others)

    def receive_eof(self) -> ProtocolError | None:
        """The server closed; returns an error when it stopped mid-message."""
        self.state = client_move(self.state, "eof")
        tail = self._framer.close()
        if tail and tail.strip():
            return ProtocolError(
                f"connection closed in the middle of a message ({len(tail)} bytes)", tail[:256]
            )
        return None

    def _classify(self, line: bytes, events: _EventSink, out: list[ServerMessage]) -> None:
        try:
            envelope = _ENVELOPE.decode(line)
        except msgspec.ValidationError as exc:
            out.append(self._violation(MessageError(f"malformed server message: {exc}", line)))
            return
        except msgspec.DecodeError as exc:
            out.append(self._violation(JSONParseError(f"JSON parse error, {exc}", line)))
            return
        if envelope.event is not None:
            self._event(line, events, out)
        elif envelope.QMP is not None:
            out.append(self._greeting(envelope.QMP, line))
        elif envelope.return_ is not msgspec.UNSET or envelope.error is not None:
            out.append(self._reply(envelope, line))
        else:
            out.append(
                self._violation(
                    MessageError("server message is not a greeting, reply or event", line)
                )
            )

    def _event(self, line: bytes, events: _EventSink, out: list[ServerMessage]) -> None:
        try:
            events.append(decode_event(line))
        except ValidationError as error:
            # A message that breaks our model (a newer QEMU, say): report it, and
            # still deliver what was sent as a generic event when it is one.
            out.append(self._violation(error))
            generic = _as_generic(line)
            if generic is not None:
                events.append(generic)
        except ProtocolError as error:
            out.append(self._violation(error))

    def _greeting(self, body: _GreetingBody, line: bytes) -> ServerMessage:
        if self.state is not ClientState.AWAITING_GREETING:
            # The peer's mistake, not ours: a violation, not a LocalProtocolError.
            return self._violation(MessageError("second greeting from the server", line))
        triple = body.version.qemu
        self.greeting = Greeting(
            triple.major,
            triple.minor,
            triple.micro,
            body.version.package,
            tuple(body.capabilities),
            line,
        )
        self.state = client_move(self.state, "greeting")
        return self.greeting

    def _reply(self, envelope: _Envelope, line: bytes) -> ServerMessage:
        request_id = (
            _ANY.decode(envelope.id) if not isinstance(envelope.id, msgspec.UnsetType) else None
        )
        try:
            pending = self._pending.pop(request_id)
        except (KeyError, TypeError):
            return self._violation(
                MessageError(f"reply with an id no request is waiting for: {request_id!r}", line)
            )
        if request_id == self._negotiation_id:
            self._negotiation_id = None
            outcome = "negotiated" if envelope.error is None else "negotiation-refused"
            self.state = client_move(self.state, outcome)
        if envelope.error is not None:
            return ErrorResponse(
                request_id, pending.command, envelope.error.class_, envelope.error.desc, line
            )
        assert not isinstance(envelope.return_, msgspec.UnsetType)
        return Response(request_id, pending.command, bytes(envelope.return_), line)

    def _violation(self, error: ProtocolError | ValidationError) -> ProtocolViolation:
        self.protocol_errors += 1
        return ProtocolViolation(error)


def _as_generic(line: bytes) -> GenericEvent | None:
    try:
        event = _GENERIC.decode(line)
    except msgspec.DecodeError:
        return None
    bind_raw(event, line)
    return event


def require_greeting(message: ServerMessage) -> Greeting:
    """The first message must be a greeting; raise :class:`GreetingError` otherwise."""
    if isinstance(message, Greeting):
        return message
    raw = getattr(message, "raw", None)
    if isinstance(message, ProtocolViolation):
        raw = message.error.raw
    raise GreetingError(f"expected a QMP greeting, got {type(message).__name__}", raw)

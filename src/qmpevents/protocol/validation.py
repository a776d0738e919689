"""Check a captured QMP stream, or the example messages in a document, message by message.

Input is framed with QEMU's own JSON stream framer, so it may be one message per
line or concatenated as captured from a socket, and a syntax error is reported
at its line and column while the messages after it are still checked. Each
message is classified by role (event, greeting, return, error, command) and
checked: events against the typed event models, or against a live QEMU schema
(``query-qmp-schema`` output) when one is given; commands as QEMU's dispatcher
checks them, and their arguments against the live schema's commands when given.
Documents are cut into messages by :mod:`qmpevents.protocol.doc_examples`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Final

import msgspec

from qmpevents.errors import JSONParseError, ValidationError
from qmpevents.protocol.command_schema import CommandSchema
from qmpevents.protocol.doc_examples import CLIENT, SERVER, DocMessage, find_messages
from qmpevents.protocol.framing import JSONStreamFramer, JSONValue, Parsed
from qmpevents.protocol.requests import BadRequest, parse_request
from qmpevents.schema.decode import decode_event
from qmpevents.schema.events import EVENT_TYPES
from qmpevents.schema.live import LiveSchema

ELIDED = "elided example, not checked"
"""The info of an example with ``...`` in it: reported, neither valid nor invalid."""


@dataclass(frozen=True, slots=True)
class MessageReport:
    """The verdict on one message: where it starts, what it is, what is wrong.

    ``problems`` make it invalid; ``warnings`` (an event with no built-in model)
    and ``info`` (an elided example) are said but leave it valid.
    """

    line: int
    column: int
    kind: str  # event, greeting, return, error, command, elided, or invalid
    name: str | None = None  # the event or command name, when there is one
    problems: tuple[str, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())
    info: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when nothing is wrong with the message."""
        return not self.problems

    @property
    def checked(self) -> bool:
        """False for an elided example, which is reported but not checked."""
        return self.kind != "elided"


@dataclass(frozen=True, slots=True)
class _Schemas:
    events: LiveSchema | None
    commands: CommandSchema | None


def validate_stream(
    data: bytes,
    *,
    schema: LiveSchema | None = None,
    commands: CommandSchema | None = None,
    first_line: int = 1,
) -> list[MessageReport]:
    """Reports for every message in ``data`` (a whole stream, framed as QEMU frames it).

    Events are checked against ``schema`` when given, else the built-in models;
    command arguments against ``commands`` when given.
    """
    framer = JSONStreamFramer()
    frames = framer.feed(data) + framer.close()
    schemas = _Schemas(schema, commands)
    return [_report(frame, schemas, first_line - 1) for frame in frames]


def validate_document(
    data: bytes, *, schema: LiveSchema | None = None, commands: CommandSchema | None = None
) -> list[MessageReport]:
    """Reports for the example messages in a document (e.g. QEMU's QMP reference).

    Messages are found as :func:`~qmpevents.protocol.doc_examples.find_messages`
    finds them: ``-> {...}`` is a client message and must be a command, ``<- {...}``
    a server message, and ``{...}`` first on a line, outside any message, an
    example of either. An elided example gets one :data:`ELIDED` info report. A
    syntax error ends its message's report: what follows it in the same message
    is not reported again.
    """
    schemas = _Schemas(schema, commands)
    reports: list[MessageReport] = []
    for message in find_messages(data):
        if message.elided:
            reports.append(
                MessageReport(message.line, message.column, "elided", message.name, info=(ELIDED,))
            )
            continue
        reports.extend(_message_reports(message, schemas))
    return reports


def _message_reports(message: DocMessage, schemas: _Schemas) -> list[MessageReport]:
    """One report per example message; a syntax error ends it, text after it is a problem."""
    framer = JSONStreamFramer()
    reports: list[MessageReport] = []
    for frame in framer.feed(message.text[: message.trailing]) + framer.close():
        reports.append(_report(frame, schemas, message.text_line - 1, message.direction))
        if isinstance(frame, JSONParseError):
            return reports
    if message.trailing is not None and reports:
        last = reports[-1]
        reports[-1] = replace(last, problems=(*last.problems, _trailing_problem(message)))
    return reports


def _trailing_problem(message: DocMessage) -> str:
    """The problem of text that follows a message's closed value in the same block."""
    before = message.text[: message.trailing]
    line = message.text_line + before.count(b"\n")
    column = len(before) - (before.rfind(b"\n") + 1) + 1
    rest = message.text[message.trailing :].split(b"\n", 1)[0].strip()
    shown = rest.decode("utf-8", "replace")
    snippet = shown if len(shown) <= 40 else shown[:37] + "..."
    return f"text after the end of the message at {line}:{column} (closed too early?): {snippet}"


_NOT_QMP = "not a QMP message: no member event, return, error, QMP, execute or exec-oob"
_NOT_COMMAND = "client message (->) is not a command: no member execute or exec-oob"
_SENT_BY_CLIENT = "server message (<-) is a command, which only a client sends"


_ENVELOPE_KEYS: Final = frozenset({"vm", "received-at"})
_MARKERS: Final = frozenset({"event", "gap", "dropped", "run-state"})


def _is_watch_envelope(value: dict[str, Any]) -> bool:
    return value.keys() >= _ENVELOPE_KEYS and len(_MARKERS & value.keys()) == 1


def _report(
    frame: Parsed | JSONParseError,
    schemas: _Schemas,
    offset: int,
    direction: str | None = None,
) -> MessageReport:
    if isinstance(frame, JSONParseError):
        # The framer keeps undecodable bytes as surrogate escapes; a report is text.
        desc = frame.desc.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        # One report, one line: a token the lexer refused may hold a line break.
        desc = desc.replace("\r", "\\r").replace("\n", "\\n")
        return MessageReport(frame.line + offset, frame.column, "invalid", None, (desc,))
    line = frame.line + offset
    value = frame.value
    if not isinstance(value, dict):
        return MessageReport(
            line, frame.column, "invalid", None, ("QMP input must be a JSON object",)
        )
    is_command = "execute" in value or "exec-oob" in value
    if is_command:
        name, problems = _check_command(value, schemas.commands)
        if direction == SERVER:
            problems.insert(0, _SENT_BY_CLIENT)
        return MessageReport(line, frame.column, "command", name, tuple(problems))
    if direction == CLIENT:
        shown = value.get("event")
        name = shown if isinstance(shown, str) else None
        return MessageReport(line, frame.column, "invalid", name, (_NOT_COMMAND,))
    if _is_watch_envelope(value):
        # What `qmpevents watch --json` prints: {vm, received-at, event|gap|dropped|run-state}.
        inner = value.get("event")
        if not isinstance(inner, dict):
            return MessageReport(line, frame.column, "marker", None, ())
        value = inner
    if "event" in value:
        name, event_problems, warnings = _check_event(value, schemas.events)
        return MessageReport(
            line, frame.column, "event", name, tuple(event_problems), tuple(warnings)
        )
    if "QMP" in value:
        return MessageReport(line, frame.column, "greeting", None, tuple(_check_greeting(value)))
    if "return" in value:
        extra = sorted(set(value) - {"return", "id"})
        problems = [f"{key}: unexpected member" for key in extra]
        return MessageReport(line, frame.column, "return", None, tuple(problems))
    if "error" in value:
        return MessageReport(line, frame.column, "error", None, tuple(_check_error(value)))
    return MessageReport(line, frame.column, "invalid", None, (_NOT_QMP,))


def _check_command(
    message: dict[str, JSONValue], commands: CommandSchema | None
) -> tuple[str | None, list[str]]:
    request = parse_request(message, allow_oob=True)
    if isinstance(request, BadRequest):
        return None, [request.desc]
    if commands is None:
        return request.command, []
    member = "exec-oob" if request.oob else "execute"
    return request.command, commands.validate_arguments(
        request.command, request.arguments, member=member
    )


def _check_event(
    message: dict[str, JSONValue], schema: LiveSchema | None
) -> tuple[str | None, list[str], list[str]]:
    """The event's name, its problems, and its warnings."""
    name = message.get("event")
    shown = name if isinstance(name, str) else None
    out_of_range = _non_finite_member(message)
    if out_of_range is not None:
        # JSON encodes inf as null: say what was wrong rather than "got null".
        return shown, [f"{out_of_range}: number out of range (not a finite double)"], []
    if schema is not None:
        return shown, schema.validate_message(message), []
    try:
        decode_event(msgspec.json.encode(message))
    except ValidationError as error:
        return shown, [f"{error.path}: {error.problem}" if error.path else error.problem], []
    except RecursionError:
        return shown, ["nested too deeply to check"], []
    if shown is not None and shown not in EVENT_TYPES:
        return shown, [], [_unknown_event(shown)]
    return shown, [], []


def _unknown_event(name: str) -> str:
    return f"unknown event {name!r}: no built-in model, its data was not checked"


def _non_finite_member(message: dict[str, JSONValue]) -> str | None:
    """The dotted path of the first inf or nan in ``message`` (iterative: any depth)."""
    stack: list[tuple[str, JSONValue]] = [("", message)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, float) and not math.isfinite(value):
            return path or "."
        if isinstance(value, dict):
            stack.extend((f"{path}.{k}" if path else k, v) for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(value))
    return None


def _check_greeting(message: dict[str, Any]) -> list[str]:
    body = message["QMP"]
    if not isinstance(body, dict):
        return ["QMP: expected object"]
    problems = [
        f"QMP.{key}: missing required member"
        for key in ("version", "capabilities")
        if key not in body
    ]
    if "capabilities" in body and not isinstance(body["capabilities"], list):
        problems.append("QMP.capabilities: expected array")
    return problems


def _check_error(message: dict[str, Any]) -> list[str]:
    body = message["error"]
    if not isinstance(body, dict):
        return ["error: expected object"]
    return [
        f"error.{key}: expected str"
        for key in ("class", "desc")
        if not isinstance(body.get(key), str)
    ]

"""Check a captured QMP stream, or the JSON examples in a document, message by message.

Input is framed with QEMU's own JSON stream framer, so it may be one message per
line or concatenated as captured from a socket, and a syntax error is reported
at its line and column while the messages after it are still checked. Each
message is classified by role (event, greeting, return, error, command) and
checked: events against the typed event models, or against a live QEMU schema
(``query-qmp-schema`` output) when one is given; commands as QEMU's dispatcher
checks them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

import msgspec

from qmpevents.errors import JSONParseError, ValidationError
from qmpevents.protocol.framing import JSONStreamFramer, JSONValue, Parsed
from qmpevents.protocol.requests import BadRequest, parse_request
from qmpevents.schema.decode import decode_event
from qmpevents.schema.live import LiveSchema


@dataclass(frozen=True, slots=True)
class MessageReport:
    """The verdict on one message: where it starts, what it is, what is wrong."""

    line: int
    column: int
    kind: str  # event, greeting, return, error, command, or invalid
    name: str | None = None  # the event or command name, when there is one
    problems: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """True when nothing is wrong with the message."""
        return not self.problems


def validate_stream(
    data: bytes, *, schema: LiveSchema | None = None, first_line: int = 1
) -> list[MessageReport]:
    """Reports for every message in ``data`` (a whole stream, framed as QEMU frames it)."""
    framer = JSONStreamFramer()
    frames = framer.feed(data) + framer.close()
    return [_report(frame, schema, first_line - 1) for frame in frames]


def validate_document(data: bytes, *, schema: LiveSchema | None = None) -> list[MessageReport]:
    """Reports for the JSON examples in a prose document (e.g. QEMU's event docs).

    An example starts at a line whose first non-blank character is ``{`` and ends
    where its value ends. An example that never closes ends at the first prose
    line, which the framer then reports as the syntax error it is.
    """
    reports: list[MessageReport] = []
    lines = data.splitlines(keepends=True)
    index = 0
    while index < len(lines):
        if not _EXAMPLE_START.match(lines[index]):
            index += 1
            continue
        framer = JSONStreamFramer()
        frames: list[Parsed | JSONParseError] = []
        end = index
        while end < len(lines) and not frames:
            frames = framer.feed(lines[end])
            end += 1
        frames = frames or framer.close()
        if frames:
            reports.append(_report(frames[0], schema, index))
        index = end
    return reports


_EXAMPLE_START = re.compile(rb"^[ \t]*\{")


def _report(
    frame: Parsed | JSONParseError, schema: LiveSchema | None, offset: int
) -> MessageReport:
    if isinstance(frame, JSONParseError):
        # The framer keeps undecodable bytes as surrogate escapes; a report is text.
        desc = frame.desc.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return MessageReport(frame.line + offset, frame.column, "invalid", None, (desc,))
    line = frame.line + offset
    value = frame.value
    if not isinstance(value, dict):
        return MessageReport(
            line, frame.column, "invalid", None, ("QMP input must be a JSON object",)
        )
    if "event" in value:
        name, event_problems = _check_event(value, schema)
        return MessageReport(line, frame.column, "event", name, tuple(event_problems))
    if "QMP" in value:
        return MessageReport(line, frame.column, "greeting", None, tuple(_check_greeting(value)))
    if "return" in value:
        extra = sorted(set(value) - {"return", "id"})
        problems = tuple(f"{key}: unexpected member" for key in extra)
        return MessageReport(line, frame.column, "return", None, problems)
    if "error" in value:
        return MessageReport(line, frame.column, "error", None, tuple(_check_error(value)))
    if "execute" in value or "exec-oob" in value:
        request = parse_request(value, allow_oob=True)
        if isinstance(request, BadRequest):
            return MessageReport(line, frame.column, "command", None, (request.desc,))
        return MessageReport(line, frame.column, "command", request.command)
    return MessageReport(
        line,
        frame.column,
        "invalid",
        None,
        ("not a QMP message: no member event, return, error, QMP, execute or exec-oob",),
    )


def _check_event(
    message: dict[str, JSONValue], schema: LiveSchema | None
) -> tuple[str | None, list[str]]:
    name = message.get("event")
    shown = name if isinstance(name, str) else None
    out_of_range = _non_finite_member(message)
    if out_of_range is not None:
        # JSON encodes inf as null: say what was wrong rather than "got null".
        return shown, [f"{out_of_range}: number out of range (not a finite double)"]
    if schema is not None:
        return shown, schema.validate_message(message)
    try:
        decode_event(msgspec.json.encode(message))
    except ValidationError as error:
        return shown, [f"{error.path}: {error.problem}" if error.path else error.problem]
    except RecursionError:
        return shown, ["nested too deeply to check"]
    return shown, []


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

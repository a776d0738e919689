"""Find the QMP messages in a document written in QEMU's example notation.

QEMU's manual (the QMP reference, in its plain-text, reStructuredText and
Markdown renderings) writes a client message as ``-> {...}`` and a server
message as ``<- {...}``. A message may span several lines: its continuation
lines are the indented rest of the JSON value, and an object nested in it is
part of it, never a message of its own. Code blocks indented under ``::`` and
fenced ````` blocks need nothing special: a message ends where its value closes,
or at the first line that cannot continue it (a blank line followed by prose, a
dedent, a fence, the next arrow). A JSON object written without an arrow (``{``
first on its line, outside any message) is an example too, of unknown direction.

``...`` (or ``…``) outside a JSON string marks an elided example (``"data":
{...}``, a line with just ``...``): its extent is still found, so that nothing
inside it is taken for a message, but its JSON is not parsed.

This module only cuts the document; :mod:`qmpevents.protocol.validation` checks
what it finds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["CLIENT", "SERVER", "DocMessage", "find_messages"]

CLIENT = "client"
SERVER = "server"

# An arrow first on its line, followed by a blank or the end of the line.
_ARROW = re.compile(rb"^([ \t]*)(->|<-)(?=[ \t\r\n]|$)")
_FENCE = re.compile(rb"^[ \t]*(```|~~~)")
_VALUE_START = (b"{", b"[")
_ELLIPSIS = "…".encode()
_NAME = re.compile(rb'"(execute|exec-oob|event)"[ \t\r\n]*:[ \t\r\n]*"([^"\\]*)"')


@dataclass(frozen=True, slots=True)
class DocMessage:
    """One example message: where it is, who sends it, and its text.

    ``text`` holds the message's lines from column 1 of ``text_line`` with the
    arrow blanked out, so a JSON position in it is a position in the document
    once ``text_line - 1`` is added to its line number. ``trailing`` is where non-blank
    text follows the closed value inside the same block (a bracket closed too
    early, a stray character): the value is ``text[:trailing]``.
    """

    line: int  # 1-based line where the message starts
    column: int  # 1-based column of its first ``{`` or ``[``
    direction: str | None  # CLIENT (->), SERVER (<-), or None (no arrow)
    text: bytes
    text_line: int  # the document line of text's first line (the arrow's)
    elided: bool = False
    trailing: int | None = None  # offset in ``text`` of text after the value, if any

    @property
    def name(self) -> str | None:
        """The command or event name written in the message, if any (for elided ones)."""
        match = _NAME.search(self.text)
        return match.group(2).decode("utf-8", "replace") if match else None


class _Scanner:
    """Tracks JSON nesting over lines: strings, escapes, depth, and ``...`` elisions."""

    def __init__(self) -> None:
        self.depth = 0
        self.started = False
        self.elided = False
        self.consumed = 0  # bytes fed so far
        self.end: int | None = None  # offset just past the value, once it closed

    @property
    def open(self) -> bool:
        """True while the value that started has not closed."""
        return self.end is None

    def feed(self, line: bytes) -> None:
        in_string = escape = False  # a JSON string never spans lines
        for index, byte in enumerate(line):
            if self.end is not None:
                break
            char = bytes((byte,))
            if in_string:
                if escape:
                    escape = False
                elif char == b"\\":
                    escape = True
                elif char == b'"':
                    in_string = False
            elif char == b'"':
                in_string = True
            elif char in b"{[":
                self.started = True
                self.depth += 1
            elif char in b"}]":
                self.depth = max(self.depth - 1, 0)
                if self.started and not self.depth:
                    self.end = self.consumed + index + 1
            elif line.startswith(b"...", index) or line.startswith(_ELLIPSIS, index):
                self.elided = True
        self.consumed += len(line)


def find_messages(data: bytes) -> list[DocMessage]:
    """Every example message of ``data``, in document order."""
    lines = data.splitlines(keepends=True)
    messages: list[DocMessage] = []
    index = 0
    while index < len(lines):
        found = _message_at(lines, index)
        if found is None:
            index += 1
            continue
        message, index = found
        messages.append(message)
    return messages


def _indent(line: bytes) -> int:
    return len(line) - len(line.lstrip(b" \t"))


def _is_blank(line: bytes) -> bool:
    return not line.strip()


def _message_at(lines: list[bytes], index: int) -> tuple[DocMessage, int] | None:
    """The message starting at line ``index`` and the index after it, if one starts there."""
    line = lines[index]
    arrow = _ARROW.match(line)
    direction: str | None = None
    indent = _indent(line)
    if arrow is not None:
        direction = CLIENT if arrow.group(2) == b"->" else SERVER
        line = line[: arrow.start(2)] + b"  " + line[arrow.end(2) :]
        rest = line.strip()
        if not rest and index + 1 < len(lines):
            # The arrow alone on its line, the value on the next one.
            following = lines[index + 1].lstrip(b" \t")
            if not following.startswith(_VALUE_START) or _ARROW.match(lines[index + 1]):
                return None
        elif not rest.startswith(_VALUE_START):
            return None  # prose in the notation, e.g. "-> data issued by the Client"
    elif not line.lstrip(b" \t").startswith(b"{"):
        return None
    scanner = _Scanner()
    scanner.feed(line)
    taken = [line]
    end = index + 1
    while scanner.open and end < len(lines):
        gap = end
        while gap < len(lines) and _is_blank(lines[gap]):
            gap += 1
        if gap == len(lines) or not _continues(lines[gap], indent, after_blank=gap > end):
            break
        for continuation in lines[end : gap + 1]:  # blank lines too: offsets count them
            scanner.feed(continuation)
            taken.append(continuation)
        end = gap + 1
    # Deeper lines right after the value still belong to its block: a value that
    # closed too early leaves the rest of the example there.
    while end < len(lines) and not _is_blank(lines[end]) and _indent(lines[end]) > indent:
        if not _continues(lines[end], indent, after_blank=True):
            break
        taken.append(lines[end])
        end += 1
    text = b"".join(taken)
    trailing = None
    if scanner.end is not None and text[scanner.end :].strip():
        after = text[scanner.end :]
        trailing = scanner.end + len(after) - len(after.lstrip())
    start = min(
        (text.find(c) for c in _VALUE_START if text.find(c) >= 0),
        default=0,
    )
    line_number = index + 1 + text.count(b"\n", 0, start)
    column = start - (text.rfind(b"\n", 0, start) + 1) + 1
    message = DocMessage(line_number, column, direction, text, index + 1, scanner.elided, trailing)
    return message, end


def _continues(line: bytes, indent: int, *, after_blank: bool) -> bool:
    """Whether ``line`` can continue an open message whose first line is indented ``indent``."""
    if _ARROW.match(line) or _FENCE.match(line):
        return False
    depth = _indent(line)
    if after_blank:
        # Past a blank line only deeper JSON, or a closing bracket, still belongs to it.
        return depth > indent or line.lstrip(b" \t")[:1] in (b"}", b"]")
    return depth >= indent

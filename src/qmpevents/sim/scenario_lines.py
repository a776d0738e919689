"""Where a value of a TOML document is: from a path like ``steps[3].value`` to a line number.

``tomllib`` returns plain dicts and lists without positions, and msgspec reports a
validation error as a path into them (``$.steps[3].value``). To point a person at
the right line, :func:`toml_line` scans the TOML text itself:

1. Table headers are found line by line: ``[name]`` and ``[[name]]``, with
   dotted and quoted keys. The N-th ``[[steps]]`` header starts element N of
   the ``steps`` array; its section runs to the next header that is not one of
   its own sub-tables (``[[steps.do]]`` stays inside the step).
2. Inside a section, a key is the first line of the section's own lines (before
   any sub-table header) that starts with that key and ``=`` (or a dot).
3. An index into an array written inline (``do = [ {...}, {...} ]`` over
   several lines) is the line where that element's ``{`` or value starts; a
   one-line array gives the key's line.

The path is followed as far as the text allows, and the deepest line found is
returned: a member written inside an inline table points at the table's line,
a missing member at its table's header. Lines inside multi-line strings are
skipped, so a string that looks like a header is not one. This is exact for
the layout the scenario format documents (one ``[[steps]]`` table per step)
and a good approximation otherwise; it never fails.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["parse_error_path", "toml_line"]

_BARE_KEY: Final = r"[A-Za-z0-9_-]+"
_KEY_PART: Final = rf"(?:{_BARE_KEY}|\"[^\"]*\"|'[^']*')"
_DOTTED_KEY: Final = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER: Final = re.compile(rf"^\s*(\[\[|\[)\s*({_DOTTED_KEY})\s*(\]\]|\])\s*(?:#.*)?$")
_KEY_LINE: Final = re.compile(rf"^\s*({_KEY_PART})\s*[.=]")
_PATH_PART: Final = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")

PathPart = str | int


@dataclass(frozen=True, slots=True)
class _Header:
    index: int  # 0-based line index
    name: tuple[str, ...]
    array: bool


def _unquote(part: str) -> str:
    part = part.strip()
    if len(part) >= 2 and part[0] == part[-1] and part[0] in "\"'":
        return part[1:-1]
    return part


def _split_key(text: str) -> tuple[str, ...]:
    return tuple(_unquote(part) for part in re.findall(_KEY_PART, text))


def _code_lines(lines: Sequence[str]) -> list[bool]:
    """For each line, whether it is TOML code (False inside a multi-line string)."""
    code: list[bool] = []
    delimiter: str | None = None
    for line in lines:
        code.append(delimiter is None)
        # An odd count of a triple quote on a line opens or closes a multi-line string.
        for quote in ('"""', "'''"):
            if (delimiter is None or delimiter == quote) and line.count(quote) % 2:
                delimiter = None if delimiter == quote else quote
    return code


class _Document:
    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.code = _code_lines(self.lines)
        self.headers: list[_Header] = []
        for index, line in enumerate(self.lines):
            match = _HEADER.match(line) if self.code[index] else None
            if match is not None:
                opening, key, closing = match.groups()
                if len(opening) == len(closing):
                    self.headers.append(_Header(index, _split_key(key), opening == "[["))

    def section_end(self, header: _Header) -> int:
        """The line index where the section that ``header`` opens ends (exclusive)."""
        depth = len(header.name)
        for other in self.headers:
            if other.index <= header.index:
                continue
            inside = len(other.name) > depth and other.name[:depth] == header.name
            if not inside:
                return other.index
        return len(self.lines)

    def own_end(self, start: int, end: int) -> int:
        """Where a section's own keys end: its first sub-table header, or ``end``."""
        for header in self.headers:
            if start < header.index < end:
                return header.index
        return end

    def key_line(self, key: str, start: int, end: int) -> int | None:
        """The index of the line in ``[start, end)`` that sets ``key``."""
        for index in range(start, end):
            if not self.code[index]:
                continue
            match = _KEY_LINE.match(self.lines[index])
            if match is not None and _unquote(match.group(1)) == key:
                return index
        return None

    def item_line(self, key_index: int, item: int) -> int:
        """The line of element ``item`` of the array whose key is on line ``key_index``."""
        first = self.lines[key_index].partition("=")[2].strip()
        if first not in ("[", ""):
            return key_index  # a one-line array, or elements begin on the key's line
        count = 0
        for index in range(key_index + 1, len(self.lines)):
            stripped = self.lines[index].strip()
            if not stripped or stripped.startswith("#"):
                continue
            if stripped.startswith("]"):
                break
            if count == item:
                return index
            # One element per line is the only layout this approximation follows.
            count += 1
        return key_index


def toml_line(text: str, path: Sequence[PathPart]) -> int:
    """The 1-based line of ``text`` that holds the value at ``path`` (best effort; see module)."""
    doc = _Document(text)
    prefix: tuple[str, ...] = ()
    start, end = -1, len(doc.lines)  # -1: the root section has no header line
    best = 0
    i = 0
    while i < len(path):
        key = path[i]
        if not isinstance(key, str):
            break
        name = (*prefix, key)
        following = path[i + 1] if i + 1 < len(path) else None
        candidates = [
            h
            for h in doc.headers
            if start < h.index < end and h.name == name and h.array == isinstance(following, int)
        ]
        if isinstance(following, int) and following < len(candidates):
            header = candidates[following]
            i += 2
        elif not isinstance(following, int) and candidates:
            header = candidates[0]
            i += 1
        else:
            key_index = doc.key_line(key, start + 1, doc.own_end(start, end))
            if key_index is None:
                break
            best = key_index
            if isinstance(following, int):
                best = doc.item_line(key_index, following)
            break
        prefix, start, end = name, header.index, doc.section_end(header)
        best = header.index
    return best + 1


def parse_error_path(message: str) -> tuple[str, list[PathPart], str | None]:
    """Split a msgspec error into its text, its path (``$.steps[3].value``) and a field.

    The field is the name of an unknown key (whose own line is the one to show),
    else None.
    """
    text, sep, where = message.rpartition(" - at `")
    if not sep:
        text, where = message, "$`"
    path: list[PathPart] = [
        int(index) if index else name for name, index in _PATH_PART.findall(where[1:-1])
    ]
    unknown = re.match(r"Object contains unknown field `([^`]*)`", text)
    return text, path, unknown.group(1) if unknown is not None else None

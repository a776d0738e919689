"""Line framing for what a QMP server sends.

QEMU writes every message as one line ended by ``\\r\\n`` (monitor_qmp_respond
and the event broadcast both append it), so a client can frame server output by
newlines, which is far cheaper than tokenizing JSON. The framer is bounded: a
line longer than ``max_line`` is reported once and skipped up to its newline,
instead of growing the buffer, so a misbehaving server cannot exhaust memory and
every good line after the bad one still comes through.
"""

from __future__ import annotations

from typing import Final

DEFAULT_MAX_LINE: Final = 64 << 20


class OversizedLine(bytes):
    """A line over the limit that was skipped: its first bytes, and its ``size``.

    A ``bytes`` subclass (the value is the head of the line) so that the
    receive loop can treat every item alike and test for this rare case last.
    """

    size: int

    def __new__(cls, size: int, head: bytes) -> OversizedLine:
        line = super().__new__(cls, head)
        line.size = size
        return line

    @property
    def head(self) -> bytes:
        """The first bytes of the skipped line."""
        return bytes(self)


class LineFramer:
    """Bytes in, complete lines out (without ``\\r\\n``); bounded by ``max_line``."""

    __slots__ = ("_buffer", "_head", "_skipping", "max_line")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._skipping = 0  # bytes of an oversized line dropped so far (0: not skipping)
        self._head = b""

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete line held (never more than ``max_line``)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Consume ``data``; return the lines (and skipped-line reports) it completed."""
        out: list[bytes] = []
        if self._skipping:
            end = data.find(b"\n")
            if end < 0:
                self._skipping += len(data)
                return out
            out.append(OversizedLine(self._skipping + end + 1, self._head))
            self._skipping = 0
            data = data[end + 1 :]
        buffer = self._buffer
        if b"\n" not in data:
            # Still inside one line: append (never re-copy what is buffered).
            if len(buffer) + len(data) > self.max_line:
                self._skipping = len(buffer) + len(data)
                self._head = bytes(buffer[:64]) if buffer else data[:64]
                buffer.clear()
            else:
                buffer += data
            return out
        if buffer:
            buffer += data
            data = bytes(buffer)
            buffer.clear()
        if len(data) <= self.max_line and data.count(b"\n") == data.count(b"\r\n"):
            # The common case, QEMU's own output: no line can be over the limit
            # and every line ends in CRLF, so one split does all the work.
            crlf_lines = data.split(b"\r\n")
            buffer += crlf_lines.pop()
            if out:
                out.extend(crlf_lines)
                return out
            return crlf_lines
        lines = data.split(b"\n")
        rest = lines.pop()
        for line in lines:
            if len(line) > self.max_line:
                out.append(OversizedLine(len(line) + 1, line[:64]))
            elif line.endswith(b"\r"):
                out.append(line[:-1])
            else:
                out.append(line)
        if len(rest) > self.max_line:
            self._skipping = len(rest)
            self._head = rest[:64]
        else:
            buffer += rest
        return out

    def close(self) -> bytes | None:
        """End of stream: the unterminated tail, if any (a message cut off mid-way)."""
        tail = bytes(self._buffer) if self._buffer or self._skipping else None
        self._buffer.clear()
        self._skipping = 0
        return tail

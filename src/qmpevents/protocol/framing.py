"""JSON stream framing exactly as QEMU's monitor parses client input.

QEMU does not read lines: its JSON lexer (qobject/json-lexer.c) turns bytes into
tokens, its streamer (qobject/json-streamer.c) queues tokens until braces and
brackets balance, and its parser (qobject/json-parser.c) builds the value. This
module reproduces that pipeline without I/O so that every input, however it is
chunked, gives the values and the error texts that QEMU 7.2 gives:

* objects split anywhere, several per chunk, no newline at all, CRLF or LF;
* single-quoted strings (a QEMU extension);
* the limits: a token of 64 MiB, 2M tokens and nesting 1024 per value, each an
  error with QEMU's wording, after which the stream goes on (no memory growth);
* after a lexical error the lexer skips to a structural character, a control
  character or a byte 0xFE/0xFF, as QEMU's ``IN_RECOVERY`` state does.

The parser here is incremental (a stack instead of QEMU's recursion over a
queue of tokens), which keeps memory at the size of the value being built. The
first error is remembered and reported at the moment QEMU would parse the queued
tokens, so the error chosen and its timing match QEMU's.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, TypeAlias

from qmpevents.errors import JSONParseError
from qmpevents.protocol.json_literals import (
    ParseFailure,
    c_text,
    decode_string,
    keyword,
    number,
)

JSONValue: TypeAlias = "dict[str, JSONValue] | list[JSONValue] | str | int | float | bool | None"

MAX_TOKEN_SIZE: Final = 64 << 20
MAX_TOKEN_COUNT: Final = 2 << 20
MAX_NESTING: Final = 1024


@dataclass(frozen=True, slots=True)
class Parsed:
    """One complete JSON value from the stream and where it started (1-based)."""

    value: JSONValue
    line: int
    column: int


Frame: TypeAlias = Parsed | JSONParseError

# Lexer states. Token types double as "the lexer finished a token of this kind".
_START, _DQ, _DQ_ESC, _SQ, _SQ_ESC, _ZERO, _NONZERO, _NEG = range(8)
_MANTISSA, _MANTISSA_DIGITS, _EXP_E, _EXP_SIGN, _DIGITS, _KEYWORD, _RECOVERY = range(8, 15)

# Token kinds handed from the lexer to the streamer/parser.
_LCURLY, _RCURLY, _LSQUARE, _RSQUARE, _COMMA, _COLON = "{", "}", "[", "]", ",", ":"
_STRING, _INTEGER, _FLOAT, _KEYWORD_TOK = "string", "integer", "float", "keyword"

_STRUCTURAL: Final = {
    ord("{"): _LCURLY,
    ord("}"): _RCURLY,
    ord("["): _LSQUARE,
    ord("]"): _RSQUARE,
    ord(","): _COMMA,
    ord(":"): _COLON,
}
_WHITESPACE: Final = frozenset(b" \t\r\n")
_DIGIT: Final = frozenset(b"0123456789")
_LOWER: Final = frozenset(range(ord("a"), ord("z") + 1))

# Runs that a state consumes without any decision, matched in one regex step.
_DQ_RUN: Final = re.compile(rb"[^\"\\\x00-\x1f\xfe\xff]+")
_SQ_RUN: Final = re.compile(rb"[^'\\\x00-\x1f\xfe\xff]+")
_DIGIT_RUN: Final = re.compile(rb"[0-9]+")
_KEYWORD_RUN: Final = re.compile(rb"[a-z]+")
_WHITESPACE_RUN: Final = re.compile(rb"[ \t\r]+")
# IN_RECOVERY skips printable bytes and tab; it stops (without consuming) at a
# control character, 0xFE/0xFF or a structural character: [ ] { } : ,
_RECOVERY_RUN: Final = re.compile(rb"[^\x00-\x08\x0a-\x1f\xfe\xff\[\]{}:,]+")


class _Container:
    """One open array or object of the value being parsed."""

    __slots__ = ("is_object", "items", "key", "state")

    # states: "first" (just opened), "item" (after a comma), "colon" (object: key
    # read), "value" (object: colon read), "sep" (a member or element was read)
    def __init__(self, is_object: bool) -> None:
        self.is_object = is_object
        self.items: dict[str, JSONValue] | list[JSONValue] = {} if is_object else []
        self.key: str = ""
        self.state = "first"


class JSONStreamFramer:
    """Bytes in, complete JSON values (or QEMU-worded errors) out.

    Feed any chunking of the stream; each call returns the frames completed by
    that chunk, in order. Errors are :class:`~qmpevents.errors.JSONParseError`
    values, not raised, because a stream goes on after an error exactly as
    QEMU's does. ``desc`` of each error is what QEMU would reply.
    """

    def __init__(
        self,
        *,
        max_token_size: int = MAX_TOKEN_SIZE,
        max_token_count: int = MAX_TOKEN_COUNT,
        max_nesting: int = MAX_NESTING,
    ) -> None:
        self.max_token_size = max_token_size
        self.max_token_count = max_token_count
        self.max_nesting = max_nesting
        # lexer
        self._state = _START
        self._token = bytearray()
        self._token_line = 1
        self._token_column = 1
        self._line = 1
        self._line_start = 0  # stream offset of the current line's first byte
        self._consumed = 0  # stream offset of the chunk being fed
        # streamer
        self._braces = 0
        self._brackets = 0
        self._token_count = 0
        self._token_bytes = 0
        # parser
        self._stack: list[_Container] = []
        self._failure: str | None = None
        self._failure_line = 0
        self._failure_column = 0
        self._result: JSONValue = None
        self._value_line = 0
        self._value_column = 0
        self._out: list[Frame] = []

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete token (bounded by ``max_token_size``)."""
        return len(self._token)

    @property
    def in_value(self) -> bool:
        """True while a value has started and not yet completed."""
        return self._token_count > 0 or self._state not in (_START, _RECOVERY)

    def feed(self, data: bytes) -> list[Frame]:
        """Consume ``data`` and return the frames it completed."""
        self._out = []
        view = bytes(data)
        i = 0
        n = len(view)
        base = self._consumed
        while i < n:
            state = self._state
            if state == _START:
                i = self._lex_start(view, i, n, base)
            elif state in (_DQ, _SQ):
                run = (_DQ_RUN if state == _DQ else _SQ_RUN).match(view, i)
                if run is not None:
                    end = min(run.end(), i + self.max_token_size + 1 - len(self._token))
                    self._token += view[i:end]
                    i = end
                    if self._check_token_size():
                        continue
                    if i >= n:
                        break
                ch = view[i]
                i += 1
                self._token.append(ch)
                quote = ord('"') if state == _DQ else ord("'")
                if ch == quote:
                    self._emit_token(_STRING)
                elif ch == ord("\\"):
                    self._state = _DQ_ESC if state == _DQ else _SQ_ESC
                else:
                    self._lex_error(base + i)
                self._check_token_size()
            elif state in (_DQ_ESC, _SQ_ESC):
                ch = view[i]
                i += 1
                self._token.append(ch)
                if 0x20 <= ch <= 0xFD:
                    self._state = _DQ if state == _DQ_ESC else _SQ
                else:
                    self._lex_error(base + i)
                self._check_token_size()
            elif state == _RECOVERY:
                run = _RECOVERY_RUN.match(view, i)
                if run is not None:
                    i = run.end()
                    if i >= n:
                        break
                # a stop byte: back to START without consuming it (LOOKAHEAD)
                self._state = _START
            else:
                i = self._lex_number_or_keyword(view, i, n, base)
        self._consumed = base + n
        out = self._out
        self._out = []
        return out

    def close(self) -> list[Frame]:
        """End of input: finish a pending token and report an unfinished value."""
        self._out = []
        if self._state in (_DQ, _SQ, _DQ_ESC, _SQ_ESC):
            self._lex_error(self._consumed)
        elif self._state in (_ZERO, _NONZERO, _MANTISSA_DIGITS, _DIGITS):
            self._emit_token(_INTEGER if self._state in (_ZERO, _NONZERO) else _FLOAT)
        elif self._state == _KEYWORD:
            self._emit_token(_KEYWORD_TOK)
        elif self._state in (_NEG, _MANTISSA, _EXP_E, _EXP_SIGN):
            self._lex_error(self._consumed)
        self._state = _START
        if self._token_count:
            self._fail_now("JSON parse error, premature EOI")
        out = self._out
        self._out = []
        return out

    # -- lexer -------------------------------------------------------------

    def _lex_start(self, view: bytes, i: int, n: int, base: int) -> int:
        ch = view[i]
        if ch in _WHITESPACE:
            if ch == 0x0A:
                self._line += 1
                self._line_start = base + i + 1
                return i + 1
            run = _WHITESPACE_RUN.match(view, i)
            return run.end() if run is not None else i + 1
        self._token_line = self._line
        self._token_column = base + i - self._line_start + 1
        self._token.clear()
        self._token.append(ch)
        i += 1
        kind = _STRUCTURAL.get(ch)
        if kind is not None:
            self._emit_token(kind)
        elif ch == ord('"'):
            self._state = _DQ
        elif ch == ord("'"):
            self._state = _SQ
        elif ch == ord("0"):
            self._state = _ZERO
        elif ch in _DIGIT:
            self._state = _NONZERO
        elif ch == ord("-"):
            self._state = _NEG
        elif ch in _LOWER:
            self._state = _KEYWORD
        else:
            self._lex_error(base + i)
        return i

    def _lex_number_or_keyword(self, view: bytes, i: int, n: int, base: int) -> int:
        """States that end at the first byte they do not accept (LOOKAHEAD)."""
        state = self._state
        ch = view[i]
        if state == _KEYWORD:
            run = _KEYWORD_RUN.match(view, i)
            if run is not None:
                self._token += view[i : run.end()]
                self._check_token_size()
                return run.end()
            self._emit_token(_KEYWORD_TOK)  # LOOKAHEAD: this byte is lexed again
            return i
        if state == _ZERO and ch in _DIGIT:
            # QEMU forbids leading zeros: the digit is consumed into the error
            self._token.append(ch)
            self._lex_error(base + i + 1)
            return i + 1
        if state in (_NONZERO, _DIGITS, _MANTISSA_DIGITS):
            run = _DIGIT_RUN.match(view, i)
            if run is not None:
                self._token += view[i : run.end()]
                self._check_token_size()
                return run.end()
        nxt = _NUMBER_TABLE[state].get(ch)
        if nxt is not None:
            self._token.append(ch)
            self._state = nxt
            self._check_token_size()
            return i + 1
        terminal = _NUMBER_TERMINAL.get(state)
        if terminal is not None:
            self._emit_token(terminal)  # LOOKAHEAD: this byte is lexed again
            return i
        # no transition and not a terminal state: QEMU consumes the byte into the error
        self._token.append(ch)
        self._lex_error(base + i + 1)
        return i + 1

    def _check_token_size(self) -> bool:
        """QEMU's lexer cap: a token over the limit becomes an error and is dropped."""
        if len(self._token) <= self.max_token_size:
            return False
        self._token.clear()
        self._state = _START
        self._fail_now("JSON token size limit exceeded")
        return True

    def _lex_error(self, offset_after: int) -> None:
        """A byte no token accepts: report what the lexer held, then resynchronize."""
        text = c_text(bytes(self._token))
        if self._token.endswith(b"\n"):  # the offending byte was a newline
            self._line += 1
            self._line_start = offset_after
        self._token.clear()
        self._state = _RECOVERY
        self._fail_now(f"JSON parse error, stray '{text}'")

    # -- streamer ----------------------------------------------------------

    def _emit_token(self, kind: str) -> None:
        text = bytes(self._token)
        self._token.clear()
        self._state = _START
        if kind == _LCURLY:
            self._braces += 1
        elif kind == _RCURLY:
            self._braces -= 1
        elif kind == _LSQUARE:
            self._brackets += 1
        elif kind == _RSQUARE:
            self._brackets -= 1
        if self._token_bytes + len(text) + 1 > self.max_token_size:
            self._fail_now("JSON token size limit exceeded")
            return
        if self._token_count + 1 > self.max_token_count:
            self._fail_now("JSON token count limit exceeded")
            return
        if self._braces + self._brackets > self.max_nesting:
            self._fail_now("JSON nesting depth limit exceeded")
            return
        if self._token_count == 0:
            self._value_line = self._token_line
            self._value_column = self._token_column
        self._token_count += 1
        self._token_bytes += len(text)
        if self._failure is None:
            try:
                self._parse_token(kind, text)
            except ParseFailure as failure:
                self._failure = f"JSON parse error, {failure.message}"
                self._failure_line = self._token_line
                self._failure_column = self._token_column
        if (self._braces > 0 or self._brackets > 0) and self._braces >= 0 and self._brackets >= 0:
            return
        # QEMU parses the queued tokens now.
        if self._failure is not None:
            self._out.append(
                JSONParseError(self._failure, None, self._failure_line, self._failure_column)
            )
        elif self._stack:
            self._out.append(
                JSONParseError(
                    "JSON parse error, premature EOI", None, self._token_line, self._token_column
                )
            )
        else:
            self._out.append(Parsed(self._result, self._value_line, self._value_column))
        self._reset_value()

    def _fail_now(self, desc: str) -> None:
        self._out.append(JSONParseError(desc, None, self._token_line, self._token_column))
        self._reset_value()

    def _reset_value(self) -> None:
        self._braces = 0
        self._brackets = 0
        self._token_count = 0
        self._token_bytes = 0
        self._stack.clear()
        self._failure = None
        self._result = None

    # -- parser ------------------------------------------------------------

    def _parse_token(self, kind: str, text: bytes) -> None:
        stack = self._stack
        top = stack[-1] if stack else None
        if top is not None:
            state = top.state
            if state == "colon":
                if kind != _COLON:
                    raise ParseFailure("missing : in object pair")
                top.state = "value"
                return
            if state == "sep":
                if kind == _COMMA:
                    top.state = "item"
                    return
                if kind == (_RCURLY if top.is_object else _RSQUARE):
                    stack.pop()
                    self._complete(top.items)
                    return
                raise ParseFailure(
                    "expected separator in dict" if top.is_object else "expected separator in list"
                )
            if state == "first" and kind == (_RCURLY if top.is_object else _RSQUARE):
                stack.pop()
                self._complete(top.items)
                return
        # A value is expected here (an object key is parsed as a value first).
        if kind == _LCURLY:
            stack.append(_Container(True))
        elif kind == _LSQUARE:
            stack.append(_Container(False))
        elif kind == _STRING:
            self._complete(decode_string(text))
        elif kind in (_INTEGER, _FLOAT):
            self._complete(number(kind == _INTEGER, text))
        elif kind == _KEYWORD_TOK:
            self._complete(keyword(text))
        else:
            raise ParseFailure("expecting value")

    def _complete(self, value: JSONValue) -> None:
        """A value is finished: place it in its container, or it is the result."""
        if not self._stack:
            self._result = value
            return
        top = self._stack[-1]
        if not top.is_object:
            assert isinstance(top.items, list)
            top.items.append(value)
            top.state = "sep"
        elif top.state in ("first", "item"):
            if not isinstance(value, str):
                raise ParseFailure("key is not a string in object")
            top.key = value
            top.state = "colon"
        else:
            assert isinstance(top.items, dict)
            if top.key in top.items:
                raise ParseFailure("duplicate key")
            top.items[top.key] = value
            top.state = "sep"


# Number states that take one more byte, and the token each ends as (None: an
# unfinished number, where any other byte is an error).
_NUMBER_TABLE: Final[dict[int, dict[int, int]]] = {
    # QEMU's IN_ZERO takes only '.': "0e1" is the integer 0, then keyword "e".
    _ZERO: {ord("."): _MANTISSA},
    _NONZERO: {ord("."): _MANTISSA, ord("e"): _EXP_E, ord("E"): _EXP_E},
    _NEG: {ord("0"): _ZERO, **{d: _NONZERO for d in b"123456789"}},
    _MANTISSA: {d: _MANTISSA_DIGITS for d in b"0123456789"},
    _MANTISSA_DIGITS: {ord("e"): _EXP_E, ord("E"): _EXP_E},
    _EXP_E: {ord("-"): _EXP_SIGN, ord("+"): _EXP_SIGN, **{d: _DIGITS for d in b"0123456789"}},
    _EXP_SIGN: {d: _DIGITS for d in b"0123456789"},
    _DIGITS: {},
}
_NUMBER_TERMINAL: Final[dict[int, str]] = {
    _ZERO: _INTEGER,
    _NONZERO: _INTEGER,
    _MANTISSA_DIGITS: _FLOAT,
    _DIGITS: _FLOAT,
}

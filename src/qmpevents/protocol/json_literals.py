"""How QEMU's JSON parser reads one literal token: strings, numbers, keywords.

Used by :mod:`.framing` once its lexer has cut a token; kept apart because the
rules are QEMU's own (qobject/json-parser.c): modified UTF-8, ``\\u`` escapes
checked as QEMU's cvt4hex() checks them, noncharacters refused, integers that
become doubles past uint64, and error tokens quoted as C strings.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["ParseFailure", "c_text", "decode_string", "keyword", "number"]

_INT64_MIN: Final = -(1 << 63)
_UINT64_MAX: Final = (1 << 64) - 1


_ESCAPES: Final = {
    ord('"'): '"',
    ord("'"): "'",
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}
_HEX: Final = frozenset(b"0123456789abcdefABCDEF")
# Code points QEMU's is_valid_codepoint() refuses besides surrogates: U+FDD0..U+FDEF
# and the last two of every plane.
_NONCHARACTER: Final = re.compile(
    "[\ufdd0-\ufdef"
    + "".join(chr(p * 0x10000 + 0xFFFE) + chr(p * 0x10000 + 0xFFFF) for p in range(17))
    + "]"
)


def _valid_codepoint(cp: int) -> bool:
    return (
        0 <= cp <= 0x10FFFF
        and not 0xD800 <= cp <= 0xDFFF
        and (cp & 0xFFFE) != 0xFFFE
        and not 0xFDD0 <= cp <= 0xFDEF
    )


class ParseFailure(Exception):
    """Internal: the first parse error of the current value (QEMU keeps only the first)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def decode_string(token: bytes) -> str:
    """QEMU's parse_string(): the token includes its quotes (either kind)."""
    body = token[1:-1]
    if b"\\" not in body:
        return _decode_utf8(body)
    out: list[str] = []
    i = 0
    n = len(body)
    while i < n:
        j = body.find(b"\\", i)
        if j < 0:
            out.append(_decode_utf8(body[i:]))
            break
        if j > i:
            out.append(_decode_utf8(body[i:j]))
        esc = body[j + 1] if j + 1 < n else -1
        simple = _ESCAPES.get(esc)
        if simple is not None:
            out.append(simple)
            i = j + 2
            continue
        if esc != ord("u"):
            raise ParseFailure("invalid escape sequence in string")
        # QEMU's cvt4hex() reads four characters whatever they are (-1 when one
        # is not hex) and the error quotes the escape as far as it read, up to
        # the end of the token, closing quote included.
        i = j + 6
        cp = _hex4(body, j + 2)
        if 0xD800 <= cp <= 0xDBFF and body[i : i + 2] == b"\\u":
            trailing = _hex4(body, i + 2)
            if 0xDC00 <= trailing <= 0xDFFF:
                cp = 0x10000 + ((cp - 0xD800) << 10) + (trailing - 0xDC00)
                i += 6
            else:
                cp = -1
        if not _valid_codepoint(cp):
            quoted = c_text(token[1 + j : 1 + i])
            raise ParseFailure(f"{quoted} is not a valid Unicode character")
        out.append(chr(cp))
    return "".join(out)


def _hex4(body: bytes, start: int) -> int:
    digits = body[start : start + 4]
    if len(digits) != 4 or not all(d in _HEX for d in digits):
        return -1
    return int(digits, 16)


def _decode_utf8(raw: bytes) -> str:
    """Modified UTF-8 as QEMU reads it: C0 80 is NUL; noncharacters are invalid."""
    if raw.isascii():
        return raw.decode("ascii")
    try:
        text = raw.replace(b"\xc0\x80", b"\x00").decode("utf-8")
    except UnicodeDecodeError:
        raise ParseFailure("invalid UTF-8 sequence in string") from None
    if _NONCHARACTER.search(text):
        raise ParseFailure("invalid UTF-8 sequence in string")
    return text


_MAX_INT_CHARS = 21  # "-9223372036854775808" is 20 characters


def c_text(token: bytes) -> str:
    """A token as QEMU's error message holds it: a C string, so cut at a NUL byte.

    Invalid UTF-8 stays as surrogate escapes, so that the encoder writes one
    U+FFFD per bad sequence, as QEMU's JSON writer does.
    """
    return token.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def number(is_integer: bool, text: bytes) -> int | float:
    """QEMU's parse_literal(): int64, else uint64, else double."""
    # Anything longer than 20 digits is outside uint64 anyway, and Python's
    # int() refuses past 4300 digits: QEMU makes such a literal a double (inf).
    if is_integer and len(text) <= _MAX_INT_CHARS:
        value = int(text)
        if _INT64_MIN <= value <= _UINT64_MAX:
            return value
    return float(text)


def keyword(text: bytes) -> bool | None:
    if text == b"true":
        return True
    if text == b"false":
        return False
    if text == b"null":
        return None
    raise ParseFailure(f"invalid keyword '{text.decode('ascii')}'")

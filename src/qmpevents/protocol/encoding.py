"""Encode QMP messages byte for byte as QEMU 7.2 sends them.

QEMU serialises a QObject with its JSON writer (qobject/json-writer.c, driven by
qobject/qjson.c). Three things make its output differ from ``json.dumps``:

* Object members come out in QDict iteration order (qobject/qdict.c): by hash
  bucket ``tdb_hash(key) % 512`` ascending, and within a bucket in *reverse*
  insertion order, because a new entry is put at the head of the bucket list
  (``QLIST_INSERT_HEAD``). Callers therefore pass dicts in the order QEMU
  inserts the members, which is the QAPI schema order.
* Strings are escaped by ``quoted_str()``: the usual short escapes, ``\\uXXXX``
  with upper-case hex for everything else below 0x20 or from 0x7F, surrogate
  pairs beyond the BMP, and U+FFFD for whatever util/unicode.c's
  ``mod_utf8_codepoint()`` rejects. The output is pure ASCII.
* Numbers are printed with ``%`` PRId64 / PRIu64 for integers and ``%.17g``
  for doubles.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec

__all__ = ["encode", "encode_event", "qdict_bucket", "qdict_order"]

# QDICT_BUCKET_MAX in include/qapi/qmp/qdict.h.
_QDICT_BUCKETS = 512
_U32 = 0xFFFFFFFF

# A QNum holds an int64 or a uint64; anything wider only exists in QEMU as the
# double its JSON parser makes of it (qobject/json-parser.c falls back to strtod).
_INT_MIN = -(2**63)
_INT_END = 2**64

# Characters quoted_str() copies unchanged: printable ASCII except '"' and '\'.
_NEEDS_ESCAPE = re.compile(r"[^\x20\x21\x23-\x5b\x5d-\x7e]")
_SURROGATE = re.compile(r"[\ud800-\udfff]")

_SHORT_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}

# Smallest code point per sequence length 2..6 (mod_utf8_codepoint's min_cp),
# to reject overlong encodings.
_MIN_CP = (0x80, 0x800, 0x10000, 0x200000, 0x4000000)
_REPLACEMENT = 0xFFFD


@functools.lru_cache(maxsize=4096)
def qdict_bucket(key: str) -> int:
    """Return the QDict hash bucket (0..511) of member name ``key``.

    This is ``tdb_hash()`` of the key's UTF-8 bytes modulo 512, computed in
    unsigned 32-bit arithmetic as qobject/qdict.c does.
    """
    data = _qemu_bytes(key)
    value = (0x238F13AF * len(data)) & _U32
    for i, byte in enumerate(data):
        value = (value + (byte << (i * 5 % 24))) & _U32
    return ((1103515243 * value + 12345) & _U32) % _QDICT_BUCKETS


@functools.lru_cache(maxsize=1024)
def _layout(keys: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """Each member name of an object in wire order, with the text printed before its value."""
    for key in keys:
        if not isinstance(key, str):
            raise TypeError(f"QMP object keys must be str, not {type(key).__name__}")
    # sorted() is stable, so sorting the reversed insertion order by bucket
    # leaves keys that share a bucket newest first, as QLIST_INSERT_HEAD does.
    ordered = sorted(reversed(keys), key=qdict_bucket)
    return tuple(
        (key, (", " if position else "") + _string(key) + ": ")
        for position, key in enumerate(ordered)
    )


def qdict_order(keys: Sequence[str]) -> list[str]:
    """Return the order in which QEMU prints the distinct member names ``keys``.

    ``keys`` is the order the members were inserted into the QDict; the result
    is the QDict iteration order: bucket ascending, and within a bucket the
    most recently inserted first.
    """
    return [key for key, _ in _layout(tuple(keys))]


def encode(message: object) -> bytes:
    """Return ``message`` as the one ASCII line QEMU 7.2 would send, ``\\r\\n`` included.

    ``message`` is built of dicts (or other mappings) with ``str`` keys in
    insertion order, lists, tuples, ``str``, ``int``, ``float``, ``bool``,
    ``None`` and ``msgspec.Struct`` instances (converted like
    ``msgspec.to_builtins``, so in field declaration order with renames
    applied). Integers beyond the int64/uint64 range print as the double QEMU's
    parser would have made of them. Raises ``TypeError`` for anything else.
    """
    try:
        text = _value(message)
    except RecursionError:
        # A client may nest an id up to QEMU's depth limit (1024); QEMU echoes it.
        text = _deep_value(message)
    return (text + "\r\n").encode("ascii")


class _Text(str):
    """Output text on :func:`_deep_value`'s stack, as opposed to a value to encode."""

    __slots__ = ()


def _deep_value(value: object) -> str:
    """:func:`_value` without recursion, for values nested deeper than the stack allows."""
    out: list[str] = []
    stack: list[object] = [value]
    while stack:
        item = stack.pop()
        if type(item) is _Text:
            out.append(item)
            continue
        if isinstance(item, msgspec.Struct):
            item = msgspec.to_builtins(item)
        parts: list[object]
        if isinstance(item, Mapping) and item:
            parts = [_Text("{")]
            for key, prefix in _layout(tuple(item)):
                parts += [_Text(prefix), item[key]]
        elif isinstance(item, list | tuple) and item:
            parts = [_Text("[")]
            for index, element in enumerate(item):
                parts += [_Text(", "), element] if index else [element]
        else:
            out.append(_value(item))  # a scalar, or an empty container
            continue
        parts.append(_Text("}" if parts[0] == "{" else "]"))
        stack.extend(reversed(parts))
    return "".join(out)


def encode_event(
    name: str, seconds: int, microseconds: int, data: Mapping[str, object] | None
) -> bytes:
    """Return the wire line of event ``name`` raised at ``seconds``.``microseconds``.

    Equal to ``encode`` of the event envelope: ``timestamp``, ``event`` and
    ``data`` fall in different QDict buckets, so their wire order is always
    that one. ``data`` (members in schema order) is left out when it is
    ``None`` or empty, as QEMU does for events without arguments.
    """
    head = (
        f'{{"timestamp": {{"seconds": {seconds:d}, "microseconds": {microseconds:d}}}, '
        f'"event": {_string(name)}'
    )
    if data:
        return (head + ', "data": ' + _mapping(data) + "}\r\n").encode("ascii")
    return (head + "}\r\n").encode("ascii")


def _value(value: object) -> str:
    encoder = _ENCODERS.get(type(value))
    if encoder is not None:
        return encoder(value)
    # Subclasses (StrEnum, IntEnum, OrderedDict...) and Structs: rare, so they
    # stay off the exact-type table lookup above.
    if isinstance(value, msgspec.Struct):
        return _value(msgspec.to_builtins(value))
    if isinstance(value, str):
        return _string(value)
    if isinstance(value, bool):
        return _bool(value)
    if isinstance(value, int):
        return _int(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, Mapping):
        return _mapping(value)
    if isinstance(value, list | tuple):
        return _array(value)
    raise TypeError(f"cannot encode {type(value).__name__} as QMP JSON")


def _mapping(obj: Mapping[str, object]) -> str:
    if not obj:
        return "{}"
    return "{" + "".join([prefix + _value(obj[key]) for key, prefix in _layout(tuple(obj))]) + "}"


def _array(items: list[object] | tuple[object, ...]) -> str:
    return "[" + ", ".join(map(_value, items)) + "]"


def _int(number: int) -> str:
    if _INT_MIN <= number < _INT_END:
        # int() so that an int subclass with its own __str__ prints its value.
        return str(int(number))
    try:
        return _float(float(number))
    except OverflowError:
        # strtod() saturates to HUGE_VAL, which glibc prints as "inf".
        return "inf" if number > 0 else "-inf"


def _bool(flag: bool) -> str:
    return "true" if flag else "false"


def _null(_: None) -> str:
    return "null"


def _float(number: float) -> str:
    # Python's "g" formatting is C's "%.17g" for every finite value and for
    # infinities; a NaN cannot reach here from QEMU's parser.
    return f"{number:.17g}"


def _string(text: str) -> str:
    if len(text) <= _CACHED_STRING_MAX:
        return _quote_cached(text)
    return _quote(text)


def _quote(text: str) -> str:
    if _NEEDS_ESCAPE.search(text) is None:
        return '"' + text + '"'
    if _SURROGATE.search(text) is not None:
        return '"' + "".join(map(_escape_code_point, _qemu_code_points(_qemu_bytes(text)))) + '"'
    return '"' + _NEEDS_ESCAPE.sub(_escape_match, text) + '"'


# Short values repeat (enum values, node and device names, event names), so
# their quoted form is cached; long ones (HMP output) would only fill memory.
_CACHED_STRING_MAX = 64
_quote_cached = functools.lru_cache(maxsize=4096)(_quote)

_ENCODERS: dict[type, Callable[[Any], str]] = {
    str: _string,
    dict: _mapping,
    int: _int,
    bool: _bool,
    type(None): _null,
    float: _float,
    list: _array,
    tuple: _array,
}


def _escape_match(match: re.Match[str]) -> str:
    return _escape_code_point(ord(match.group()))


@functools.lru_cache(maxsize=4096)
def _escape_code_point(cp: int) -> str:
    char = chr(cp)
    short = _SHORT_ESCAPES.get(char)
    if short is not None:
        return short
    if not _is_valid_code_point(cp):
        cp = _REPLACEMENT
    if cp > 0xFFFF:
        cp -= 0x10000
        return f"\\u{0xD800 + (cp >> 10):04X}\\u{0xDC00 + (cp & 0x3FF):04X}"
    if cp < 0x20 or cp >= 0x7F:
        return f"\\u{cp:04X}"
    return char


def _is_valid_code_point(cp: int) -> bool:
    # util/unicode.c is_valid_codepoint(): QEMU refuses surrogates and the
    # Unicode noncharacters, and its writer prints U+FFFD in their place.
    return not (
        cp > 0x10FFFF or 0xD800 <= cp <= 0xDFFF or 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE
    )


def _qemu_bytes(text: str) -> bytes:
    """The bytes QEMU would hold for ``text``.

    Lone surrogates U+DC80..U+DCFF are raw bytes smuggled through a
    ``surrogateescape`` decode and become those bytes again; any other lone
    surrogate is kept as its three-byte (invalid) UTF-8 form.
    """
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return b"".join(
            bytes((ord(char) - 0xDC00,))
            if "\udc80" <= char <= "\udcff"
            else char.encode("utf-8", "surrogatepass")
            for char in text
        )


def _qemu_code_points(data: bytes) -> list[int]:
    """Decode ``data`` as util/unicode.c mod_utf8_codepoint() does.

    Each invalid sequence yields one U+FFFD: a bad lead byte consumes one byte,
    a truncated sequence consumes its lead and the continuation bytes seen so
    far, and a complete but overlong, surrogate or noncharacter sequence is
    consumed whole. The modified-UTF-8 NUL ``C0 80`` decodes to U+0000.
    """
    points: list[int] = []
    pos, end = 0, len(data)
    while pos < end:
        byte = data[pos]
        pos += 1
        if byte < 0x80:
            points.append(byte)
            continue
        if byte >= 0xFE or not byte & 0x40:
            points.append(_REPLACEMENT)
            continue
        length, mask = 0, 0x80
        while byte & mask:
            length += 1
            mask >>= 1
        cp = byte & (mask - 1)
        for _ in range(length - 1):
            if pos >= end or data[pos] & 0xC0 != 0x80:
                cp = -1
                break
            cp = (cp << 6) | (data[pos] & 0x3F)
            pos += 1
        overlong = cp < _MIN_CP[length - 2] and not (cp == 0 and length == 2)
        if cp < 0 or overlong or not _is_valid_code_point(cp):
            cp = _REPLACEMENT
        points.append(cp)
    return points

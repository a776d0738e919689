"""The QEMU-exact encoder: QDict member order, string escapes, numbers, envelopes."""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import math
import re
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qmpevents.protocol import encoding
from qmpevents.protocol.encoding import encode, encode_event, qdict_bucket, qdict_order

# --- QDict order ---------------------------------------------------------------


def reference_tdb_hash(key: str) -> int:
    """tdb_hash() written out with C unsigned 32-bit types, as an independent oracle."""
    data = key.encode("utf-8")
    value = ctypes.c_uint32(0x238F13AF * len(data))
    for i, byte in enumerate(data):
        value = ctypes.c_uint32(value.value + (byte << (i * 5 % 24)))
    return ctypes.c_uint32(1103515243 * value.value + 12345).value


@pytest.mark.parametrize(
    ("inserted", "printed"),
    [
        (["major", "minor", "micro"], ["micro", "minor", "major"]),
        (["running", "singlestep", "status"], ["status", "singlestep", "running"]),
        (["return", "id"], ["return", "id"]),
        (["id", "return"], ["return", "id"]),
        (["error", "id"], ["id", "error"]),
        (["event", "timestamp", "data"], ["timestamp", "event", "data"]),
        (
            ["type", "error", "node-name", "sector-num", "sectors-count"],
            ["node-name", "sectors-count", "sector-num", "type", "error"],
        ),
        (["id", "open"], ["open", "id"]),
        ([], []),
    ],
)
def test_qdict_order_matches_qemu(inserted: list[str], printed: list[str]) -> None:
    assert qdict_order(inserted) == printed


def test_keys_sharing_a_bucket_come_out_newest_first() -> None:
    assert qdict_bucket("minor") == qdict_bucket("micro")
    assert qdict_order(["minor", "micro"]) == ["micro", "minor"]
    assert qdict_order(["micro", "minor"]) == ["minor", "micro"]


@given(st.text())
def test_bucket_is_tdb_hash_mod_512(key: str) -> None:
    if re.search("[\ud800-\udfff]", key):
        return
    assert qdict_bucket(key) == reference_tdb_hash(key) % 512


@given(st.lists(st.text(max_size=12), unique=True))
def test_qdict_order_is_bucket_then_reverse_insertion(keys: list[str]) -> None:
    order = qdict_order(keys)
    assert sorted(order) == sorted(keys)
    positions = [(qdict_bucket(key), -keys.index(key)) for key in order]
    assert positions == sorted(positions)


# --- strings -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        ("plain ASCII, with / and ' kept", '"plain ASCII, with / and \' kept"'),
        ('"\\\b\f\n\r\t', '"\\"\\\\\\b\\f\\n\\r\\t"'),
        ("\x00\x01\x1b\x1f\x7f", '"\\u0000\\u0001\\u001B\\u001F\\u007F"'),
        ("h\u00e9llo \u2603", '"h\\u00E9llo \\u2603"'),
        ("\U0001f600", '"\\uD83D\\uDE00"'),
        ("\U0010fffd", '"\\uDBFF\\uDFFD"'),
        ("\ufffd", '"\\uFFFD"'),
        # surrogateescape bytes and other lone surrogates: invalid UTF-8 to QEMU.
        ("\udcff", '"\\uFFFD"'),
        ("\ud800", '"\\uFFFD"'),
        ("\udfff", '"\\uFFFD"'),
        # Noncharacters, refused by util/unicode.c is_valid_codepoint().
        ("\ufffe\uffff\ufdd0\ufdef\U0001fffe", '"\\uFFFD\\uFFFD\\uFFFD\\uFFFD\\uFFFD"'),
        ("", '""'),
    ],
)
def test_string_escapes(text: str, wire: str) -> None:
    assert encode(text) == wire.encode("ascii") + b"\r\n"


# Recorded from qemu-system-x86_64 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3):
# an unterminated string '"a<bytes>\n' comes back inside "stray '...'", which
# shows how QEMU's writer prints arbitrary bytes. Each invalid sequence is one
# U+FFFD, however many bytes it spans, so decoding byte by byte is not enough.
QEMU_BYTES = [
    (b"a\xe2\x98b", "a\\uFFFDb"),  # truncated 3-byte sequence: one U+FFFD
    (b"a\xe2\x98", "a\\uFFFD"),
    (b"a\xed\xa0\x80b", "a\\uFFFDb"),  # UTF-8 of a surrogate
    (b"a\xef\xbf\xbeb", "a\\uFFFDb"),  # U+FFFE
    (b"a\xef\xb7\x90b", "a\\uFFFDb"),  # U+FDD0
    (b"a\xf0\x9f\xbf\xbeb", "a\\uFFFDb"),  # U+1FFFE
    (b"a\xc0\x80b", "a\\u0000b"),  # modified UTF-8 NUL
    (b"a\xc1\xbfb", "a\\uFFFDb"),  # overlong
    (b"a\xe0\x80\x80b", "a\\uFFFDb"),  # overlong NUL in 3 bytes
    (b"a\xf4\x90\x80\x80b", "a\\uFFFDb"),  # beyond U+10FFFF
    (b"a\xf8\x88\x80\x80\x80b", "a\\uFFFDb"),  # 5-byte sequence
    (b"a\x80\x80b", "a\\uFFFD\\uFFFDb"),  # stray continuation bytes: one each
    (b"a\xe2\x98\x83b", "a\\u2603b"),
    (b"a\xf0\x9f\x98\x80b", "a\\uD83D\\uDE00b"),
    (b"a\x7fb", "a\\u007Fb"),
    (b"\xff", "\\uFFFD"),
]


@pytest.mark.parametrize(("raw", "wire"), QEMU_BYTES)
def test_invalid_utf8_is_printed_as_qemu_does(raw: bytes, wire: str) -> None:
    text = raw.decode("utf-8", "surrogateescape")
    assert encode(text) == b'"' + wire.encode("ascii") + b'"\r\n'


def _qemu_visible(text: str) -> str:
    # What a client reads back: noncharacters arrive as U+FFFD.
    return "".join(
        "\ufffd" if 0xFDD0 <= ord(char) <= 0xFDEF or ord(char) & 0xFFFE == 0xFFFE else char
        for char in text
    )


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_strings_round_trip(text: str) -> None:
    line = encode(text)
    assert line.isascii()
    assert json.loads(line) == _qemu_visible(text)


@given(st.text())
def test_any_str_gives_ascii(text: str) -> None:
    assert encode(text).isascii()


# --- numbers and constants -----------------------------------------------------


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (0, b"0"),
        (-7, b"-7"),
        (2**63 - 1, b"9223372036854775807"),
        (-(2**63), b"-9223372036854775808"),
        (2**64 - 1, b"18446744073709551615"),
        # Wider than any QNum: printed as the double QEMU's parser makes of it.
        (123456789012345678901234567890, b"1.2345678901234568e+29"),
        (-(2**64), b"-1.8446744073709552e+19"),
        (10**400, b"inf"),
        (1e3, b"1000"),
        (1.5, b"1.5"),
        (0.1, b"0.10000000000000001"),
        (-0.0, b"-0"),
        (1.2345678901234568e29, b"1.2345678901234568e+29"),
        (True, b"true"),
        (False, b"false"),
        (None, b"null"),
    ],
)
def test_scalars(value: object, wire: bytes) -> None:
    assert encode(value) == wire + b"\r\n"


def _libc_printf_17g() -> Any:
    libc = ctypes.CDLL(ctypes.util.find_library("c"))

    def printf(number: float) -> bytes:
        buffer = ctypes.create_string_buffer(64)
        libc.snprintf(buffer, 64, b"%.17g", ctypes.c_double(number))
        return buffer.value

    return printf


@given(st.floats(allow_nan=False))
def test_floats_print_like_c_17g(number: float) -> None:
    assert encode(number) == _libc_printf_17g()(number) + b"\r\n"


@given(st.integers(min_value=-(2**63), max_value=2**64 - 1))
def test_qnum_integers_are_exact(number: int) -> None:
    assert encode(number) == str(number).encode() + b"\r\n"


# --- containers ----------------------------------------------------------------


def test_separators_and_empty_containers() -> None:
    assert encode({}) == b"{}\r\n"
    assert encode([]) == b"[]\r\n"
    assert encode(()) == b"[]\r\n"
    assert encode([1, "x", True, None, {}]) == b'[1, "x", true, null, {}]\r\n'
    assert encode({"return": {}, "id": "c1"}) == b'{"return": {}, "id": "c1"}\r\n'


def test_nested_dicts_are_ordered_at_every_level() -> None:
    reply = {"return": {"qemu": {"major": 7, "minor": 2, "micro": 22}, "package": "p"}, "id": 1}
    assert encode(reply) == (
        b'{"return": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "p"}, "id": 1}\r\n'
    )


def test_non_str_key_is_refused() -> None:
    with pytest.raises(TypeError):
        encode({1: "x"})


def test_unsupported_value_is_refused() -> None:
    with pytest.raises(TypeError):
        encode({"x": {1, 2}})


class VersionTriple(msgspec.Struct):
    major: int
    minor: int
    micro: int


class Report(msgspec.Struct, rename="kebab"):
    type: str
    node_name: str
    sector_num: int
    sectors_count: int
    version: VersionTriple


def test_structs_encode_in_field_order_with_renames() -> None:
    report = Report("read", "qM-c2", 0, 1, VersionTriple(7, 2, 22))
    assert encode(report) == (
        b'{"version": {"micro": 22, "minor": 2, "major": 7}, "node-name": "qM-c2", '
        b'"sectors-count": 1, "sector-num": 0, "type": "read"}\r\n'
    )
    assert encode([report]) == b"[" + encode(report)[:-2] + b"]\r\n"


_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(alphabet=st.characters(exclude_categories=["Cs"])),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=6)
    ),
    max_leaves=20,
)


def _keys_in_qdict_order(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            _qemu_visible(key): _keys_in_qdict_order(value[key]) for key in qdict_order(list(value))
        }
    if isinstance(value, list):
        return [_keys_in_qdict_order(item) for item in value]
    if isinstance(value, str):
        return _qemu_visible(value)
    return value


def _with_key_order(value: Any) -> Any:
    # json.loads equality ignores dict order; compare item lists to check it too.
    if isinstance(value, dict):
        return [(key, _with_key_order(item)) for key, item in value.items()]
    if isinstance(value, list):
        return [_with_key_order(item) for item in value]
    return value


@given(_JSON)
def test_output_parses_back_in_qdict_order(value: Any) -> None:
    line = encode(value)
    assert line.isascii()
    assert line.endswith(b"\r\n")
    assert b"\r\n" not in line[:-2]
    assert _with_key_order(json.loads(line)) == _with_key_order(_keys_in_qdict_order(value))


# --- events --------------------------------------------------------------------

QUORUM_DATA = {"type": "read", "node-name": "qM-c2", "sector-num": 0, "sectors-count": 1}


def test_event_line_is_qemus() -> None:
    assert encode_event("QUORUM_REPORT_BAD", 1795799056, 709675, QUORUM_DATA) == (
        b'{"timestamp": {"seconds": 1795799056, "microseconds": 709675}, '
        b'"event": "QUORUM_REPORT_BAD", "data": {"node-name": "qM-c2", "sectors-count": 1, '
        b'"sector-num": 0, "type": "read"}}\r\n'
    )


@pytest.mark.parametrize("data", [None, {}])
def test_event_without_arguments_has_no_data(data: dict[str, object] | None) -> None:
    assert encode_event("STOP", 1795799376, 450277, data) == (
        b'{"timestamp": {"seconds": 1795799376, "microseconds": 450277}, "event": "STOP"}\r\n'
    )


@given(
    st.text(min_size=1),
    st.integers(min_value=0, max_value=2**63 - 1),
    st.integers(min_value=0, max_value=999_999),
    st.none() | st.dictionaries(st.text(max_size=8), _JSON, max_size=5),
)
def test_encode_event_equals_encode_of_the_envelope(
    name: str, seconds: int, microseconds: int, data: dict[str, Any] | None
) -> None:
    envelope: dict[str, Any] = {
        "event": name,
        "timestamp": {"seconds": seconds, "microseconds": microseconds},
    }
    if data:
        envelope["data"] = data
    assert encode_event(name, seconds, microseconds, data) == encode(envelope)


def test_infinities_print_like_c() -> None:
    printf = _libc_printf_17g()
    for number in (math.inf, -math.inf):
        assert encode(number) == printf(number) + b"\r\n"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=30,
)


@given(_JSON)
def test_the_deep_encoder_writes_what_the_recursive_one_writes(value: object) -> None:
    assert encoding._deep_value(value) == encoding._value(value)

"""The JSON stream framer: QEMU's lexer, streamer and parser, chunked any way."""

from __future__ import annotations

import json
import resource
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qmpevents.errors import JSONParseError
from qmpevents.protocol.framing import JSONStreamFramer, Parsed


def frames(data: bytes, **limits: int) -> list[Any]:
    """Values, or 'ERR <desc>' strings, for a whole input fed at once (then EOF)."""
    framer = JSONStreamFramer(**limits)
    out = framer.feed(data) + framer.close()
    return [f.value if isinstance(f, Parsed) else f"ERR {f.desc}" for f in out]


def frames_bytewise(data: bytes) -> list[Any]:
    framer = JSONStreamFramer()
    out = []
    for i in range(len(data)):
        out.extend(framer.feed(data[i : i + 1]))
    out.extend(framer.close())
    return [f.value if isinstance(f, Parsed) else f"ERR {f.desc}" for f in out]


# -- the stream, not lines ----------------------------------------------------


def test_object_without_newline() -> None:
    assert frames(b'{"execute": "qmp_capabilities"}') == [{"execute": "qmp_capabilities"}]


def test_several_objects_per_chunk_and_pretty_printed() -> None:
    data = b'{"a": 1}{"b": 2}\r\n{\n  "c": [\n    1,\n    2\n  ]\n}\n'
    assert frames(data) == [{"a": 1}, {"b": 2}, {"c": [1, 2]}]
    assert frames_bytewise(data) == [{"a": 1}, {"b": 2}, {"c": [1, 2]}]


def test_whitespace_alone_gives_nothing() -> None:
    assert frames(b"\n   \t \r\n") == []


def test_unterminated_object_waits_then_completes() -> None:
    framer = JSONStreamFramer()
    assert framer.feed(b'{"execute": "x",\n') == []
    assert framer.in_value
    (done,) = framer.feed(b' "id": 1}')
    assert isinstance(done, Parsed) and done.value == {"execute": "x", "id": 1}


def test_single_quoted_strings_are_accepted() -> None:
    assert frames(b"{'execute': 'query-status', 'q': 'it\\'s'}") == [
        {"execute": "query-status", "q": "it's"}
    ]


def test_positions_are_one_based_line_and_column() -> None:
    framer = JSONStreamFramer()
    out = framer.feed(b'\n\n  {"a": 1}\n{"b" 2}')
    assert isinstance(out[0], Parsed) and (out[0].line, out[0].column) == (3, 3)
    assert isinstance(out[1], JSONParseError) and (out[1].line, out[1].column) == (4, 6)


# -- values as QEMU builds them -----------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b"0", 0),
        (b"-0", 0),
        (b"-7", -7),
        (b"1.5", 1.5),
        (b"1e3", 1000.0),
        (b"2E-2", 0.02),
        (b"9223372036854775807", 9223372036854775807),
        (b"18446744073709551615", 18446744073709551615),
        (b"18446744073709551616", 1.8446744073709552e19),
        (b"-9223372036854775809", -9.223372036854776e18),
        (b"true", True),
        (b"false", False),
        (b"null", None),
        (b'"\\u00e9\\ud83d\\ude00\\/"', "é😀/"),
        (b'"\\u0000"', "\x00"),
        ('"h\u00e9llo"'.encode(), "h\u00e9llo"),
    ],
)
def test_scalars(text: bytes, value: Any) -> None:
    assert frames(text + b"\n") == [value]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (b'{"execute": "query-status",}', "JSON parse error, expecting value"),
        (b'{"execute" "query-status"}', "JSON parse error, missing : in object pair"),
        (b"}", "JSON parse error, expecting value"),
        (b"]", "JSON parse error, expecting value"),
        (b",", "JSON parse error, expecting value"),
        (b"garbage\n", "JSON parse error, invalid keyword 'garbage'"),
        # bytes that are not UTF-8 stay raw (the encoder writes one U+FFFD per sequence)
        (b"\xff", "JSON parse error, stray '\udcff'"),
        (b"\x1b", "JSON parse error, stray '\x1b'"),
        # the message is a C string: it ends at the NUL
        (b"\x00", "JSON parse error, stray ''"),
        (b'"abc\n', "JSON parse error, stray '\"abc\n'"),
        (b"01", "JSON parse error, stray '01'"),
        (b"-x", "JSON parse error, stray '-x'"),
        (b"Foo", "JSON parse error, stray 'F'"),
        (b'{"a": 1 "b": 2}', "JSON parse error, expected separator in dict"),
        (b"[1 2]", "JSON parse error, expected separator in list"),
        (b"{1: 2}", "JSON parse error, key is not a string in object"),
        (b'{"a": 1, "a": 2}', "JSON parse error, duplicate key"),
        (b'"\\x"', "JSON parse error, invalid escape sequence in string"),
        (b'"\\u12"', 'JSON parse error, \\u12" is not a valid Unicode character'),
        (b'"\\ud800"', "JSON parse error, \\ud800 is not a valid Unicode character"),
        (b'"\xc3("', "JSON parse error, invalid UTF-8 sequence in string"),
        (b'"\xef\xbf\xbe"', "JSON parse error, invalid UTF-8 sequence in string"),
        (b"[}", "JSON parse error, expecting value"),
    ],
)
def test_errors_are_worded_as_qemu_words_them(text: bytes, error: str) -> None:
    assert frames(text)[0] == f"ERR {error}"


def test_a_non_ascii_byte_ends_a_number_then_is_stray() -> None:
    # QEMU 7.2: the number is a value of its own; the rest of the bad UTF-8 is skipped
    assert frames(b"1\xc3\xa9\n") == [1, "ERR JSON parse error, stray '\udcc3'"]


def test_error_then_resync_keeps_later_values() -> None:
    data = b'{"execute": "x", "id": "open"\n\x1b\n{"execute": "ok"}\n'
    assert frames(data) == ["ERR JSON parse error, stray '\x1b'", {"execute": "ok"}]


def test_recovery_skips_to_a_structural_character() -> None:
    # after the stray byte the rest of the word is skipped, not lexed
    assert frames(b'\xffgarbage{"a": 1}') == ["ERR JSON parse error, stray '\udcff'", {"a": 1}]


def test_truncated_input_at_eof() -> None:
    assert frames(b'{"a": [1, 2') == ["ERR JSON parse error, premature EOI"]
    assert frames(b'{"a": "unfinished') == ["ERR JSON parse error, stray '\"unfinished'"]


def test_error_carries_position() -> None:
    framer = JSONStreamFramer()
    (err,) = framer.feed(b'{ "event": "X"\n"data": {} }')
    assert isinstance(err, JSONParseError)
    assert err.desc == "JSON parse error, expected separator in dict"
    assert (err.line, err.column) == (2, 1)


# -- limits -------------------------------------------------------------------


def test_nesting_limit_then_resync_1100_deep() -> None:
    """QEMU answers 1100 '[' then 1100 ']' with exactly 1027 replies."""
    out = frames(b"[" * 1100 + b"]" * 1100 + b"\n")
    assert len(out) == 1027
    assert out[0] == "ERR JSON nesting depth limit exceeded"
    assert isinstance(out[1], list)
    assert set(out[2:]) == {"ERR JSON parse error, expecting value"}


def test_nesting_2000_deep_is_an_error_not_a_recursion_error() -> None:
    out = frames(b"[" * 2000)
    assert out[0] == "ERR JSON nesting depth limit exceeded"


def test_token_count_limit() -> None:
    out = frames(b"[" + b"1," * 20 + b"1]", max_token_count=10)
    assert out[0] == "ERR JSON token count limit exceeded"


def test_token_size_limit_small() -> None:
    out = frames(b'["' + b"a" * 100 + b'"]', max_token_size=50)
    assert out[0] == "ERR JSON token size limit exceeded"


def test_100_mb_string_token_is_refused_with_bounded_memory() -> None:
    framer = JSONStreamFramer()
    chunk = b"a" * (1 << 20)
    errors = framer.feed(b'{"execute": "x", "id": "')
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for _ in range(100):
        errors += framer.feed(chunk)
        assert framer.buffered <= (64 << 20) + 1
    errors += framer.feed(b'"}\n{"execute": "after"}\n')
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    descs = [e.desc for e in errors if isinstance(e, JSONParseError)]
    assert descs[0] == "JSON token size limit exceeded"
    assert grown_kib < 400 * 1024  # the 64 MiB token buffer and a copy, not 100 MB more
    # the stream goes on: a later command still parses
    framer.feed(b"\x1b\n")
    (after,) = framer.feed(b'{"execute": "later"}')
    assert isinstance(after, Parsed) and after.value == {"execute": "later"}


# -- properties ---------------------------------------------------------------

# QEMU refuses noncharacters (U+FDD0.., U+xFFFE/F) and lone surrogates in strings
qemu_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), max_codepoint=0xFDCF))
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | qemu_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(qemu_text, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(json_values.filter(lambda v: isinstance(v, dict | list)), max_size=4), st.data())
def test_any_chunking_gives_the_same_values(values: list[Any], data: st.DataObject) -> None:
    stream = b"".join(json.dumps(v).encode() + b"\r\n" for v in values)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    framer = JSONStreamFramer()
    out = []
    start = 0
    for cut in [*cuts, len(stream)]:
        out.extend(framer.feed(stream[start:cut]))
        start = cut
    assert [f.value for f in out if isinstance(f, Parsed)] == values
    assert all(isinstance(f, Parsed) for f in out)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_bytes_never_raise_and_stay_bounded(data: bytes) -> None:
    framer = JSONStreamFramer(max_token_size=64, max_nesting=8)
    for frame in framer.feed(data) + framer.close():
        assert isinstance(frame, Parsed | JSONParseError)
    assert framer.buffered <= 65
    # after a resync point the framer parses normally again
    framer.feed(b"\x1b\n")
    assert [f.value for f in framer.feed(b'{"ok": 1}') if isinstance(f, Parsed)] == [{"ok": 1}]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # recovery stops at , and : as QEMU's IN_RECOVERY does
        (
            b"_a,b\n",
            [
                "ERR JSON parse error, stray '_'",
                "ERR JSON parse error, expecting value",
                "ERR JSON parse error, invalid keyword 'b'",
            ],
        ),
        # no exponent after a leading zero: 0, then keyword e, then 1
        (b"0e1\n", [0, "ERR JSON parse error, invalid keyword 'e'", 1]),
        (b"-0E-2\n", [0, "ERR JSON parse error, stray 'E'"]),
        (
            b"a\x00b\n",
            ["ERR JSON parse error, invalid keyword 'a'", "ERR JSON parse error, stray ''"],
        ),
    ],
)
def test_recovery_and_numbers_as_qemu_7_2_measured(text: bytes, expected: list[Any]) -> None:
    assert frames(text) == expected


def test_held_input_never_exceeds_the_token_limit() -> None:
    framer = JSONStreamFramer(max_token_size=1 << 16)
    framer.feed(b'"')
    peak = 0
    for _ in range(256):  # 4 MiB of one string, 64 times the limit
        framer.feed(b"a" * (1 << 14))
        peak = max(peak, framer.buffered)
    assert peak <= (1 << 16) + 1

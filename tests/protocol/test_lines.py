"""Line framing of server output: any chunking, bounded lines."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qmpevents.protocol.lines import LineFramer, OversizedLine


def test_crlf_and_lf_lines_any_chunking() -> None:
    framer = LineFramer()
    assert framer.feed(b'{"a": 1}\r\n{"b"') == [b'{"a": 1}']
    assert framer.feed(b": 2}\n") == [b'{"b": 2}']
    assert framer.buffered == 0


def test_oversized_line_is_reported_once_and_skipped() -> None:
    framer = LineFramer(max_line=10)
    out = framer.feed(b"x" * 25)
    assert out == [] and framer.buffered == 0
    out = framer.feed(b"y" * 5 + b'\r\n{"ok": 1}\r\n')
    assert isinstance(out[0], OversizedLine) and out[0].size == 32
    assert out[1:] == [b'{"ok": 1}']


def test_oversized_complete_line_in_one_chunk() -> None:
    framer = LineFramer(max_line=4)
    out = framer.feed(b"123456\nok\n")
    assert isinstance(out[0], OversizedLine) and out[1] == b"ok"


def test_close_reports_a_cut_off_tail() -> None:
    framer = LineFramer()
    framer.feed(b'{"return": {}}\r\n{"retu')
    assert framer.close() == b'{"retu'
    assert framer.close() is None


@given(
    st.lists(st.binary(max_size=30).map(lambda b: b.replace(b"\n", b"")), max_size=10),
    st.lists(st.integers(0, 400), max_size=10),
)
def test_any_chunking_same_lines(lines: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(line + b"\r\n" for line in lines)
    framer = LineFramer(max_line=1000)
    out: list[bytes] = []
    start = 0
    for cut in [*sorted(c for c in cuts if c <= len(stream)), len(stream)]:
        out.extend(framer.feed(stream[start:cut]))
        start = cut
    assert out == lines

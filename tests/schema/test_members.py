"""Unknown members of known events are kept and reported by extra_members()."""

from __future__ import annotations

from qmpevents.schema.decode import decode_event
from qmpevents.schema.events import DumpCompleted, GuestPanicked, QuorumReportBad, Stop

TS = b'"timestamp": {"seconds": 1, "microseconds": 2}'


def test_extra_data_member_is_kept() -> None:
    raw = (
        b"{" + TS + b', "event": "QUORUM_REPORT_BAD", "data": {"node-name": "n", '
        b'"sectors-count": 1, "sector-num": 0, "type": "read", "new-member": {"a": [1]}}}'
    )
    event = decode_event(raw)
    assert isinstance(event, QuorumReportBad)
    assert event.extra_members() == {"new-member": {"a": [1]}}


def test_nested_extra_member_is_reported_by_path() -> None:
    raw = (
        b"{" + TS + b', "event": "DUMP_COMPLETED", "data": {"result": {"total": 2, '
        b'"status": "active", "completed": 1, "rate": 9}}}'
    )
    event = decode_event(raw)
    assert isinstance(event, DumpCompleted)
    assert event.extra_members() == {"result.rate": 9}


def test_union_variant_members_are_known_and_extras_found() -> None:
    raw = (
        b"{" + TS + b', "event": "GUEST_PANICKED", "data": {"action": "pause", "info": '
        b'{"type": "tdx", "error-code": 1, "message": "m", "gpa": 4096, "later": true}}}'
    )
    event = decode_event(raw)
    assert isinstance(event, GuestPanicked)
    assert event.extra_members() == {"info.later": True}


def test_data_on_a_memberless_event_is_all_extra() -> None:
    event = decode_event(b"{" + TS + b', "event": "STOP", "data": {"why": "x"}}')
    assert isinstance(event, Stop)
    assert event.extra_members() == {"why": "x"}


def test_unknown_top_level_members_do_not_break_decoding() -> None:
    event = decode_event(b"{" + TS + b', "event": "STOP", "origin": "vm1"}')
    assert isinstance(event, Stop)

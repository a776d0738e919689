"""Stream and document validation, on the seed and on captured QEMU output."""

from __future__ import annotations

import json

import pytest

from qmpevents.protocol.command_schema import CommandSchema
from qmpevents.protocol.validation import validate_document, validate_stream
from qmpevents.schema.live import LiveSchema
from tests.helpers import EVENT_EXAMPLES, REFERENCE, TRANSCRIPTS, load_transcript, raw_bytes


@pytest.fixture(scope="module")
def live_schema() -> LiveSchema:
    return LiveSchema.from_query(json.loads((REFERENCE / "qmp_schema_full.json").read_text()))


def test_event_examples_report() -> None:
    reports = validate_document(EVENT_EXAMPLES.read_bytes())
    summary = [(r.line, r.column, r.name, r.problems) for r in reports]
    assert summary == [
        (13, 1, "DUMP_COMPLETED", ("timestamp: missing required member",)),
        (19, 1, "GUEST_PANICKED", ("timestamp: missing required member",)),
        # the MEM_UNPLUG_ERROR example lacks the comma before "data" (line 25)
        (25, 1, None, ("JSON parse error, expected separator in dict",)),
        (32, 1, "QUORUM_FAILURE", ()),
        (40, 1, "QUORUM_REPORT_BAD", ()),
        (47, 1, "QUORUM_REPORT_BAD", ()),
        (54, 1, "MIGRATION_PASS", ()),
        (59, 1, "VSERPORT_CHANGE", ()),
    ]


def test_event_examples_with_live_schema_agree(live_schema: LiveSchema) -> None:
    reports = validate_document(EVENT_EXAMPLES.read_bytes(), schema=live_schema)
    assert [r.ok for r in reports] == [False, False, False, True, True, True, True, True]


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_every_server_line_of_every_transcript_is_valid(name: str, live_schema: LiveSchema) -> None:
    stream = b"".join(
        raw_bytes(line)
        for line in load_transcript(name)["lines"]
        if line["dir"] == "recv" and line.get("kind") in ("greeting", "return", "error", "event")
    )
    for schema in (None, live_schema):
        reports = validate_stream(stream, schema=schema)
        assert reports and all(r.ok for r in reports), [r for r in reports if not r.ok][:3]


def test_concatenated_stream_with_errors_keeps_going() -> None:
    data = (
        b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}'
        b'{"timestamp": {"seconds": -1, "microseconds": 2}, "event": "STOP"}\n'
        b'{"event": "QUORUM_REPORT_BAD", "timestamp": {"seconds": 1, "microseconds": 0},'
        b' "data": {"node-name": "n", "sector-num": "x", "sectors-count": 1, "type": "read"}}\n'
        b"[1]\n"
        b'{"execute": "stop", "bogus": 1}\n'
        b'{"timestamp": {"seconds": 1, "microseconds": 1000000}, "event": "RESUME"}\n'
    )
    reports = validate_stream(data)
    assert [r.ok for r in reports] == [True, False, False, False, False, False]
    assert reports[2].problems == ("data.sector-num: expected int, got str",)
    assert reports[2].line == 2
    assert reports[3].problems == ("QMP input must be a JSON object",)
    assert reports[4].problems == ("QMP input member 'bogus' is unexpected",)


def test_stream_commands_are_checked_against_the_schema_commands() -> None:
    entries = json.loads((REFERENCE / "qmp_schema_full.json").read_text())
    data = (
        b'{"execute": "query-status"}\n'
        b'{"exec-oob": "migrate-pause", "arguments": {"now": true}}\n'
        b'{"execute": "x-no-such-command"}\n'
    )
    reports = validate_stream(data, commands=CommandSchema.from_query(entries))
    assert [(r.name, r.problems) for r in reports] == [
        ("query-status", ()),
        ("migrate-pause", ("arguments.now: unexpected member",)),
        ("x-no-such-command", ("execute: unknown command 'x-no-such-command'",)),
    ]
    assert all(r.ok for r in validate_stream(data))  # without a schema: shape only


def test_a_parse_error_is_reported_on_one_line() -> None:
    (report,) = validate_stream(b"'\n")
    assert "\n" not in "".join(report.problems)

"""Example messages in QEMU's notation: how a document is cut, and the report on it."""

from __future__ import annotations

import json

import pytest

from qmpevents.protocol.command_schema import CommandSchema
from qmpevents.protocol.doc_examples import CLIENT, SERVER, find_messages
from qmpevents.protocol.validation import ELIDED, MessageReport, validate_document
from qmpevents.schema.live import LiveSchema
from tests.helpers import DATA, REFERENCE

RENDERINGS = ("txt", "rst", "md")


def fixture(rendering: str) -> bytes:
    return (DATA / f"qmp-doc-examples.{rendering}").read_bytes()


@pytest.fixture(scope="module")
def schema_entries() -> list[dict[str, object]]:
    entries: list[dict[str, object]] = json.loads((REFERENCE / "qmp_schema_full.json").read_text())
    return entries


def verdict(report: MessageReport) -> tuple[object, ...]:
    """A report without its position: what the three renderings must agree on."""
    problems = tuple(p.split(" at ")[0] if "closed too early" in p else p for p in report.problems)
    return (report.kind, report.name, problems, report.warnings, report.info)


def test_plain_text_fixture_is_cut_into_its_messages() -> None:
    found = [
        (m.line, m.column, m.direction, m.elided, m.trailing is not None, m.name)
        for m in find_messages(fixture("txt"))
    ]
    assert found == [
        (20, 14, CLIENT, False, False, "query-status"),
        (21, 14, SERVER, False, False, None),  # three lines, one message
        (29, 14, CLIENT, False, False, "dump-guest-memory"),
        (33, 14, SERVER, False, False, None),
        (34, 14, SERVER, False, False, "DUMP_COMPLETED"),  # its nested objects are its own
        (44, 14, CLIENT, False, False, "set-action"),
        (46, 14, SERVER, False, False, None),
        (53, 14, CLIENT, False, False, "device_del"),
        (54, 14, SERVER, False, False, None),
        (60, 14, CLIENT, False, False, "query-chardev"),
        (61, 14, SERVER, True, False, None),  # a line with just ...
        (72, 14, SERVER, True, False, "QUORUM_REPORT_BAD"),  # "data": {...}
        (79, 14, SERVER, False, False, "WIDGET_FROBBED"),
        (87, 14, SERVER, False, False, "VSERPORT_CHANGE"),
        (95, 14, SERVER, False, False, "MIGRATION_PASS"),
        (102, 14, CLIENT, False, True, "human-monitor-command"),  # closed too early
        (104, 14, CLIENT, False, False, None),
    ]


def test_a_message_keeps_all_its_lines_and_nothing_else() -> None:
    messages = find_messages(fixture("txt"))
    dump_completed = messages[4]
    assert dump_completed.text.count(b"\n") == 5
    assert dump_completed.text.startswith(b'             { "event"')  # arrow blanked
    assert b'"completed": 1090650112 } }' in dump_completed.text


def test_prose_in_the_notation_is_not_a_message() -> None:
    doc = (
        b"Also, the following notation is used:\n\n"
        b"   -> data issued by the Client\n"
        b"   <- Server data response\n"
        b"   -> 0x7ffff\n"
        b"Indented prose mentioning {braces} is prose.\n"
    )
    assert find_messages(doc) == []


def test_elision_is_seen_outside_strings_only() -> None:
    doc = (
        b'-> { "execute": "x", "arguments": { "cpu0-id": "2lvmGwo+...61iEinw==" } }\n'
        b'<- { "return": [ 1, 2, \xe2\x80\xa6 ] }\n'
        b'<- { "return": { "escaped": "a \\" ... b" } }\n'
    )
    assert [m.elided for m in find_messages(doc)] == [False, True, False]


def test_block_edges_end_an_unclosed_message() -> None:
    doc = (
        b"```\n"
        b'<- { "return": {\n'
        b"```\n"
        b"\n"
        b'    -> { "execute": "a",\n'
        b"\n"
        b"Prose after a blank line.\n"
        b'    <- { "return": [\n'
        b"\n"
        b"           1\n"  # deeper after a blank line: still the same message
        b"\n"
        b"    ] }\n"  # a closing bracket after a blank line: still it
    )
    found = [(m.line, m.text.count(b"\n")) for m in find_messages(doc)]
    assert found == [(2, 1), (5, 1), (8, 5)]
    reports = validate_document(doc)
    assert [(r.line, r.kind, r.problems) for r in reports] == [
        (2, "invalid", ("JSON parse error, premature EOI",)),
        (5, "invalid", ("JSON parse error, premature EOI",)),
        (8, "return", ()),
    ]


def test_an_arrow_alone_on_its_line_announces_the_next_one() -> None:
    doc = b'->\n{ "execute": "stop" }\n<-\nnot json\n'
    messages = find_messages(doc)
    assert [(m.line, m.column, m.direction, m.text_line) for m in messages] == [(2, 1, CLIENT, 1)]
    assert [(r.line, r.name, r.ok) for r in validate_document(doc)] == [(2, "stop", True)]


def test_bare_json_examples_are_still_found() -> None:
    doc = b'Prose.\n\n{ "event": "STOP",\n  "timestamp": { "seconds": 1, "microseconds": 2 } }\n'
    assert [(m.line, m.direction) for m in find_messages(doc)] == [(3, None)]
    assert [(r.line, r.name, r.ok) for r in validate_document(doc)] == [(3, "STOP", True)]


def test_plain_text_report() -> None:
    reports = validate_document(fixture("txt"))
    assert [
        (r.line, r.column, r.kind, r.name, r.problems, r.warnings, r.info) for r in reports
    ] == [
        (20, 14, "command", "query-status", (), (), ()),
        (21, 14, "return", None, (), (), ()),
        (29, 14, "command", "dump-guest-memory", (), (), ()),
        (33, 14, "return", None, (), (), ()),
        (34, 14, "event", "DUMP_COMPLETED", (), (), ()),
        (44, 14, "command", "set-action", (), (), ()),
        (46, 14, "error", None, (), (), ()),
        (53, 14, "command", "device_del", (), (), ()),
        (54, 14, "return", None, (), (), ()),
        (60, 14, "command", "query-chardev", (), (), ()),
        (61, 14, "elided", None, (), (), (ELIDED,)),
        (72, 14, "elided", "QUORUM_REPORT_BAD", (), (), (ELIDED,)),
        (
            79,
            14,
            "event",
            "WIDGET_FROBBED",
            (),
            ("unknown event 'WIDGET_FROBBED': no built-in model, its data was not checked",),
            (),
        ),
        (89, 16, "invalid", None, ("JSON parse error, expected separator in dict",), (), ()),
        (95, 14, "event", "MIGRATION_PASS", ("data.pass: expected int, got str",), (), ()),
        (
            102,
            14,
            "command",
            "human-monitor-command",
            (
                "text after the end of the message at 103:16 (closed too early?): "
                '"arguments": { "command-line": "info ...',
            ),
            (),
            (),
        ),
        (
            104,
            14,
            "invalid",
            None,
            ("client message (->) is not a command: no member execute or exec-oob",),
            (),
            (),
        ),
    ]
    assert ELIDED == "elided example, not checked"
    assert [r.ok for r in reports if not r.checked] == [True, True]


@pytest.mark.parametrize("rendering", ["rst", "md"])
def test_the_three_renderings_get_the_same_verdicts(rendering: str) -> None:
    expected = [verdict(r) for r in validate_document(fixture("txt"))]
    assert [verdict(r) for r in validate_document(fixture(rendering))] == expected


def test_with_the_schema_commands_and_events_are_checked(
    schema_entries: list[dict[str, object]],
) -> None:
    reports = validate_document(
        fixture("txt"),
        schema=LiveSchema.from_query(schema_entries),
        commands=CommandSchema.from_query(schema_entries),
    )
    changed = [(r.line, r.problems) for r in reports if r.problems]
    assert changed == [
        (44, ("arguments.panic: invalid enum value 'explode'",)),
        (53, ("arguments.id: missing required member", "arguments.device: unexpected member")),
        (79, ("event: unknown event 'WIDGET_FROBBED'",)),
        (89, ("JSON parse error, expected separator in dict",)),
        (95, ("data.pass: expected int, got str",)),
        (
            102,
            (
                "arguments.command-line: missing required member",
                "text after the end of the message at 103:16 (closed too early?): "
                '"arguments": { "command-line": "info ...',
            ),
        ),
        (104, ("client message (->) is not a command: no member execute or exec-oob",)),
    ]
    assert not any(r.warnings for r in reports)  # the schema knows every event it knows


def test_a_server_message_that_is_a_command() -> None:
    reports = validate_document(b'<- { "execute": "stop", "bogus": 1 }\n')
    assert reports[0].problems == (
        "server message (<-) is a command, which only a client sends",
        "QMP input member 'bogus' is unexpected",
    )


def test_command_schema(schema_entries: list[dict[str, object]]) -> None:
    commands = CommandSchema.from_query(schema_entries)
    assert {"query-status", "device_add", "dump-guest-memory"} <= commands.command_names()
    assert commands.validate_arguments("query-status", {}) == []
    assert commands.validate_arguments("query-status", {"verbose": True}) == [
        "arguments.verbose: unexpected member"
    ]
    assert commands.validate_arguments("nope", {}) == ["execute: unknown command 'nope'"]
    assert commands.validate_arguments("nope", {}, member="exec-oob") == [
        "exec-oob: unknown command 'nope'"
    ]
    assert commands.validate_arguments(
        "dump-guest-memory", {"paging": "no", "protocol": "fd:x", "format": "png"}
    ) == ["arguments.paging: expected bool, got str", "arguments.format: invalid enum value 'png'"]
    # device_add is 'gen': false in QEMU: any device property may follow its members.
    assert (
        commands.validate_arguments(
            "device_add", {"driver": "e1000", "id": "net1", "mac": "52:54:00:12:34:56"}
        )
        == []
    )
    assert commands.validate_arguments("device_add", {"id": "net1"}) == [
        "arguments.driver: missing required member"
    ]

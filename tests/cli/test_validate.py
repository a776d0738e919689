"""`qmpevents validate` as a user runs it: output, exit statuses, usage errors."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from qmpevents.cli import main
from tests.helpers import EVENT_EXAMPLES, REFERENCE


def test_event_examples_doc_reports_problems_and_exits_1() -> None:
    result = CliRunner().invoke(main, ["validate", "--doc", str(EVENT_EXAMPLES)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert f"{EVENT_EXAMPLES}:25:1: invalid: JSON parse error, expected separator in dict" in lines
    assert f"{EVENT_EXAMPLES}:13:1: DUMP_COMPLETED: timestamp: missing required member" in lines
    assert f"{EVENT_EXAMPLES}:59:1: OK VSERPORT_CHANGE" in lines


def test_valid_stream_from_stdin_exits_0() -> None:
    event = (
        b'{"timestamp": {"seconds": 1, "microseconds": 2}, '
        b'"event": "MIGRATION_PASS", "data": {"pass": 1}}'
    )
    result = CliRunner().invoke(main, ["validate", "-"], input=event + event)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "<stdin>:1:1: OK MIGRATION_PASS",
        f"<stdin>:1:{len(event) + 1}: OK MIGRATION_PASS",
    ]


def test_json_output(tmp_path: Path) -> None:
    path = tmp_path / "capture.jsonl"
    path.write_bytes(b'{"event": "STOP"}\n')
    result = CliRunner().invoke(main, ["validate", "--json", str(path)])
    assert result.exit_code == 1
    report = json.loads(result.stdout)
    assert report == {
        "line": 1,
        "column": 1,
        "kind": "event",
        "name": "STOP",
        "ok": False,
        "problems": ["timestamp: missing required member"],
    }


def test_with_live_schema_file() -> None:
    event = (
        b'{"timestamp": {"seconds": 1, "microseconds": 2}, '
        b'"event": "VSERPORT_CHANGE", "data": {"id": "vs0", "open": "yes"}}\n'
    )
    result = CliRunner().invoke(
        main, ["validate", "--schema", str(REFERENCE / "qmp_schema_full.json")], input=event
    )
    assert result.exit_code == 1
    assert "data.open: expected bool, got str" in result.stdout


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["validate", str(tmp_path / "missing")]).exit_code == 2
    bad_schema = tmp_path / "schema.json"
    bad_schema.write_text("{}")
    result = runner.invoke(main, ["validate", "--schema", str(bad_schema), "-"], input=b"")
    assert result.exit_code == 2
    assert "query-qmp-schema" in result.output


def test_numbers_and_nesting_no_value_can_hold_are_reported_not_raised() -> None:
    deep = "[" * 1000 + "]" * 1000
    stream = (
        '{"timestamp": {"seconds": 1e999, "microseconds": 2}, "event": "STOP"}\n'
        '{"event": "X", "timestamp": {"seconds": 1, "microseconds": 2}, "data": {"a": '
        + deep
        + "}}\n"
        '{"execute": "query-status", "id": ' + "1" * 5000 + "}\n"
    )
    result = CliRunner().invoke(main, ["validate", "-"], input=stream)
    assert result.exit_code == 1, result.output
    assert result.stdout.splitlines() == [
        "<stdin>:1:1: STOP: timestamp.seconds: number out of range (not a finite double)",
        "<stdin>:2:1: X: nested too deeply to check",
        "<stdin>:3:1: OK query-status",
    ]


def test_watch_output_validates_json_envelopes_and_raw_bytes() -> None:
    event = (
        '{"timestamp": {"seconds": 1, "microseconds": 2}, '
        '"event": "MIGRATION_PASS", "data": {"pass": 1}}'
    )
    envelopes = (
        '{"vm": "web", "received-at": "2026-12-01T00:00:00+00:00", "event": ' + event + "}\n"
        '{"vm": "web", "received-at": "2026-12-01T00:00:01+00:00", "gap": '
        '{"started": 1.0, "ended": 2.0}}\n'
    )
    result = CliRunner().invoke(main, ["validate", "-"], input=envelopes)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "<stdin>:1:1: OK MIGRATION_PASS",
        "<stdin>:2:1: OK marker",
    ]
    raw = CliRunner().invoke(main, ["validate", "-"], input=event + "\r\n" + event + "\r\n")
    assert raw.exit_code == 0 and raw.stdout.count("OK MIGRATION_PASS") == 2
    bad = '{"vm": "web", "received-at": "x", "event": {"event": "STOP"}}\n'
    wrong = CliRunner().invoke(main, ["validate", "-"], input=bad)
    assert wrong.exit_code == 1 and "STOP: timestamp: missing required member" in wrong.stdout

"""`qmpevents validate --doc` on documents in QEMU's notation, and the edges of the input."""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from qmpevents.cli import main
from qmpevents.protocol.validation import validate_document
from tests.helpers import DATA, REFERENCE

SCHEMA = str(REFERENCE / "qmp_schema_full.json")

# Where each rendering puts the messages of the fixture: (line, column) in order.
POSITIONS = {
    "txt": [
        (20, 14), (21, 14), (29, 14), (33, 14), (34, 14), (44, 14), (46, 14), (53, 14),
        (54, 14), (60, 14), (61, 14), (72, 14), (79, 14), (89, 16), (95, 14), (102, 14),
        (104, 14),
    ],
    "rst": [
        (21, 8), (22, 8), (33, 8), (37, 8), (38, 8), (51, 8), (53, 8), (63, 8), (64, 8),
        (73, 8), (74, 8), (88, 8), (98, 8), (111, 10), (120, 8), (130, 8), (132, 8),
    ],
    "md": [
        (21, 4), (23, 1), (35, 4), (39, 4), (40, 4), (56, 4), (58, 4), (67, 4), (68, 4),
        (76, 4), (77, 4), (90, 4), (99, 4), (111, 6), (119, 4), (128, 4), (130, 4),
    ],
}  # fmt: skip
# Where the text after the closed human-monitor-command example starts.
TRAILING = {"txt": "103:16", "rst": "131:10", "md": "129:6"}

# The report on the fixture, after "SOURCE:LINE:COL: ".
REPORT = [
    "OK query-status",
    "OK return",
    "OK dump-guest-memory",
    "OK return",
    "OK DUMP_COMPLETED",
    "OK set-action",
    "OK error",
    "OK device_del",
    "OK return",
    "OK query-chardev",
    "info: elided example, not checked",
    "info: QUORUM_REPORT_BAD: elided example, not checked",
    "warning: WIDGET_FROBBED: unknown event 'WIDGET_FROBBED': no built-in model,"
    " its data was not checked",
    "invalid: JSON parse error, expected separator in dict",
    "MIGRATION_PASS: data.pass: expected int, got str",
    "human-monitor-command: text after the end of the message at {trailing}"
    ' (closed too early?): "arguments": {{ "command-line": "info ...',
    "invalid: client message (->) is not a command: no member execute or exec-oob",
]


@pytest.mark.parametrize("rendering", ["txt", "rst", "md"])
def test_each_rendering_is_reported_line_by_line(rendering: str) -> None:
    path = DATA / f"qmp-doc-examples.{rendering}"
    result = CliRunner().invoke(main, ["validate", "--doc", str(path)])
    assert result.exit_code == 1
    expected = [
        f"{path}:{line}:{column}: " + text.format(trailing=TRAILING[rendering])
        for (line, column), text in zip(POSITIONS[rendering], REPORT, strict=True)
    ]
    assert result.stdout.splitlines() == expected
    assert result.stderr.splitlines() == [
        "17 message(s): 11 valid, 4 invalid, 2 elided (not checked); 1 with warnings"
    ]


def test_with_the_schema_client_messages_are_checked_too() -> None:
    path = DATA / "qmp-doc-examples.txt"
    result = CliRunner().invoke(main, ["validate", "--doc", "--schema", SCHEMA, str(path)])
    assert result.exit_code == 1
    problems = [line for line in result.stdout.splitlines() if ": OK " not in line]
    assert problems == [
        f"{path}:44:14: set-action: arguments.panic: invalid enum value 'explode'",
        f"{path}:53:14: device_del: arguments.id: missing required member",
        f"{path}:53:14: device_del: arguments.device: unexpected member",
        f"{path}:61:14: info: elided example, not checked",
        f"{path}:72:14: info: QUORUM_REPORT_BAD: elided example, not checked",
        f"{path}:79:14: WIDGET_FROBBED: event: unknown event 'WIDGET_FROBBED'",
        f"{path}:89:16: invalid: JSON parse error, expected separator in dict",
        f"{path}:95:14: MIGRATION_PASS: data.pass: expected int, got str",
        f"{path}:102:14: human-monitor-command: arguments.command-line: missing required member",
        f"{path}:102:14: human-monitor-command: text after the end of the message at 103:16"
        ' (closed too early?): "arguments": { "command-line": "info ...',
        f"{path}:104:14: invalid: client message (->) is not a command:"
        " no member execute or exec-oob",
    ]
    assert result.stderr.splitlines() == [
        "17 message(s): 8 valid, 7 invalid, 2 elided (not checked)"
    ]


def test_json_reports_say_warnings_and_info_only_where_there_are_some() -> None:
    path = DATA / "qmp-doc-examples.txt"
    result = CliRunner().invoke(main, ["validate", "--doc", "--json", str(path)])
    reports = [json.loads(line) for line in result.stdout.splitlines()]
    assert reports[0] == {
        "line": 20,
        "column": 14,
        "kind": "command",
        "name": "query-status",
        "ok": True,
        "problems": [],
    }
    assert reports[10] == {
        "line": 61,
        "column": 14,
        "kind": "elided",
        "name": None,
        "ok": True,
        "problems": [],
        "info": ["elided example, not checked"],
    }
    assert reports[12]["warnings"] == [
        "unknown event 'WIDGET_FROBBED': no built-in model, its data was not checked"
    ]
    assert result.stderr == ""


def test_a_stream_event_without_a_model_is_a_warning_not_an_error() -> None:
    event = b'{"event": "BLOCK_JOB_READY", "timestamp": {"seconds": 1, "microseconds": 2}}\n'
    result = CliRunner().invoke(main, ["validate", "-"], input=event)
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "<stdin>:1:1: warning: BLOCK_JOB_READY: unknown event 'BLOCK_JOB_READY':"
        " no built-in model, its data was not checked"
    ]
    assert result.stderr.splitlines() == ["1 message(s): 1 valid, 0 invalid; 1 with warnings"]


@pytest.mark.parametrize(
    ("args", "data"),
    [
        (["validate", "-"], b""),
        (["validate", "-"], b"  \n\n"),
        (["validate", "--doc", "-"], b""),
        (["validate", "--doc", "-"], b"Prose only.\n\n   -> data issued by the Client\n"),
        (["validate", "--json", "--doc", "-"], b"Prose only.\n"),
    ],
)
def test_no_messages_at_all_is_exit_1(args: list[str], data: bytes) -> None:
    result = CliRunner().invoke(main, args, input=data)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == ["<stdin>: no QMP messages found"]


class TerminalInput(io.BytesIO):
    """Standard input as a terminal shows it to a program."""

    def isatty(self) -> bool:
        return True


def test_reading_from_a_terminal_says_so() -> None:
    event = b'{"event": "STOP", "timestamp": {"seconds": 1, "microseconds": 2}}\n'
    result = CliRunner().invoke(main, ["validate"], input=TerminalInput(event))
    assert result.exit_code == 0
    assert result.stderr.splitlines()[0] == (
        "reading QMP messages from the terminal; end with Ctrl-D"
    )
    assert result.stdout.splitlines() == ["<stdin>:1:1: OK STOP"]
    piped = CliRunner().invoke(main, ["validate"], input=event)
    assert "terminal" not in piped.stderr


# QEMU's own QMP reference, as Debian's qemu-system-common installs it (a man page).
QEMU_MANUAL = Path("/usr/share/man/man7/qemu-qmp-ref.7.gz")


def _manual_skip_reason() -> str | None:
    if not QEMU_MANUAL.exists():
        return f"{QEMU_MANUAL} is not installed (Debian: qemu-system-common)"
    if shutil.which("groff") is None:
        return "groff is not installed, needed to render the QMP reference as text"
    with gzip.open(QEMU_MANUAL, "rt", errors="replace") as f:
        header = next((line for line in f if line.startswith(".TH")), "")
    if not re.search(r'"7\.2(\.\d+)?"', header):
        return f"{QEMU_MANUAL} is not QEMU 7.2's ({header.strip()!r})"
    return None


@pytest.mark.skipif(_manual_skip_reason() is not None, reason=str(_manual_skip_reason() or ""))
def test_qemu_72_qmp_reference_if_installed(tmp_path: Path) -> None:
    """An extra, not a CI requirement: the real manual, rendered to plain text."""
    with gzip.open(QEMU_MANUAL, "rb") as f:
        roff = f.read()
    text = subprocess.run(
        ["groff", "-man", "-Tutf8", "-P", "-cbou"],
        input=roff,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    reports = validate_document(text)
    assert len(reports) == 461
    assert not any("not a QMP message" in p for r in reports for p in r.problems)
    seeds = {
        "DUMP_COMPLETED", "GUEST_PANICKED", "MEM_UNPLUG_ERROR", "QUORUM_FAILURE",
        "QUORUM_REPORT_BAD", "MIGRATION_PASS", "VSERPORT_CHANGE",
    }  # fmt: skip
    assert {r.name for r in reports if r.name in seeds and r.ok} == seeds
    assert sum(not r.checked for r in reports) == 2
    assert sum(bool(r.warnings) for r in reports) == 51
    invalid = [(r.name, r.problems[0].split(" at ")[0]) for r in reports if not r.ok]
    assert invalid == [
        (None, "JSON parse error, expected separator in dict"),  # query-blockstats
        ("set-vcpu-dirty-limit", "text after the end of the message"),
        ("cancel-vcpu-dirty-limit", "text after the end of the message"),
        (None, "text after the end of the message"),  # query-hotpluggable-cpus: ]}'
        ("dumpdtb", "text after the end of the message"),
    ]

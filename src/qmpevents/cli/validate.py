"""``qmpevents validate``: check captured QMP streams and documentation examples."""

from __future__ import annotations

import json
import sys
from typing import Any, BinaryIO

import click

from qmpevents.errors import QMPEventsError, SchemaError
from qmpevents.protocol.command_schema import CommandSchema
from qmpevents.protocol.validation import MessageReport, validate_document, validate_stream
from qmpevents.schema.live import LiveSchema

TERMINAL_NOTE = "reading QMP messages from the terminal; end with Ctrl-D"
NO_MESSAGES = "no QMP messages found"


def _load_schema(path: str) -> tuple[LiveSchema, CommandSchema]:
    """Events and commands from query-qmp-schema output: the bare list or the whole reply."""
    try:
        with open(path, "rb") as f:
            data: Any = json.load(f)
    except (OSError, ValueError) as error:
        raise click.UsageError(f"--schema {path}: cannot read a JSON schema: {error}") from None
    if isinstance(data, dict) and "return" in data:
        data = data["return"]
    if not isinstance(data, list):
        raise click.UsageError(
            f"--schema {path}: expected the query-qmp-schema return value (a JSON array)"
        )
    try:
        return LiveSchema.from_query(data), CommandSchema.from_query(data)
    except (SchemaError, QMPEventsError) as error:
        raise click.UsageError(f"--schema {path}: {error}") from None


def _report_line(source: str, report: MessageReport) -> str:
    where = f"{source}:{report.line}:{report.column}"
    what = report.name or report.kind
    lines = [f"{where}: {what}: {problem}" for problem in report.problems]
    lines += [f"{where}: warning: {what}: {warning}" for warning in report.warnings]
    # An elided example's kind says nothing the info does not: name it only if named.
    shown = f"{report.name}: " if report.name else ""
    lines += [f"{where}: info: {shown}{info}" for info in report.info]
    return "\n".join(lines or [f"{where}: OK {what}"])


def _report_json(report: MessageReport) -> str:
    fields: dict[str, Any] = {
        "line": report.line,
        "column": report.column,
        "kind": report.kind,
        "name": report.name,
        "ok": report.ok,
        "problems": list(report.problems),
    }
    if report.warnings:
        fields["warnings"] = list(report.warnings)
    if report.info:
        fields["info"] = list(report.info)
    return json.dumps(fields)


def _summary(reports: list[MessageReport]) -> str:
    invalid = sum(not r.ok for r in reports)
    elided = sum(not r.checked for r in reports)
    valid = len(reports) - invalid - elided
    text = f"{len(reports)} message(s): {valid} valid, {invalid} invalid"
    if elided:
        text += f", {elided} elided (not checked)"
    warned = sum(bool(r.warnings) for r in reports)
    if warned:
        text += f"; {warned} with warnings"
    return text


def _is_terminal(file: BinaryIO) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError, OSError):
        return False


@click.command()
@click.argument("file", type=click.File("rb"), default="-")
@click.option(
    "--doc",
    is_flag=True,
    help="Check the example messages of a document in QEMU's notation "
    "(-> client, <- server; plain text, reStructuredText or Markdown).",
)
@click.option(
    "--schema",
    "schema_path",
    type=click.Path(dir_okay=False),
    help="Check events and command arguments against this query-qmp-schema output "
    "instead of the built-in event models.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON report per message.")
def validate(file: BinaryIO, doc: bool, schema_path: str | None, as_json: bool) -> None:
    """Check a stream of QMP messages (FILE, or - for stdin).

    Messages may be one per line or concatenated as captured from a socket. Each
    gets OK or its problems with line and column; an event with no built-in model
    gets a warning, an elided document example (with ...) an info line. Exit
    status: 0 all valid, 1 some invalid or no message at all, 2 usage error.
    """
    events, commands = _load_schema(schema_path) if schema_path else (None, None)
    source = "<stdin>" if file is sys.stdin.buffer or file.name == "<stdin>" else file.name
    if _is_terminal(file):
        click.echo(TERMINAL_NOTE, err=True)
    data = file.read()
    if doc:
        reports = validate_document(data, schema=events, commands=commands)
    else:
        reports = validate_stream(data, schema=events, commands=commands)
    for report in reports:
        click.echo(_report_json(report) if as_json else _report_line(source, report))
    if not reports:
        click.echo(f"{source}: {NO_MESSAGES}", err=True)
        sys.exit(1)
    if not as_json:
        click.echo(_summary(reports), err=True)
    sys.exit(1 if any(not r.ok for r in reports) else 0)

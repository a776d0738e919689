"""``qmpevents validate``: check captured QMP streams and documentation examples."""

from __future__ import annotations

import json
import sys
from typing import Any, BinaryIO

import click

from qmpevents.errors import QMPEventsError, SchemaError
from qmpevents.protocol.validation import MessageReport, validate_document, validate_stream
from qmpevents.schema.live import LiveSchema


def _load_schema(path: str) -> LiveSchema:
    """A LiveSchema from query-qmp-schema output: the bare list or the whole reply."""
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
        return LiveSchema.from_query(data)
    except (SchemaError, QMPEventsError) as error:
        raise click.UsageError(f"--schema {path}: {error}") from None


def _report_line(source: str, report: MessageReport) -> str:
    where = f"{source}:{report.line}:{report.column}"
    what = report.name or report.kind
    if report.ok:
        return f"{where}: OK {what}"
    return "\n".join(f"{where}: {what}: {problem}" for problem in report.problems)


@click.command()
@click.argument("file", type=click.File("rb"), default="-")
@click.option("--doc", is_flag=True, help="Check the JSON examples inside a prose document.")
@click.option(
    "--schema",
    "schema_path",
    type=click.Path(dir_okay=False),
    help="Validate events against this query-qmp-schema output instead of the built-in models.",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON report per message.")
def validate(file: BinaryIO, doc: bool, schema_path: str | None, as_json: bool) -> None:
    """Check a stream of QMP messages (FILE, or - for stdin).

    Messages may be one per line or concatenated as captured from a socket. Each
    gets OK or its problems with line and column. Exit status: 0 all valid,
    1 some invalid, 2 usage error.
    """
    schema = _load_schema(schema_path) if schema_path else None
    data = file.read()
    source = "<stdin>" if file is sys.stdin.buffer or file.name == "<stdin>" else file.name
    reports = (
        validate_document(data, schema=schema) if doc else validate_stream(data, schema=schema)
    )
    for report in reports:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "line": report.line,
                        "column": report.column,
                        "kind": report.kind,
                        "name": report.name,
                        "ok": report.ok,
                        "problems": list(report.problems),
                    }
                )
            )
        else:
            click.echo(_report_line(source, report))
    invalid = sum(not r.ok for r in reports)
    if not as_json:
        click.echo(
            f"{len(reports)} message(s): {len(reports) - invalid} valid, {invalid} invalid",
            err=True,
        )
    sys.exit(1 if invalid else 0)

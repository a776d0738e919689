"""``qmpevents history`` and ``qmpevents stats``: reading what the collector recorded.

Times (``--since``, ``--until``) are ISO-8601 (``2026-11-27T10:00``, local time unless
an offset is given) or relative to now (``90s``, ``10m``, ``2h``, ``1d``, ``1w``).
Exit statuses: 0 success, 2 a usage error (bad time, no or unreadable database).
"""

from __future__ import annotations

import datetime
import re
import sqlite3
import sys
import time
from pathlib import Path

import click
import msgspec
from rich.console import Console
from rich.table import Table
from rich.text import Text

from qmpevents.collect.history import History
from qmpevents.collect.names import escape_controls
from qmpevents.collect.records import EventRecord, Record
from qmpevents.collect.sqlite_schema import default_db_path
from qmpevents.collect.web_page import standalone_data, standalone_page
from qmpevents.errors import ConfigError

__all__ = ["history", "parse_time", "stats"]

# "10m", "2h ago", "1.5 d": the help text's own words are accepted as written.
_RELATIVE = re.compile(r"^(?P<amount>\d+(?:\.\d+)?)\s*(?P<unit>[smhdw])(?:\s+ago)?$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_time(text: str, now: float | None = None) -> float:
    """Seconds since the epoch for ``text``: ISO-8601, or ``<number><s|m|h|d|w>`` before ``now``.

    Raises ``ValueError`` for anything else.
    """
    if match := _RELATIVE.match(text.strip()):
        ago = float(match["amount"]) * _UNIT_SECONDS[match["unit"]]
        return (time.time() if now is None else now) - ago
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{text!r} is neither ISO-8601 (2026-11-27T10:00) nor relative (10m, 2h, 1d)"
        ) from None
    return when.timestamp()  # a naive time is taken as local time


def _time_option(ctx: click.Context, param: click.Parameter, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except ValueError as error:
        raise click.BadParameter(str(error), ctx, param) from None


_db_option = click.option(
    "--db",
    "db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"History database [default: {default_db_path()}].",
)
_since_option = click.option(
    "--since", metavar="TIME", callback=_time_option, help="From this time (ISO, or 10m, 2h ago)."
)
_until_option = click.option(
    "--until", metavar="TIME", callback=_time_option, help="Up to this time (ISO, or 10m ago)."
)
_json_option = click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")


def _open(db: Path | None) -> History:
    path = db if db is not None else default_db_path()
    if not path.exists():
        raise click.UsageError(f"no history database at {path} (see --db)")
    try:
        return History(path)
    except ConfigError as error:  # already names the file
        raise click.UsageError(str(error)) from None
    except sqlite3.Error as error:
        raise click.UsageError(f"{path}: {error}") from None


def _iso(when: float) -> str:
    return datetime.datetime.fromtimestamp(when).astimezone().isoformat(timespec="microseconds")


def _record_json(record: Record) -> bytes:
    if isinstance(record, EventRecord):
        fields: dict[str, object] = {
            "type": "event",
            "vm": record.vm,
            "event": record.name,
            "timestamp": record.qemu_ts,
            "received_at": record.received_at,
            # raw is a JSON object as QEMU sent it: embed it, not a string of it
            "message": msgspec.Raw(record.raw),
        }
        if record.host is not None:  # a central archive's record
            fields["host"] = record.host
        return msgspec.json.encode(fields)
    return msgspec.json.encode(record)


def _cell(text: str) -> Text:
    """A table cell of outside text: control characters escaped, no Rich markup read."""
    return Text(escape_controls(text))


def _describe(record: Record) -> tuple[str, str, str, str]:
    """(time, VM, what, details) of one table row."""
    if isinstance(record, EventRecord):
        data = msgspec.json.decode(record.raw).get("data")
        details = msgspec.json.encode(data).decode() if data else ""
        return _iso(record.qemu_ts), record.vm, record.name, details
    if record.ended is None:
        span = "still open"
    else:
        span = f"until {_iso(record.ended)} ({record.ended - record.started:.3f} s)"
    return _iso(record.started), record.vm, "(gap)", f"{record.reason}; {span}"


_host_option = click.option(
    "--host", help="Only the records of this host (a central archive's; see collect nats://)."
)


@click.command()
@_db_option
@click.option("--vm", help="Only this VM.")
@_host_option
@click.option("--event", help="Only events of this name (gaps are left out).")
@_since_option
@_until_option
@_json_option
@click.option(
    "--html",
    "html_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the records as the browser timeline: one self-contained HTML file.",
)
@click.option("--actions", is_flag=True, help="The runs of [[action]] rules instead.")
def history(
    db: Path | None,
    vm: str | None,
    host: str | None,
    event: str | None,
    since: float | None,
    until: float | None,
    as_json: bool,
    html_file: Path | None,
    actions: bool,
) -> None:
    """Recorded events and gaps (intervals without a connection), oldest first.

    An event's time is QEMU's timestamp; a gap's is the collector's clock. With
    --json each line is {"type": "event", "vm", "event", "timestamp",
    "received_at", "message": the event exactly as QEMU sent it} or
    {"type": "gap", "vm", "started", "ended", "reason"}. A central archive's records
    also have "host" (and the table a host column). With --html FILE the records
    are written as the timeline page of `qmpevents ui`, data embedded: it opens
    offline, in any browser. With --actions: the runs of action rules (--vm,
    --event: the trigger, --since, --until: the start), each with its steps.
    """
    if actions:
        _print_actions(db, vm, event, since, until, as_json)
        return
    with _open(db) as store:
        if as_json and html_file is None:  # streamed: a history of any size, bounded memory
            for record in store.iter_query(vm=vm, event=event, since=since, until=until, host=host):
                click.echo(_record_json(record))
            return
        records = store.query(vm=vm, event=event, since=since, until=until, host=host)
    if html_file is not None:
        _write_html(html_file, records, vm)
        return
    if any(record.host is not None for record in records):
        _print_rows(
            ("time", "host", "VM", "event", "details"),
            [(d[0], r.host or "", *d[1:]) for r in records for d in (_describe(r),)],
        )
    else:
        _print_rows(("time", "VM", "event", "details"), [_describe(r) for r in records])
    click.echo(f"{len(records)} record(s)", err=True)


def _print_actions(
    db: Path | None,
    vm: str | None,
    event: str | None,
    since: float | None,
    until: float | None,
    as_json: bool,
) -> None:
    with _open(db) as store:
        runs = [
            run
            for run in store.actions()
            if (vm is None or run["vm"] == vm)
            and (event is None or run["event"] == event)
            and (since is None or run["started"] >= since)
            and (until is None or run["started"] <= until)
        ]
    if as_json:
        for run in runs:
            click.echo(msgspec.json.encode(run))
        return
    rows: list[tuple[str, ...]] = [
        (
            _iso(run["started"]),
            str(run["vm"]),
            str(run["rule"]),
            str(run["event"]),
            str(run["outcome"]),
            f"{run['duration']:.3f} s",
            "; ".join(
                f"{s['kind']} {s['target']}: " + ("ok" if s["ok"] else str(s["error"]))
                for s in run["steps"]
            ),
        )
        for run in runs
    ]
    _print_rows(("started", "VM", "rule", "trigger", "outcome", "duration", "steps"), rows)
    click.echo(f"{len(runs)} action run(s)", err=True)


def _write_html(path: Path, records: list[Record], vm: str | None) -> None:
    title = f"qmpevents history: {len(records)} record(s)" + (f", VM {vm}" if vm else "")
    page = standalone_page(standalone_data(records, title))
    try:
        path.write_text(page, encoding="utf-8")
    except OSError as error:
        raise click.UsageError(f"--html {path}: {error.strerror or error}") from None
    click.echo(f"{len(records)} record(s) written to {path}", err=True)


@click.command()
@_db_option
@_host_option
@_since_option
@_until_option
@_json_option
def stats(
    db: Path | None, host: str | None, since: float | None, until: float | None, as_json: bool
) -> None:
    """Event counts per VM and event name over a time range (QEMU timestamps)."""
    with _open(db) as store:
        counts = store.stats(since=since, until=until, host=host)
    if as_json:
        for count in counts:
            # "event", as in watch --json and history --json.
            click.echo(
                msgspec.json.encode({"vm": count.vm, "event": count.name, "count": count.count})
            )
        return
    _print_rows(("VM", "event", "count"), [(c.vm, c.name, str(c.count)) for c in counts])
    click.echo(f"{sum(c.count for c in counts)} event(s)", err=True)


def _print_rows(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """A table on a terminal (cut to its width); full tab-separated lines otherwise."""
    if sys.stdout.isatty():
        table = Table(*header)
        for row in rows:
            table.add_row(*map(_cell, row))
        Console().print(table)
        return
    for row in rows:
        click.echo("\t".join(escape_controls(cell) for cell in row))

"""``qmpevents replay FILE --against TARGET``: does this server answer as the recorded one?

FILE is a ``qmpevents proxy --record`` file. Each recorded client is replayed
on its own connection to TARGET (a socket path or HOST:PORT), at its recorded
pace, and every reply and event it gets is compared with the recording
(:mod:`qmpevents.proxy.replay`). One line per difference, then a summary.
Exit statuses: 0 nothing differs, 1 something does, 2 a usage error (an
unreadable or invalid recording, an unreachable target), 130 after Ctrl-C.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Final

import click

from qmpevents.addresses import parse_address
from qmpevents.errors import ConfigError
from qmpevents.proxy.replay import ReplayError, ReplayOptions, ReplayResult, replay
from qmpevents.proxy.replay_load import RecordingError, load_recording

__all__ = ["replay_command"]

_PROGRAM: Final = "qmpevents replay"


def _print_text(result: ReplayResult) -> None:
    for client in result.clients:
        for difference in client.comparison.differences:
            click.echo(difference.line())
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"{result.compared} messages compared, {result.differences} differ")


def _print_json(result: ReplayResult) -> None:
    document = {
        "clients": [
            {"client": client.script.number, "label": client.script.label}
            for client in result.clients
        ],
        "differences": [
            difference.as_json()
            for client in result.clients
            for difference in client.comparison.differences
        ],
        "notes": result.notes,
        "compared": result.compared,
        "differ": result.differences,
    }
    click.echo(json.dumps(document, indent=2, ensure_ascii=False))


@click.command("replay")
@click.argument("file", metavar="FILE", type=click.Path(dir_okay=False))
@click.option(
    "--against",
    "target",
    required=True,
    metavar="TARGET",
    help="The QMP server to replay against: a socket path or HOST:PORT.",
)
@click.option(
    "--slack",
    type=click.FloatRange(min=0),
    default=0.5,
    show_default=True,
    metavar="SECONDS",
    help="How far an event's delay after the request before it may be from the recorded one.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="How long to wait for a reply before that client stops sending.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="A different version or package in the greeting (or query-version) is a difference.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the differences as JSON.")
def replay_command(
    file: str, target: str, slack: float, timeout: float, strict: bool, as_json: bool
) -> None:
    """Replay the clients of a proxy recording against TARGET and report what differs.

    Each client recorded by `qmpevents proxy --record` sends again what it sent,
    on its own connection, at its recorded pace and never before TARGET has
    answered what it had been answered by then. Replies must be byte for byte
    the recorded ones; events must match by name and data (timestamps aside)
    and come within --slack of their recorded delay. The greeting's version and
    package may differ (a note) unless --strict.
    """
    try:
        address = parse_address(target)
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="--against") from None
    try:
        recording = load_recording(file)
    except RecordingError as error:
        click.echo(f"{_PROGRAM}: {error}", err=True)
        sys.exit(2)
    options = ReplayOptions(slack=slack, timeout=timeout, strict=strict)
    try:
        result = asyncio.run(replay(recording, address, options))
    except ReplayError as error:
        click.echo(f"{_PROGRAM}: {error}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    if as_json:
        _print_json(result)
    else:
        _print_text(result)
    sys.exit(1 if result.differences else 0)

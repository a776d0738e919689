"""``qmpevents ui``: the collector's timeline page over an existing history, read-only.

No collector runs: the page, the JSON API and the live stream read the database
(which a collector elsewhere may still be writing: new events then appear live).
Exit statuses: 0 after Ctrl-C or SIGTERM, 2 a usage error (no database, bad address,
port taken).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sqlite3
from pathlib import Path

import click

from qmpevents.cli.collect import http_options
from qmpevents.collect.history import History
from qmpevents.collect.sqlite_schema import default_db_path
from qmpevents.collect.web_app import start_web_server
from qmpevents.errors import ConfigError

__all__ = ["ui"]


async def _serve(db: Path, host: str, port: int, public: bool) -> None:
    server = await start_web_server(db, host, port, public=public)
    click.echo(f"qmpevents ui: timeline of {db} on {server.url} (Ctrl-C stops)", err=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        await server.aclose()


@click.command()
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"History database [default: {default_db_path()}].",
)
@click.option(
    "--http",
    "http",
    default="127.0.0.1:8080",
    show_default=True,
    metavar="HOST:PORT",
    help="Serve the page and its API here (PORT: on 127.0.0.1).",
)
@click.option("--http-public", is_flag=True, help="Allow a non-loopback --http.")
def ui(db: Path | None, http: str, http_public: bool) -> None:
    """Serve the fleet timeline of a recorded history in the browser, read-only."""
    path = db if db is not None else default_db_path()
    if not path.exists():
        raise click.UsageError(f"no history database at {path} (see --db)")
    try:
        History(path).close()  # refuse what is no history now, not at the first request
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    except sqlite3.Error as error:
        raise click.UsageError(f"{path}: {error}") from None
    options = http_options(http, http_public)
    assert options is not None
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_serve(path, options.host, options.port, options.public))
    except (ConfigError, OSError) as error:
        raise click.UsageError(str(error)) from None

"""``qmpevents collect``: record the events of many VMs into SQLite (and NATS JetStream).

Exit statuses:

- 0: stopped by SIGTERM, and every record received was stored in every sink;
- 130: the same, stopped by SIGINT (Ctrl-C);
- 1: stopped, but some records were not stored: dropped by a full buffer, rejected
  for good (``qmpevents_rejected_total``), or still unstored at a sink's close
  timeout; a last line on stderr says how many per sink. Records committed to
  SQLite and not yet published to NATS are not lost (they wait in the journal, and
  the next start publishes them): they do not make the status 1;
  also 1 when a source failed on its own (a libvirt host's callback broke): the
  collector stops rather than go on without it, after storing what it received;
- 2: a usage error, printed as one line, before anything is collected: a bad option,
  target or configuration file, a metrics address, or a ``--db`` that cannot be
  written (a directory, a path under a file, ``/proc``, an empty path).

With a ``nats://HOST:PORT[,HOST:PORT...]`` target the command is the fleet's central
archive instead (:mod:`qmpevents.collect.archive`): the JetStream stream into
``--db`` through the durable consumer ``--durable``, each message once, acknowledged
after its commit; it stops at SIGTERM/SIGINT after the batch in hand (0, or 130).

A second SIGTERM or SIGINT while stopping does not interrupt storing what was
received (only SIGKILL does). ``--db`` is always a file path, never an SQLite URI.
Every line printed (status lines, log lines) has its control characters escaped, so
a VM name with a newline never splits one.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sqlite3
from pathlib import Path
from typing import Any

import click

from qmpevents.collect.archive import Archive
from qmpevents.collect.collector import Collector
from qmpevents.collect.config import CollectorConfig, load_config, merged, parse_host_port
from qmpevents.collect.discovery import vm_from_argument
from qmpevents.collect.names import escape_controls
from qmpevents.collect.sqlite_schema import default_db_path
from qmpevents.collect.web_app import HttpOptions
from qmpevents.errors import ConfigError
from qmpevents.sources.libvirt import import_libvirt
from qmpevents.sources.libvirt_uri import is_libvirt_target
from qmpevents.sources.targets import NATS_SCHEME, parse_nats_servers

__all__ = ["collect", "http_options"]


class _UsageLine(click.ClickException):
    """A usage error shown as one line (``Error: ...``), exit status 2."""

    exit_code = 2


class _OneLineCommand(click.Command):
    """A command whose option errors are one line too, like its own usage errors."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: click.Context | None = None,
        **extra: Any,
    ) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as error:
            raise _UsageLine(error.format_message()) from None


def _status(vm: str, connected: bool, detail: str) -> None:
    click.echo(escape_controls(f"{vm}: {detail}"), err=True)


class _OneLineFormatter(logging.Formatter):
    """Log messages with their control characters escaped (a traceback stays as it is)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def http_options(value: str | None, public: bool) -> HttpOptions | None:
    """``--http HOST:PORT`` (``PORT``: on 127.0.0.1) as options; a usage error if malformed."""
    if value is None:
        return None
    try:
        host, port = parse_host_port(value)
    except ConfigError:
        raise _UsageLine(f"--http: expected HOST:PORT or PORT, got {value!r}") from None
    return HttpOptions(host, port, public)


async def _run(collector: Collector) -> signal.Signals | None:
    """:meth:`Collector.run`, saying where it stores and serves once it has started."""
    running = asyncio.create_task(collector.run())
    # The fan-out exists once the sinks and servers are up (or run() has failed).
    while collector.fanout is None and not running.done():
        await asyncio.sleep(0.02)
    if not running.done():
        for line in startup_lines(collector):
            click.echo(f"qmpevents collect: {escape_controls(line)}", err=True)
    return await running


def startup_lines(collector: Collector) -> list[str]:
    """Where a started collector stores, publishes and serves: one line each."""
    config = collector.config
    lines = [f"storing into {collector.sqlite.path}"]
    if config.nats:
        lines.append(f"publishing to NATS {config.nats} as host {config.host_name}")
    if collector.metrics_server is not None:
        server = collector.metrics_server
        host = f"[{server.host}]" if ":" in server.host else server.host
        lines.append(f"metrics on http://{host}:{server.port}/metrics")
    if collector.web_server is not None:
        lines.append(f"timeline on {collector.web_server.url}")
    return lines


def _db_path(ctx: click.Context, param: click.Parameter, value: str | None) -> Path | None:
    if value is None:
        return None
    if not value:
        raise click.BadParameter("'': an empty path is not a file", ctx, param)
    return Path(value)


@click.command(cls=_OneLineCommand)
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="TOML file: [collector] options and [[vm]] name/target entries.",
)
@click.option(
    "--watch-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Attach every QMP socket that appears in this directory (named after the file).",
)
@click.option(
    "--listen",
    "listen",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Listen on this unix socket for QEMUs that connect (-chardev socket,path=PATH,"
    "reconnect=5 -mon chardev=...,mode=control); each is a VM named by its -name. Repeatable.",
)
@click.option(
    "--watch-interval",
    type=click.FloatRange(min=0.01),
    metavar="S",
    help="Seconds between two looks at --watch-dir [default: 1].",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False),
    callback=_db_path,
    help=f"SQLite history file (a path, never a URI) [default: {default_db_path()}].",
)
@click.option(
    "--nats",
    metavar="URL",
    help="Also publish to NATS JetStream (URLs comma-separated), from the SQLite journal.",
)
@click.option(
    "--metrics", metavar="HOST:PORT", help="Serve Prometheus metrics here (PORT: on 127.0.0.1)."
)
@click.option(
    "--metrics-public", is_flag=True, default=None, help="Allow a non-loopback --metrics."
)
@click.option(
    "--http",
    "http",
    metavar="HOST:PORT",
    help="Serve the live timeline page, its JSON API (/api/...) and /metrics here "
    "(PORT: on 127.0.0.1).",
)
@click.option("--http-public", is_flag=True, help="Allow a non-loopback --http.")
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    metavar="N",
    help="SQLite: records per commit [default: 1000].",
)
@click.option(
    "--batch-interval",
    type=click.FloatRange(min=0),
    metavar="S",
    help="SQLite: seconds a record waits for its commit at most [default: 0.5].",
)
@click.option(
    "--host",
    metavar="NAME",
    help="This collector's name in every record published to NATS [default: the hostname].",
)
@click.option(
    "--replicas",
    type=click.IntRange(min=1),
    metavar="N",
    help="Create (or grow) the NATS stream with N replicas [default: 1].",
)
@click.option(
    "--durable",
    metavar="NAME",
    help="With a nats:// TARGET: the archive's durable consumer [default: qmpevents-archive].",
)
@click.option("-q", "--quiet", is_flag=True, help="No line per VM connection and loss.")
def collect(
    targets: tuple[str, ...],
    config_path: Path | None,
    watch_dir: Path | None,
    listen: tuple[Path, ...],
    watch_interval: float | None,
    db: Path | None,
    nats: str | None,
    metrics: str | None,
    metrics_public: bool | None,
    http: str | None,
    http_public: bool,
    batch_size: int | None,
    batch_interval: float | None,
    host: str | None,
    replicas: int | None,
    durable: str | None,
    quiet: bool,
) -> None:
    """Record the events of many VMs, until SIGTERM or SIGINT.

    A TARGET is NAME=SOCKET, NAME=HOST:PORT, or a socket path (the VM is named
    after the file). Every event is stored with the VM, QEMU's timestamp, the time
    received and the bytes QEMU sent; the intervals without a connection are stored
    as gaps. With --listen, QEMUs connect to the collector instead (each VM named
    by its -name, else pid-PID); a QEMU that reconnects is the same VM, and the time
    it was away is a gap. A qemu:///system TARGET is every domain of that libvirt
    host (?domain=NAME for one), each under its name, attached as it starts (needs
    qmpevents[libvirt]). Command-line options override --config. After SIGKILL at most about two
    batches (--batch-size records, or --batch-interval seconds) are lost, and the
    restarted collector records the time it was not running as a gap.

    With a nats://HOST:PORT[,HOST:PORT...] TARGET it is the fleet's central archive:
    every host's records from JetStream into --db, each once (durable consumer
    --durable; a restart picks up where it stopped).
    """
    fleet = [target for target in targets if target.startswith(NATS_SCHEME)]
    try:
        config = load_config(config_path) if config_path is not None else CollectorConfig()
        if fleet:
            if len(targets) > 1 or watch_dir is not None or listen or config.vms:
                raise ConfigError("a nats:// TARGET is the central archive: give it alone")
            config = merged(config, db=db, replicas=replicas, durable=durable)
            servers = list(parse_nats_servers(fleet[0]))
            _log_to_stderr()
            raise SystemExit(_archive(servers, config))
        hosts = tuple(target for target in targets if is_libvirt_target(target))
        extra = tuple(vm_from_argument(target) for target in targets if target not in hosts)
        if hosts or config.libvirt:
            import_libvirt()  # ConfigError naming the extra when libvirt-python is missing
        config = merged(
            config,
            vms=config.vms + extra if extra else None,
            listen=config.listen + listen if listen else None,
            libvirt=config.libvirt + hosts if hosts else None,
            watch_dir=watch_dir,
            watch_interval=watch_interval,
            db=db,
            nats=nats,
            metrics=metrics,
            metrics_public=metrics_public,
            batch_size=batch_size,
            batch_interval=batch_interval,
            host=host,
            replicas=replicas,
        )
    except ConfigError as error:
        raise _UsageLine(str(error)) from None
    if not config.vms and config.watch_dir is None and not config.listen and not config.libvirt:
        raise _UsageLine(
            "nothing to collect: give a TARGET, --watch-dir, --listen or a --config with VMs"
        )
    if config.watch_dir is not None and not config.watch_dir.is_dir():
        raise _UsageLine(f"--watch-dir {config.watch_dir}: not a directory")
    web = http_options(http, http_public)
    _log_to_stderr()
    collector = Collector(config, on_status=None if quiet else _status, http=web)
    try:
        stopped_by = asyncio.run(_run(collector))
    except (ConfigError, OSError) as error:
        raise _UsageLine(escape_controls(str(error))) from None
    if collector.failure is not None:
        click.echo(f"qmpevents collect: stopped: {collector.failure}", err=True)
        raise SystemExit(1)
    not_stored = collector.not_stored()
    if not_stored:
        counts = ", ".join(f"{sink}: {count}" for sink, count in not_stored.items())
        click.echo(
            f"qmpevents collect: record(s) not stored ({counts}): dropped or rejected, see above",
            err=True,
        )
        raise SystemExit(1)
    raise SystemExit(130 if stopped_by is signal.SIGINT else 0)


def _log_to_stderr() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_OneLineFormatter("qmpevents collect: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def _archive(servers: list[str], config: CollectorConfig) -> int:
    """Run the central archive until SIGTERM/SIGINT; its exit status."""
    db = config.db if config.db is not None else default_db_path()
    archive = Archive(servers, db, durable=config.durable, replicas=config.replicas)
    stopped_by: list[signal.Signals] = []

    async def run() -> None:
        loop = asyncio.get_running_loop()

        def stop(signum: signal.Signals) -> None:
            stopped_by.append(signum)
            archive.stop()

        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop, signum)
        click.echo(
            escape_controls(f"archiving {','.join(servers)} into {db} as {config.durable}"),
            err=True,
        )
        await archive.run()

    try:
        asyncio.run(run())
    except (ConfigError, OSError, sqlite3.Error) as error:
        raise _UsageLine(escape_controls(f"{db}: {error}")) from None
    click.echo(
        f"qmpevents collect: {archive.stored} record(s) archived, {archive.duplicates}"
        f" duplicate(s) skipped, {archive.rejected} rejected",
        err=True,
    )
    if archive.rejected:
        return 1
    return 130 if stopped_by and stopped_by[0] is signal.SIGINT else 0

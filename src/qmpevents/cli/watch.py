"""``qmpevents watch``: the events of one or more VMs, live, one line each.

The formatting functions are pure and live in :mod:`.event_lines`; the command
only connects, filters and prints. Exit statuses follow
the CLI's rule: 0 done (``--count`` reached, or every VM gone after a clean
end), 1 ``--timeout`` ran out or a connection was lost, 2 a target could not be
reached (or a ``--listen`` socket is taken), 130 interrupted. With ``--listen``,
every QEMU that connects is shown under its ``-name`` until ``--count``,
``--timeout`` or Ctrl-C: VMs coming and going do not end it.

A ``nats://HOST:PORT[,HOST:PORT...]`` target is the whole fleet, read from NATS
JetStream (:class:`~qmpevents.sources.NatsSource`): every VM of every host, each
under its name, the same lines as from a socket. ``--vm GLOB`` and ``--event``
become subject filters where they can; ``--since`` replays the stream from then
first, then goes live. Gaps recorded by the hosts are shown as gaps (an open one
as "not connected since").

A ``qemu:///system`` target (any libvirt QEMU URI) is every domain of a libvirt
host, through libvirt's QEMU monitor events (``?domain=NAME`` for one): each
domain under its name, attached when it starts and detached when it stops, and a
libvirtd restart shown as a gap. It needs the extra ``qmpevents[libvirt]``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from qmpevents.cli.event_lines import (
    Printer,
    describe,
    format_item,
    human_bytes,
    json_item,
    printable,
)
from qmpevents.cli.history import parse_time
from qmpevents.client import Dropped, Gap, RunState
from qmpevents.client.backoff import Backoff
from qmpevents.errors import (
    ConfigError,
    ConnectionLost,
    QMPConnectionError,
    QMPEventsError,
    QMPTimeoutError,
)
from qmpevents.sources import (
    Connected,
    Disconnected,
    DomainSource,
    EventSource,
    FleetItem,
    LibvirtSource,
    ListenSource,
    NatsSource,
    Target,
    Unreachable,
    VMSource,
    parse_target,
)
from qmpevents.sources.libvirt import import_libvirt

__all__ = [
    "describe",
    "format_item",
    "human_bytes",
    "json_item",
    "parse_watch_target",
    "parse_where",
    "printable",
    "watch",
]

# --reconnect gives up on a VM after this long without a connection (then exit 1).
RECONNECT_GIVE_UP = 60.0


def parse_watch_target(spec: str) -> Target:
    """A target as every command reads it, as a click parameter error when malformed."""
    try:
        return parse_target(spec)
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="TARGET") from None


def parse_where(specs: Sequence[str]) -> dict[str, Any]:
    """``MEMBER=VALUE`` pairs; a value is JSON when it parses as JSON, else a string."""
    where: dict[str, Any] = {}
    for spec in specs:
        member, sep, text = spec.partition("=")
        if not sep or not member:
            raise click.BadParameter(f"{spec!r}: expected MEMBER=VALUE", param_hint="--where")
        try:
            where[member] = json.loads(text)
        except ValueError:
            where[member] = text
    return where


async def _check_patterns(source: EventSource, names: tuple[str, ...]) -> None:
    """Warn about --event patterns that match no event this QEMU declares."""
    client = getattr(source, "client", None)
    if not names or client is None:
        return
    try:
        entries = await client.execute("query-qmp-schema", timeout=10)
    except QMPEventsError:
        return  # a server without the schema: nothing to check against
    if not isinstance(entries, list):
        return
    declared = [e.get("name", "") for e in entries if isinstance(e, dict)]
    declared = [n for n, e in zip(declared, entries, strict=True) if e.get("meta-type") == "event"]
    for pattern in names:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in declared):
            click.echo(
                f"qmpevents watch: {printable(source.name)}: --event {printable(pattern)}"
                " matches no event this QEMU declares",
                err=True,
            )


async def _watch(
    targets: list[Target],
    names: tuple[str, ...],
    where: dict[str, Any],
    count: int | None,
    timeout: float | None,
    reconnect: bool,
    mode: str,
    listen: Sequence[Path] = (),
    vm_glob: str | None = None,
    since: float | None = None,
) -> int:
    # "block": a watcher behind a paused pager or a slow pipe (| jq) must not
    # lose events; QEMU keeps them in its output buffer until we read again,
    # and this socket has no other client for us to stall.
    def attached() -> dict[str, Any]:
        """The options of a QMP or libvirt source (each its own backoff)."""
        return {
            "names": names,
            "where": where,
            "reconnect": reconnect,
            "backoff": Backoff(give_up_after=RECONNECT_GIVE_UP),
            "policy": "block",
        }

    sources = [t.source(**attached()) for t in targets if t.monitor]
    hosts = [t.libvirt_source(**attached()) for t in targets if t.libvirt is not None]
    fleets = [
        t.fleet_source(names=names, where=where, vm=vm_glob, since=since)
        for t in targets
        if t.fleet
    ]
    one_vm = [t for t in targets if t.monitor or (t.libvirt is not None and t.libvirt.domain)]
    printer = Printer(mode, max((len(t.name) for t in one_vm), default=0))
    listeners = [ListenSource(path, names=names, where=where, policy="block") for path in listen]
    seen = 0
    done = asyncio.Event()
    status = 0

    def fail(vm: str, error: Exception, code: int) -> None:
        nonlocal status
        status = max(status, code)
        click.echo(f"qmpevents watch: {printable(vm)}: {printable(str(error))}", err=True)

    async def pump(source: EventSource) -> None:
        nonlocal seen
        vm = source.name
        checked = False
        try:
            async for item in source:
                if isinstance(item, Connected):
                    client = getattr(source, "client", None)
                    greeting = client.greeting if client is not None else None
                    known = greeting.version if greeting is not None else None
                    known = getattr(source, "greeting_version", known)
                    version = f" (QEMU {known})" if known is not None else ""
                    click.echo(
                        f"qmpevents watch: {printable(vm)}: {item.detail}{version}", err=True
                    )
                    if not checked:
                        checked = True
                        await _check_patterns(source, names)
                elif isinstance(item, Disconnected) and isinstance(source, DomainSource):
                    click.echo(
                        f"qmpevents watch: {printable(vm)}: {printable(item.reason)}", err=True
                    )
                elif isinstance(item, Disconnected) and isinstance(source, VMSource):
                    click.echo(
                        f"qmpevents watch: {printable(vm)}: disconnected, waiting for it to"
                        f" connect again: {printable(item.reason)}",
                        err=True,
                    )
                elif isinstance(item, Unreachable | Disconnected):
                    # Only with --reconnect: it waits for the VM, however long it takes to come up.
                    what = "disconnected" if isinstance(item, Disconnected) else "not reachable"
                    click.echo(
                        f"qmpevents watch: {printable(vm)}: {what}, retrying:"
                        f" {printable(item.reason)}",
                        err=True,
                    )
                else:
                    printer(vm, item)
                    if not isinstance(item, Gap | Dropped | RunState):
                        seen += 1
                        if count is not None and seen >= count:
                            done.set()
                            return
        except (QMPConnectionError, QMPTimeoutError) as error:
            fail(vm, error, 2)
        except ConnectionLost as error:
            fail(vm, error, 1)

    async def pump_fleet(source: NatsSource) -> None:
        nonlocal seen
        try:
            async for entry in source:
                if not isinstance(entry, FleetItem):
                    what = "" if isinstance(entry, Connected) else "NATS: "
                    detail = entry.detail if isinstance(entry, Connected) else entry.reason
                    click.echo(
                        f"qmpevents watch: {printable(source.name)}: {what}{printable(detail)}",
                        err=True,
                    )
                    continue
                printer.width = max(printer.width, len(printable(entry.vm)))
                item = entry.item
                if isinstance(item, Disconnected):
                    printer.open_gap(entry.vm, item)
                    continue
                printer(entry.vm, item)
                if not isinstance(item, Gap):
                    seen += 1
                    if count is not None and seen >= count:
                        done.set()
                        return
        except QMPConnectionError as error:
            fail(source.name, error, 2)

    arrived: list[asyncio.Future[None]] = []

    async def pump_host(host: LibvirtSource) -> None:
        def say(text: str) -> None:
            click.echo(f"qmpevents watch: {printable(host.name)}: {printable(text)}", err=True)

        try:
            await host.start()
            async for entry in host:  # each domain once, and libvirtd's own markers
                if isinstance(entry, DomainSource):
                    printer.width = max(printer.width, len(printable(entry.name)))
                    if not entry.attached and host.target.domain is not None:
                        say(f"domain {entry.name} is not running; waiting for it to start")
                    arrived.append(asyncio.ensure_future(pump(entry)))
                elif isinstance(entry, Connected):
                    say(entry.detail)
                elif isinstance(entry, Disconnected):
                    say(f"disconnected from libvirtd, retrying: {entry.reason}")
                else:
                    say(f"not reachable, retrying: {entry.reason}")
        except (QMPConnectionError, QMPTimeoutError) as error:
            fail(host.name, error, 1 if isinstance(error, ConnectionLost) else 2)

    async def accept(listener: ListenSource) -> None:
        async for source in listener:  # each VM once, when it first connects
            printer.width = max(printer.width, len(printable(source.name)))
            arrived.append(asyncio.ensure_future(pump(source)))

    for listener in listeners:
        try:
            await listener.start()
        except (ConfigError, OSError) as error:
            click.echo(f"qmpevents watch: --listen {printable(str(error))}", err=True)
            for started in listeners:
                await started.aclose()
            return 2
        click.echo(f"qmpevents watch: listening on {printable(listener.path)}", err=True)
    pumps: list[asyncio.Future[None]] = [asyncio.ensure_future(pump(s)) for s in sources]
    pumps += [asyncio.ensure_future(accept(listener)) for listener in listeners]
    pumps += [asyncio.ensure_future(pump_fleet(fleet)) for fleet in fleets]
    pumps += [asyncio.ensure_future(pump_host(host)) for host in hosts]
    all_ended = asyncio.ensure_future(asyncio.wait(pumps))
    finished = asyncio.ensure_future(done.wait())
    try:
        async with asyncio.timeout(timeout):
            await asyncio.wait([all_ended, finished], return_when=asyncio.FIRST_COMPLETED)
    except TimeoutError:
        wanted = f"{count} matching event(s)" if count is not None else "the end"
        click.echo(
            f"qmpevents watch: timed out after {timeout} s: {seen} matching event(s) seen,"
            f" waited for {wanted}",
            err=True,
        )
        return 1
    finally:
        all_ended.cancel()
        finished.cancel()
        for task in (*pumps, *arrived):
            task.cancel()
        for source in sources:
            await source.aclose()
        for fleet in fleets:
            await fleet.aclose()
        for host in hosts:
            await host.aclose()
        for listener in listeners:
            await listener.aclose()
    return 0 if done.is_set() else status


@click.command()
@click.argument("targets", nargs=-1, metavar="TARGET...")
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="One JSON envelope per event: vm, received-at and QEMU's event object (for jq).",
)
@click.option(
    "--raw", is_flag=True, help="QEMU's exact bytes, one event per line (one TARGET only)."
)
@click.option("--event", "names", multiple=True, metavar="NAME", help="Only these events (glob).")
@click.option("--where", "where_specs", multiple=True, metavar="MEMBER=VALUE", help="Data filter.")
@click.option("--count", type=click.IntRange(min=1), help="Exit 0 after N matching events.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Exit 1 after S seconds (more than 0; leave it out to wait for ever).",
)
@click.option(
    "--reconnect",
    is_flag=True,
    help="Wait for a VM that is not up yet and reconnect after a drop; show the gap.",
)
@click.option(
    "--listen",
    multiple=True,
    type=click.Path(dir_okay=False, path_type=Path),
    metavar="PATH",
    help="Listen on this unix socket for QEMUs that connect (-chardev socket,path=PATH,"
    "reconnect=5 -mon chardev=...,mode=control); show each under its -name. Repeatable.",
)
@click.option(
    "--vm",
    "vm_glob",
    metavar="GLOB",
    help="With a nats:// TARGET: only the VMs whose name matches (a glob).",
)
@click.option(
    "--since",
    metavar="TIME",
    help="With a nats:// TARGET: replay the stream from TIME (ISO, or 10m, 2h), then go live.",
)
def watch(
    targets: tuple[str, ...],
    as_json: bool,
    raw: bool,
    names: tuple[str, ...],
    where_specs: tuple[str, ...],
    count: int | None,
    timeout: float | None,
    reconnect: bool,
    listen: tuple[Path, ...],
    vm_glob: str | None,
    since: str | None,
) -> None:
    """Show the events of one or more VMs live, one line per event.

    TARGET is a QMP unix socket path or HOST:PORT, optionally NAME=TARGET; the VM
    is named after the socket file otherwise. Rate-limited event kinds are marked.
    With --listen PATH, QEMUs connect to us instead, each shown under its -name.
    TARGET nats://HOST:PORT[,HOST:PORT...] is every VM of the fleet, from NATS
    JetStream (--vm GLOB, --since TIME). TARGET qemu:///system is every domain of
    a libvirt host (qemu:///system?domain=NAME for one; needs qmpevents[libvirt]).
    """
    if not targets and not listen:
        raise click.UsageError("give a TARGET or --listen PATH")
    if as_json and raw:
        raise click.UsageError("--json and --raw are two ways of printing: choose one")
    if raw and (len(targets) > 1 or listen):
        raise click.UsageError("--raw prints one VM's bytes: give one TARGET")
    where = parse_where(where_specs)
    specs = [parse_watch_target(t) for t in targets]
    if raw and any(t.libvirt is not None and t.libvirt.domain is None for t in specs):
        raise click.UsageError("--raw prints one VM's bytes: name the domain (?domain=NAME)")
    if any(t.libvirt is not None for t in specs):
        try:
            import_libvirt()
        except ConfigError as error:
            raise click.UsageError(str(error)) from None
    if (vm_glob is not None or since is not None) and not any(t.fleet for t in specs):
        raise click.UsageError("--vm and --since read a fleet: give a nats:// TARGET")
    start: float | None = None
    if since is not None:
        try:
            start = parse_time(since)
        except ValueError as error:
            raise click.BadParameter(str(error), param_hint="--since") from None
    mode = "json" if as_json else "raw" if raw else "text"
    try:
        status = asyncio.run(
            _watch(specs, names, where, count, timeout, reconnect, mode, listen, vm_glob, start)
        )
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)

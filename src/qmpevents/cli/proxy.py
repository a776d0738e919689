"""``qmpevents proxy``: many clients on one QMP socket.

QEMU serves one client per ``-qmp`` socket; the proxy connects to it once and
serves any number of clients, each as if it talked to QEMU alone (see
:mod:`qmpevents.proxy`). Exit statuses: 0 when the upstream closed after
sending SHUTDOWN, or after SIGTERM/SIGHUP; 1 when the upstream went away
without SHUTDOWN; 2 for a usage error (bad option, a non-loopback ``--tcp``
without ``--tcp-public``, an upstream that cannot be reached or is not QMP
when starting without ``--reconnect``, a socket that cannot be served); 130
after Ctrl-C. With ``--reconnect`` the proxy outlives its upstream and only
a signal ends it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from typing import Final, NoReturn

import click

from qmpevents.addresses import Address, is_loopback, parse_address
from qmpevents.errors import ConfigError, QMPConnectionError
from qmpevents.proxy import Proxy, ProxyConfig

__all__ = ["proxy"]

_PROGRAM: Final = "qmpevents proxy"
_TCP_PUBLIC_HELP: Final = (
    "Allow a --tcp address that is not loopback. QMP has no authentication: any peer "
    "that reaches the port can run every command, including ones that create or "
    "overwrite files on this host (dump-guest-memory, blockdev-add + qemu-io)."
)


def _parse_tcp(spec: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:4444`` for IPv6; port 0: any free port)."""
    host, sep, port = spec.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{spec!r}: expected HOST:PORT", param_hint="--tcp")
    return host, int(port)


def _refuse_public(spec: str) -> NoReturn:
    click.echo(
        f"{_PROGRAM}: --tcp {spec}: not a loopback address, and QMP has no authentication: "
        "any peer that reaches it could run every command, including ones that write files "
        "(give --tcp-public to allow it)",
        err=True,
    )
    sys.exit(2)


async def _run(config: ProxyConfig) -> int:
    proxy = Proxy(config)
    try:
        addresses = await proxy.start()
    except (OSError, ConfigError, QMPConnectionError) as error:
        click.echo(f"{_PROGRAM}: {error}", err=True)
        return 2
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, proxy.request_close, 130)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, proxy.request_close, 0)
    click.echo(f"{_PROGRAM}: upstream {config.upstream}", err=True)
    for address in addresses:
        click.echo(f"{_PROGRAM}: listening on {address}", err=True)
    status = await proxy.wait_closed()
    if status == 1:
        click.echo(f"{_PROGRAM}: upstream {config.upstream} went away without SHUTDOWN", err=True)
    return status


@click.command()
@click.argument("upstream", metavar="UPSTREAM")
@click.option(
    "--listen",
    "sockets",
    multiple=True,
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Serve clients on this unix socket, mode 0600 (repeatable).",
)
@click.option(
    "--tcp",
    "tcps",
    multiple=True,
    metavar="HOST:PORT",
    help="Serve clients on TCP (repeatable; a loopback address unless --tcp-public).",
)
@click.option("--tcp-public", is_flag=True, help=_TCP_PUBLIC_HELP)
@click.option(
    "--record",
    type=click.Path(dir_okay=False),
    metavar="FILE",
    help="Append every message, both directions, to FILE as JSON lines.",
)
@click.option(
    "--reconnect",
    is_flag=True,
    help="When the upstream goes away, connect again (with backoff) instead of exiting.",
)
def proxy(
    upstream: str,
    sockets: tuple[str, ...],
    tcps: tuple[str, ...],
    tcp_public: bool,
    record: str | None,
    reconnect: bool,
) -> None:
    """Serve many QMP clients on one QMP socket (UPSTREAM: a socket path or HOST:PORT).

    Every client gets QEMU's own greeting, negotiates on its own, has its
    commands forwarded (ids rewritten, so clients never clash) and its replies
    back with its own id, byte for byte as QEMU would send them, and receives
    every event. A client that stops reading is disconnected at 4 MiB of
    unread output. When the upstream goes away every client gets EOF; the
    proxy exits (0 after SHUTDOWN, 1 otherwise) or, with --reconnect, waits
    for it to come back.
    """
    if not sockets and not tcps:
        raise click.UsageError("nowhere to listen: give --listen PATH or --tcp HOST:PORT")
    try:
        address: Address = parse_address(upstream)
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="UPSTREAM") from None
    endpoints = []
    for spec in tcps:
        host, port = _parse_tcp(spec)
        if not tcp_public and not is_loopback(host):
            _refuse_public(spec)
        endpoints.append((host, port))
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(f"{_PROGRAM}: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler])
    config = ProxyConfig(
        address,
        unix=list(sockets),
        tcp=endpoints,
        allow_remote=tcp_public,
        reconnect=reconnect,
        record=record,
    )
    try:
        status = asyncio.run(_run(config))
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)

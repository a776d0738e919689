"""``qmpevents serve``: the simulated QEMU with friendly options, and scenarios.

The friendly form of ``qmpevents-qemu``: the same machine, described by a few
options or a scenario file instead of QEMU's command line. SIGINT, SIGTERM and
SIGHUP end it as they end QEMU: SHUTDOWN ``host-signal`` to the clients and
``qmpevents serve: terminating on signal N from pid P (COMMAND)`` on stderr.
Exit statuses: the machine's (0 after ``quit``, a signal or
``--exit-after-scenario``; 1 after a guest panic with ``--panic-action
exit-failure``), 1 when a scenario step fails, 2 for a usage error (bad option,
a scenario file that does not load, with its line number, a non-loopback
``--tcp`` without ``--tcp-public``, a socket that cannot be served), 130
interrupted before serving. A usage error is one line on stderr,
``qmpevents serve: MESSAGE``, naming the option.

The devices the guest actions need are options (``--pvpanic``, ``--vserport
ID``, ``--dimm ID:SIZE``), added to a scenario's machine; at start, stderr says
which devices exist, so that a guest action on a device the machine lacks
(which QEMU only logs) is not a mystery.
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any, Final, NoReturn, cast

import click

from qmpevents.addresses import is_loopback
from qmpevents.errors import ConfigError
from qmpevents.sim.config import MachineConfig, MonitorEndpoint, PanicAction
from qmpevents.sim.machine import Machine
from qmpevents.sim.opts import OptionError, parse_size
from qmpevents.sim.scenario import (
    Scenario,
    ScenarioError,
    bundled_scenario,
    bundled_scenarios,
    load_scenario,
    narration,
)
from qmpevents.sim.scenario_devices import (
    DeviceOptionError,
    add_devices,
    describe_devices,
    size_error,
)
from qmpevents.sim.scenario_format import Step
from qmpevents.sim.scenario_runner import run_scenario
from qmpevents.sim.signals import HostSignals, host_signals_blocked

__all__ = ["load_scenario_option", "parse_tcp", "serve"]

_PROGRAM: Final = "qmpevents serve"
_PANIC_ACTIONS: Final = ("pause", "shutdown", "none", "exit-failure")
_TCP_PUBLIC_HELP: Final = (
    "Allow a --tcp address that is not loopback. QMP has no authentication: any peer "
    "that reaches the port can run every command, including ones that create or "
    "overwrite files on this host (dump-guest-memory, blockdev-add + qemu-io)."
)
# How often --wait-for-client looks for a negotiated client.
_CLIENT_POLL: Final = 0.02


class _OneLineUsageError(click.ClickException):
    """A usage error shown as one line, ``qmpevents serve: MESSAGE``, exit status 2."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"{_PROGRAM}: {self.message}", err=True)


class _ServeCommand(click.Command):
    """``serve`` with usage errors on one line (click's own take four, and wrap)."""

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
            raise _one_line(error) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as error:
            raise _one_line(error) from None


def _one_line(error: click.UsageError) -> _OneLineUsageError:
    return _OneLineUsageError(" ".join(error.format_message().split()))


def parse_tcp(spec: str) -> MonitorEndpoint:
    """``HOST:PORT`` (``[::1]:4444`` for IPv6; port 0: any free port) as a TCP endpoint."""
    host, sep, port = spec.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{spec!r}: expected HOST:PORT", param_hint="'--tcp'")
    return MonitorEndpoint("tcp", host=host, port=int(port))


def load_scenario_option(value: str) -> Scenario:
    """A scenario file, or the name of a bundled scenario when no such file exists."""
    try:
        if not os.path.exists(value) and value in bundled_scenarios():
            return bundled_scenario(value)
        return load_scenario(value)
    except ConfigError as error:
        raise click.UsageError(f"--scenario: {error}") from None


def _refuse_public(spec: str) -> NoReturn:
    click.echo(
        f"{_PROGRAM}: --tcp {spec}: not a loopback address, and QMP has no authentication: "
        "any peer that reaches it could run every command, including ones that write files "
        "(give --tcp-public to allow it)",
        err=True,
    )
    sys.exit(2)


async def _say(index: int, step: Step) -> None:
    text = narration(step)
    if text is not None:
        click.echo(f"» {text}")


async def _wait_for_client(machine: Machine) -> None:
    """Return once a client of the machine has finished ``qmp_capabilities``."""
    click.echo(f"{_PROGRAM}: waiting for a client to negotiate before the scenario", err=True)
    while not machine.server.negotiated_clients:
        await asyncio.sleep(_CLIENT_POLL)


async def _serve(
    config: MachineConfig, scenario: Scenario | None, exit_after: bool, wait_for_client: bool
) -> int:
    machine = Machine(config, program=_PROGRAM)
    # The scenario's images live as long as the machine that serves them.
    with tempfile.TemporaryDirectory(prefix="qmpevents-serve-") as workdir:
        try:
            addresses = await machine.start()
        except (ConfigError, OSError) as error:
            click.echo(f"{_PROGRAM}: {error}", err=True)
            await machine.server.close()
            return 2
        signals = HostSignals(machine)
        signals.install()
        try:
            for address in addresses:
                click.echo(f"{_PROGRAM}: listening on {address}", err=True)
            for line in describe_devices(config):
                click.echo(f"{_PROGRAM}: {line}", err=True)
            ready = (lambda: _wait_for_client(machine)) if wait_for_client else None
            return await _run(machine, scenario, exit_after, workdir, ready)
        finally:
            signals.close()


async def _run(
    machine: Machine,
    scenario: Scenario | None,
    exit_after: bool,
    workdir: str,
    ready: Callable[[], Awaitable[None]] | None,
) -> int:
    """Play the scenario (if any) while serving; the exit status."""
    if scenario is not None:
        play = asyncio.ensure_future(
            run_scenario(machine, scenario, on_step=_say, workdir=workdir, ready=ready)
        )
        closed = asyncio.ensure_future(machine.server.wait_closed())
        await asyncio.wait([play, closed], return_when=asyncio.FIRST_COMPLETED)
        if not play.done():
            # quit, a signal or a guest shutdown ended the machine mid-scenario.
            play.cancel()
            return await closed
        closed.cancel()
        failure = play.exception()
        if isinstance(failure, ScenarioError):
            click.echo(f"{_PROGRAM}: {failure}", err=True)
            await machine.server.close(1)
            return 1
        if failure is not None:
            raise failure
        if exit_after:
            await machine.server.close()
    return await machine.server.wait_closed()


@click.command(cls=_ServeCommand)
@click.option(
    "--socket",
    "sockets",
    multiple=True,
    type=click.Path(dir_okay=False),
    metavar="PATH",
    help="Serve QMP on this unix socket (repeatable).",
)
@click.option(
    "--tcp",
    "tcps",
    multiple=True,
    metavar="HOST:PORT",
    help="Serve QMP on TCP (repeatable; a loopback address unless --tcp-public).",
)
@click.option("--tcp-public", is_flag=True, help=_TCP_PUBLIC_HELP)
@click.option("--ram", metavar="SIZE", help="Guest RAM (64M, 1G; a bare number is MiB).")
@click.option(
    "--panic-action",
    type=click.Choice(_PANIC_ACTIONS),
    help="What a guest panic does (QEMU's -action panic=); default shutdown.",
)
@click.option(
    "--scenario",
    "scenario_spec",
    metavar="FILE|NAME",
    help="Replay this scenario file (or bundled scenario, e.g. demo) once serving.",
)
@click.option("--exit-after-scenario", is_flag=True, help="Exit when the scenario is done.")
@click.option(
    "--wait-for-client",
    is_flag=True,
    help="Start the scenario only once a client has negotiated (sent qmp_capabilities), "
    "so that it sees the first event.",
)
@click.option("--paused", is_flag=True, help="Start paused (QEMU's -S).")
@click.option(
    "--pvpanic/--no-pvpanic",
    default=None,
    help="A pvpanic device, for x-sim-pvpanic (QEMU's -device pvpanic); "
    "default: on, or as the scenario says.",
)
@click.option(
    "--vserport",
    "vserports",
    multiple=True,
    metavar="ID",
    help="A virtserialport with this id, for x-sim-vserport (repeatable; all on one "
    "virtio-serial-pci bus, virtio-serial0).",
)
@click.option(
    "--dimm",
    "dimms",
    multiple=True,
    metavar="ID:SIZE",
    help="A pc-dimm with this id and size (dimm1:128M; a bare size is MiB), for device_del "
    "and the guest's answer, x-sim-unplug-reject or x-sim-unplug-policy (repeatable; -m "
    "slots and maxmem follow).",
)
def serve(
    sockets: tuple[str, ...],
    tcps: tuple[str, ...],
    tcp_public: bool,
    ram: str | None,
    panic_action: str | None,
    scenario_spec: str | None,
    exit_after_scenario: bool,
    wait_for_client: bool,
    paused: bool,
    pvpanic: bool | None,
    vserports: tuple[str, ...],
    dimms: tuple[str, ...],
) -> None:
    """Run a simulated QEMU 7.2 that clients reach over QMP.

    The machine has a pvpanic device, or is the one the scenario describes;
    options override it and add devices to it. Bundled scenarios: demo, dump,
    migration, panic, quorum, unplug, vserport. With --scenario, its timeline
    runs once the sockets listen (or once a client is there, with
    --wait-for-client), its narration goes to stdout, and the machine then keeps
    serving until quit, SIGTERM or Ctrl-C (or exits, with --exit-after-scenario).
    """
    if not sockets and not tcps:
        raise click.UsageError("nothing to serve: give --socket PATH or --tcp HOST:PORT")
    if exit_after_scenario and scenario_spec is None:
        raise click.UsageError("--exit-after-scenario needs --scenario")
    if wait_for_client and scenario_spec is None:
        raise click.UsageError("--wait-for-client needs --scenario")
    endpoints = [MonitorEndpoint("unix", path=path) for path in sockets]
    for spec in tcps:
        endpoint = parse_tcp(spec)
        if not tcp_public and not is_loopback(endpoint.host):
            _refuse_public(spec)
        endpoints.append(endpoint)
    scenario = load_scenario_option(scenario_spec) if scenario_spec is not None else None
    config = scenario.machine_config() if scenario is not None else MachineConfig(pvpanic=True)
    config.monitors = endpoints
    config.tcp_public = tcp_public
    if ram is not None:
        try:
            config.ram_size = parse_size(ram, "M", name="ram")
        except OptionError as error:
            raise click.BadParameter(
                f"{ram!r}: {size_error(error)}", param_hint="'--ram'"
            ) from None
    if panic_action is not None:
        config.panic_action = cast(PanicAction, panic_action)
    if paused:
        config.start_paused = True
    try:
        add_devices(config, vserports=vserports, dimms=dimms, pvpanic=pvpanic)
    except DeviceOptionError as error:
        raise click.BadParameter(error.message, param_hint=f"'{error.option}'") from None
    try:
        with host_signals_blocked():
            status = asyncio.run(_serve(config, scenario, exit_after_scenario, wait_for_client))
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)

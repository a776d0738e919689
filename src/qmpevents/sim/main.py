"""``qmpevents-qemu``: the simulator as a drop-in for ``qemu-system-x86_64``, and
``qmpevents-qemu-ppc64`` for ``qemu-system-ppc64`` (:mod:`qmpevents.sim.target`).

Exit statuses are QEMU's: 0 after ``quit``, a guest shutdown, a signal (SIGINT,
SIGTERM or SIGHUP: SHUTDOWN ``host-signal`` to the clients and QEMU's
``terminating on signal N from pid P (COMMAND)`` on stderr) or a help option
(``-h``, ``-version``, ``-machine help``, ``-device help``, ``-accel help``, on
stdout); 1 for a bad command line (with QEMU's message on stderr), a failed
start (no accelerator, a pidfile or socket that cannot be made) or ``-action
panic=exit-failure`` after a guest panic. With ``-daemonize`` the command
returns once the daemon's monitors listen (:mod:`qmpevents.sim.daemon`).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from qmpevents.errors import ConfigError
from qmpevents.server.commands import QMPCommandFailure
from qmpevents.sim.bound_scenario import load_bound_scenario, play_bound_scenario
from qmpevents.sim.cmdline import CommandLineError, parse_command_line
from qmpevents.sim.config import MachineConfig
from qmpevents.sim.daemon import Daemon, check_default_devices
from qmpevents.sim.help import HelpRequested, help_text
from qmpevents.sim.machine import Machine
from qmpevents.sim.sandbox import apply_process_options
from qmpevents.sim.signals import HostSignals, host_signals_blocked
from qmpevents.sim.target import target_of_program

__all__ = ["main", "run_machine"]


async def run_machine(machine: Machine, *, ready: asyncio.Event | None = None) -> int:
    """Start ``machine``, serve until it closes, and return its exit status.

    SIGINT, SIGTERM and SIGHUP end it as they end QEMU (:mod:`qmpevents.sim.signals`);
    run it inside :func:`~qmpevents.sim.signals.host_signals_blocked` to name their
    senders. Call it in the main thread.
    """
    await machine.start()
    signals = HostSignals(machine)
    signals.install()
    timeline: asyncio.Task[None] | None = None
    if machine.config.scenario is not None:  # -x-sim-scenario: see .bound_scenario
        scenario = load_bound_scenario(machine.config.scenario)
        timeline = asyncio.create_task(play_bound_scenario(machine, scenario))
    try:
        if ready is not None:
            ready.set()
        return await machine.server.wait_closed()
    finally:
        if timeline is not None:
            timeline.cancel()
        signals.close()


def _serve(config: MachineConfig, program: str) -> int:
    # QEMU's order: daemonize, pidfile, default devices, then the machine (its
    # accelerator first); a daemon releases its parent once its monitors listen.
    daemon = Daemon(config.daemonize, config.pidfile)
    daemon.detach()
    try:
        daemon.write_pidfile()
        check_default_devices(config)
        # -name process=, -overcommit mem-lock=on, -sandbox: this process, from now on.
        apply_process_options(config)
        with host_signals_blocked():
            return asyncio.run(_run_daemon(Machine(config, program=program), daemon))
    finally:
        daemon.close()


async def _run_daemon(machine: Machine, daemon: Daemon) -> int:
    ready = asyncio.Event()
    running = asyncio.ensure_future(run_machine(machine, ready=ready))
    started = asyncio.ensure_future(ready.wait())
    await asyncio.wait((running, started), return_when=asyncio.FIRST_COMPLETED)
    started.cancel()
    if ready.is_set():
        daemon.ready()
    return await running


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qmpevents-qemu`` with ``argv`` (default ``sys.argv``); returns the exit status."""
    args = list(sys.argv if argv is None else argv)
    program = os.path.basename(args[0]) if args else "qmpevents-qemu"
    target = target_of_program(program)
    try:
        config = parse_command_line(args[1:], target)
        if not config.monitors:
            raise CommandLineError("no QMP monitor: use -qmp or -chardev/-mon mode=control")
        return _serve(config, program)
    except HelpRequested as request:
        sys.stdout.write(help_text(request.topic, program, target))
        sys.stdout.flush()
        return 0
    except CommandLineError as error:
        print(f"{program}: {error}", file=sys.stderr)
        return 1
    except QMPCommandFailure as failure:
        print(f"{program}: {failure.desc}", file=sys.stderr)
        return 1
    except (ConfigError, OSError) as error:
        print(f"{program}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

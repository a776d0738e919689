"""``qmpevents-qemu``: the simulator as a drop-in for ``qemu-system-x86_64``.

Exit statuses are QEMU's: 0 after ``quit``, a guest shutdown, a signal (SIGINT,
SIGTERM or SIGHUP: SHUTDOWN ``host-signal`` to the clients and QEMU's
``terminating on signal N from pid P (COMMAND)`` on stderr) or a help option
(``-h``, ``-version``, ``-machine help``, ``-device help``, on stdout); 1 for a
bad command line (with QEMU's message on stderr) or ``-action
panic=exit-failure`` after a guest panic.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence

from qmpevents.errors import ConfigError
from qmpevents.server.commands import QMPCommandFailure
from qmpevents.sim.cmdline import CommandLineError, parse_command_line
from qmpevents.sim.config import MachineConfig
from qmpevents.sim.help import HelpRequested, help_text
from qmpevents.sim.machine import Machine
from qmpevents.sim.signals import HostSignals, host_signals_blocked

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
    try:
        if ready is not None:
            ready.set()
        return await machine.server.wait_closed()
    finally:
        signals.close()


def _daemonize() -> None:
    # QEMU's -daemonize: the parent exits once the child is set up.
    if os.fork():
        os._exit(0)
    os.setsid()
    if os.fork():
        os._exit(0)


def _serve(config: MachineConfig, program: str) -> int:
    if config.daemonize:
        _daemonize()
    if config.pidfile:
        with open(config.pidfile, "w") as f:
            f.write(f"{os.getpid()}\n")
    try:
        with host_signals_blocked():
            return asyncio.run(run_machine(Machine(config, program=program)))
    finally:
        if config.pidfile:
            os.unlink(config.pidfile)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``qmpevents-qemu`` with ``argv`` (default ``sys.argv``); returns the exit status."""
    args = list(sys.argv if argv is None else argv)
    program = os.path.basename(args[0]) if args else "qmpevents-qemu"
    try:
        config = parse_command_line(args[1:])
        if not config.monitors:
            raise CommandLineError("no QMP monitor: use -qmp or -chardev/-mon mode=control")
        return _serve(config, program)
    except HelpRequested as request:
        sys.stdout.write(help_text(request.topic, program))
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

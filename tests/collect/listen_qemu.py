"""Real QEMUs that connect to a listening socket (``-chardev socket,...,reconnect=N``).

Each guest also has its own ``-qmp`` socket, through which the tests drive it
(``stop``, ``cont``): the listening side only ever sees what QEMU sends it.
Without QEMU the tests skip, or fail under ``QMPEVENTS_REQUIRE_QEMU=1``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from qmpevents.client import QMPClient
from tests.qemu.conftest import BASE_ARGS, QEMU, _require, _wait_for_socket

__all__ = ["Fleet", "Guest", "not_qemu", "require_qemu"]

# QEMU's reconnect interval in the tests (seconds; the README's example says 5).
RECONNECT = 1


def require_qemu() -> str:
    """The QEMU binary (skip without it, fail without it under QMPEVENTS_REQUIRE_QEMU=1)."""
    return _require(QEMU)


@dataclass
class Guest:
    """One QEMU: its ``-name`` argument, process and control socket."""

    name_arg: str
    process: subprocess.Popen[bytes]
    control: Path


class Fleet:
    """QEMUs that connect to ``listen``; :meth:`close` kills every one."""

    def __init__(self, binary: str, directory: Path, listen: Path) -> None:
        self.binary = binary
        self.directory = directory
        self.listen = listen
        self.guests: list[Guest] = []

    async def boot(self, name_arg: str) -> Guest:
        """A QEMU started with ``-name name_arg`` that connects to the listener."""
        control = self.directory / f"control-{len(self.guests)}.sock"
        argv = [
            self.binary,
            *BASE_ARGS,
            "-name",
            name_arg,
            "-chardev",
            f"socket,id=qmpev,path={self.listen},reconnect={RECONNECT}",
            "-mon",
            "chardev=qmpev,mode=control",
            "-qmp",
            f"unix:{control},server=on,wait=off",
        ]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        guest = Guest(name_arg, process, control)
        self.guests.append(guest)
        await _wait_for_socket(control, process)
        return guest

    @staticmethod
    async def run(guest: Guest, *commands: str) -> None:
        """Run ``commands`` on the guest's own -qmp socket."""
        async with QMPClient(guest.control) as qmp:
            for command in commands:
                await qmp.execute(command, timeout=10)

    @staticmethod
    def kill(guest: Guest) -> None:
        guest.process.send_signal(signal.SIGKILL)
        guest.process.wait(10)

    def close(self) -> None:
        for guest in self.guests:
            if guest.process.poll() is None:
                guest.process.kill()
            guest.process.wait(10)
            assert guest.process.stderr is not None
            guest.process.stderr.close()


def not_qemu(listen: Path, payload: bytes) -> subprocess.Popen[bytes]:
    """A process that connects to ``listen``, sends ``payload`` and waits to be dropped.

    It exits 0 when the listener closes the connection (EOF), 1 otherwise (10 s).
    """
    script = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "s.settimeout(10)\n"
        "s.connect(sys.argv[1])\n"
        "s.sendall(sys.argv[2].encode())\n"
        "try:\n"
        "    while s.recv(4096): pass\n"
        "except OSError: sys.exit(1)\n"
    )
    return subprocess.Popen([sys.executable, "-c", script, str(listen), payload.decode()])

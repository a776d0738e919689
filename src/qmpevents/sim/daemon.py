"""``-daemonize`` and ``-pidfile`` as QEMU 7.2 does them (os-posix.c, oslib-posix.c).

libvirt starts QEMU with both and relies on their contract: the command
returns only once QEMU is ready (its QMP socket listens), its status says
whether QEMU started, and the pidfile names the process to talk to and to kill.
Measured on QEMU 7.2 and reproduced here:

* ``-daemonize`` forks after the command line is read. The parent waits on a
  pipe and exits 0 only when the daemon writes a zero byte, once it is set up;
  if the daemon dies first (it prints why on the stderr they share), the parent
  exits 1. An error on the command line is the parent's own: status 1.
* The child calls ``setsid()`` and forks again, so the daemon is no session
  leader and never gets a controlling terminal; umask 027; SIGTSTP, SIGTTOU
  and SIGTTIN ignored.
* The pidfile is made next (mode 0600), write-locked (POSIX ``fcntl``) for the
  daemon's life, and holds its pid and a newline. Failing that ends the
  program: ``cannot create PID file: Could not create 'PATH': <error>`` or
  ``cannot create PID file: Cannot lock pid file: <error>`` when another QEMU
  holds it. The file is removed when the program exits, also after a failure
  later in the start.
* Once set up, the daemon moves to ``/`` and puts stdin, stdout and stderr on
  ``/dev/null``, then releases the parent.

``-pidfile`` without ``-daemonize`` writes the same file from the one process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import sys

from qmpevents.sim.cmdline import CommandLineError
from qmpevents.sim.config import MachineConfig

__all__ = ["Daemon", "check_default_devices"]


class Daemon:
    """The ``-daemonize``/``-pidfile`` life cycle of one ``qmpevents-qemu`` run.

    Call :meth:`detach` (returns in the daemon only), :meth:`write_pidfile`,
    :meth:`ready` once the monitors listen, and :meth:`close` at exit.
    """

    def __init__(self, daemonize: bool, pidfile: str | None) -> None:
        self.daemonize = daemonize
        self.pidfile = pidfile
        self._pipe: int | None = None
        self._pid_fd: int | None = None
        self._pid_path: str | None = None

    def detach(self) -> None:
        """Fork twice as QEMU does; the parent exits with the daemon's start status."""
        if not self.daemonize:
            return
        sys.stdout.flush()
        sys.stderr.flush()
        read_end, write_end = os.pipe()
        if os.fork() > 0:
            os.close(write_end)
            status = _read_status(read_end)
            os._exit(0 if status == b"\0" else 1)
        os.close(read_end)
        self._pipe = write_end
        os.setsid()
        if os.fork() > 0:
            os._exit(0)
        os.umask(0o027)
        for number in (signal.SIGTSTP, signal.SIGTTOU, signal.SIGTTIN):
            signal.signal(number, signal.SIG_IGN)

    def write_pidfile(self) -> None:
        """Create, lock and fill the pidfile (CommandLineError with QEMU's message)."""
        path = self.pidfile
        if path is None:
            return
        while True:
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            except OSError as error:
                raise _pidfile_error(f"Could not create '{path}': {error.strerror}") from None
            created = os.fstat(fd)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                os.close(fd)
                raise _pidfile_error(f"Cannot lock pid file: {error.strerror}") from None
            try:
                current = os.stat(path)
            except FileNotFoundError:
                current = None
            # Another QEMU removed or replaced the file between open and lock: again.
            if current is not None and current.st_ino == created.st_ino:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._pid_fd = fd
        # Removed by its full path: the daemon changes to / before it exits.
        self._pid_path = os.path.realpath(path)

    def ready(self) -> None:
        """The program is set up: detach from the terminal and release the parent."""
        if self._pipe is None:
            return
        os.chdir("/")
        sys.stdout.flush()
        sys.stderr.flush()
        null = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(null, fd)
        os.close(null)
        os.write(self._pipe, b"\0")
        os.close(self._pipe)
        self._pipe = None

    def close(self) -> None:
        """At exit: remove the pidfile, as QEMU's exit notifier does."""
        if self._pid_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._pid_path)
            self._pid_path = None
        if self._pid_fd is not None:
            os.close(self._pid_fd)
            self._pid_fd = None


def _read_status(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 1)
        except InterruptedError:  # pragma: no cover - Python retries EINTR itself
            continue


def _pidfile_error(reason: str) -> CommandLineError:
    return CommandLineError(f"cannot create PID file: {reason}")


def check_default_devices(config: MachineConfig) -> None:
    """Refuse ``-nographic`` where QEMU would put devices on stdio (CommandLineError).

    ``-nographic`` puts QEMU's default serial port (and parallel port, and HMP
    monitor) on stdio. ``-nodefaults`` removes them, a QMP monitor option removes
    the HMP one (the simulator always has one), and machine ``none`` has no
    serial or parallel port (measured). QEMU 7.2 refuses what remains with
    ``-daemonize``; without it the simulator refuses it, having no serial port.
    """
    if not config.nographic or config.nodefaults or config.machine_type == "none":
        return
    if config.daemonize:
        raise CommandLineError("-nographic cannot be used with -daemonize")
    raise CommandLineError(
        "-nographic: qmpevents-qemu has no serial port for stdio: add -nodefaults"
    )

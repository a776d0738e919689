"""Host signals as QEMU 7.2 takes them: SIGINT, SIGTERM and SIGHUP end the machine.

QEMU's ``termsig_handler()`` (os-posix.c) records the signal and its sender
(``si_pid``); its main loop then reports it (``qemu_kill_report()``,
softmmu/runstate.c), sends ``SHUTDOWN {"guest": false, "reason": "host-signal"}``
to every negotiated monitor and exits with status 0, even under
``-no-shutdown``. The report is one line on stderr::

    qemu-system-x86_64: terminating on signal 15 from pid 4242 (/usr/bin/python3)

naming the sender by the first string of ``/proc/PID/cmdline`` (its argv[0]):
empty for a sender that has exited but is not reaped yet, ``<unknown process>``
once it is gone. A signal the kernel sends (Ctrl-C at a terminal: ``si_pid``
0) reads ``terminating on signal 2``.

Python's signal handlers never see ``si_pid``, so the three signals are blocked
(:func:`host_signals_blocked`, entered before any thread starts) and
:class:`HostSignals` takes them with ``sigwaitinfo()`` in a thread of its own,
which hands the signal and its sender to the event loop. A signal that reaches
a thread still accepting it (one started before the block) goes to an event
loop handler instead, and is reported without a sender.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["HOST_SIGNALS", "HostSignals", "host_signals_blocked", "kill_report", "sender_command"]

HOST_SIGNALS: Final = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_JOIN_TIMEOUT: Final = 2.0


def sender_command(pid: int) -> str | None:
    """What QEMU's ``qemu_get_pid_name()`` shows of process ``pid``: its argv[0].

    None when ``/proc/PID/cmdline`` cannot be read (the process is gone); an empty
    string for a zombie.
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # QEMU prints the file as a C string: up to the first NUL.
    return data.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")


def kill_report(signum: int, pid: int, command: str | None) -> str:
    """``qemu_kill_report()``'s message (without the program name) for a signal from ``pid``."""
    if pid == 0:
        return f"terminating on signal {int(signum)}"
    name = command if command is not None else "<unknown process>"
    return f"terminating on signal {int(signum)} from pid {pid} ({name})"


def _unblock(previous: set[int | signal.Signals]) -> None:
    """Restore the mask ``previous``, first dropping what would otherwise fire on unblocking."""
    unblocking = [signum for signum in HOST_SIGNALS if signum not in previous]
    if unblocking:
        while signal.sigtimedwait(unblocking, 0) is not None:
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def host_signals_blocked() -> Iterator[None]:
    """Block SIGINT, SIGTERM and SIGHUP in this thread (and the threads it starts).

    Enter it before any thread starts (around ``asyncio.run``), so that every
    thread inherits the block and :class:`HostSignals` learns each sender. A
    signal that arrives before the machine listens waits for it. On exit a
    signal still pending is dropped (the machine has ended) and the previous
    mask is restored.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HOST_SIGNALS)
    try:
        yield
    finally:
        _unblock(previous)


class HostSignals:
    """End ``machine`` as QEMU ends on SIGINT, SIGTERM or SIGHUP; see the module docstring.

    :meth:`install` from the machine's running event loop, in the main thread;
    :meth:`close` once the machine has closed.
    """

    def __init__(self, machine: Machine) -> None:
        self._machine = machine
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._previous: set[int | signal.Signals] | None = None
        self._stopping = False
        self._signalled = False

    def install(self) -> None:
        """Start taking the signals (blocking them in this thread while installed)."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._previous = signal.pthread_sigmask(signal.SIG_BLOCK, HOST_SIGNALS)
        for signum in HOST_SIGNALS:
            loop.add_signal_handler(signum, self.killed, signum, 0, None)
        self._thread = threading.Thread(target=self._wait, name="qmpevents-signals", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the signal thread and restore the signal mask and handlers."""
        self._stopping = True
        thread = self._thread
        if thread is not None and thread.ident is not None and thread.is_alive():
            # Wakes its sigwaitinfo(), which then sees _stopping.
            with contextlib.suppress(ProcessLookupError):
                signal.pthread_kill(thread.ident, signal.SIGHUP)
            thread.join(_JOIN_TIMEOUT)
        self._thread = None
        if self._loop is not None and not self._loop.is_closed():
            for signum in HOST_SIGNALS:
                self._loop.remove_signal_handler(signum)
        if self._previous is not None:
            _unblock(self._previous)
            self._previous = None

    def killed(self, signum: int, pid: int, command: str | None) -> None:
        """``qemu_system_killed()`` and what the main loop does next, for the first signal."""
        if self._signalled:
            return
        self._signalled = True
        machine = self._machine
        machine.error_report(kill_report(signum, pid, command))
        machine.server.emit("SHUTDOWN", {"guest": False, "reason": "host-signal"})
        machine.server.request_close(0)

    def _wait(self) -> None:
        # Also blocked here, whatever the starting thread had, as sigwaitinfo() needs.
        signal.pthread_sigmask(signal.SIG_BLOCK, HOST_SIGNALS)
        loop = self._loop
        assert loop is not None
        while True:
            info = signal.sigwaitinfo(HOST_SIGNALS)
            if self._stopping:
                return
            pid = info.si_pid
            # Read now, while a short-lived sender (kill(1)) most likely still exists.
            command = sender_command(pid) if pid else None
            try:
                loop.call_soon_threadsafe(self.killed, info.si_signo, pid, command)
            except RuntimeError:  # the loop has closed
                return

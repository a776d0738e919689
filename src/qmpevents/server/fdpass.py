"""File descriptors passed to a monitor over its unix socket (SCM_RIGHTS), as QEMU takes them.

A QMP client on a unix socket can send descriptors with its bytes; ``getfd``
then names the one that came with the command, and commands such as
``dump-guest-memory fd:NAME`` use it. libvirt relies on this to hand QEMU files
it opened itself. QEMU 7.2's socket chardev (chardev/char-socket.c) and monitor
(monitor/misc.c), as measured, and as reproduced here:

* Every read may carry up to 16 descriptors (``TCP_MAX_FDS``); the kernel
  closes any beyond that. A read that carries some replaces (and closes) those
  still held from an earlier read; a read without any keeps them.
* ``getfd`` takes the first held descriptor and closes the others. The names
  belong to the monitor (one ``-qmp``/``-mon``), not to the connection: they
  outlive a client that leaves, while unclaimed descriptors of that client are
  closed with its connection. ``getfd`` of a name in use replaces (and closes)
  the old descriptor.
* A descriptor arrives close-on-exec and blocking (QEMU resets O_NONBLOCK,
  which SCM_RIGHTS preserves from the sender).

The sockets here plug into asyncio's own accept loop and transport:
:class:`FdPassingSocket` is a listening socket whose ``accept()`` returns a
:class:`FdReceivingConnection`, whose ``recv()`` (what the transport calls) is a
``recvmsg()`` that hands the descriptors to the connection's monitor before the
bytes they came with reach it.
"""

from __future__ import annotations

import array
import contextlib
import os
import socket
import weakref
from collections.abc import Callable, Iterable
from typing import Any, Final

__all__ = [
    "MAX_FDS",
    "FdPassingSocket",
    "FdReceivingConnection",
    "MonitorFds",
    "claim_connection",
    "close_named",
    "descriptors",
]

MAX_FDS: Final = 16
"""Descriptors one read may carry (TCP_MAX_FDS in chardev/char-socket.c)."""

_INT_SIZE: Final = array.array("i").itemsize
_ANCILLARY_SPACE: Final = socket.CMSG_SPACE(MAX_FDS * _INT_SIZE)

# Accepted connections by descriptor number until their monitor claims them: the
# number is unique while the socket is open, and a dropped one is forgotten.
_unclaimed: weakref.WeakValueDictionary[int, FdReceivingConnection] = weakref.WeakValueDictionary()


def descriptors(ancillary: Iterable[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors of the SCM_RIGHTS messages in ``recvmsg()`` ancillary data."""
    found: list[int] = []
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            whole = len(payload) - len(payload) % _INT_SIZE
            found.extend(array.array("i", payload[:whole]))
    return found


def _close_all(fds: Iterable[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


class FdReceivingConnection(socket.socket):
    """An accepted unix connection whose reads deliver passed descriptors to ``sink``.

    Until a monitor sets ``sink``, descriptors that arrive are closed (nobody
    could name them).
    """

    sink: Callable[[list[int]], None] | None = None

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        data, ancillary, _, _ = self.recvmsg(
            bufsize, _ANCILLARY_SPACE, flags | socket.MSG_CMSG_CLOEXEC
        )
        fds = descriptors(ancillary)
        if fds:
            for fd in fds:
                os.set_blocking(fd, True)
            if self.sink is None:
                _close_all(fds)
            else:
                self.sink(fds)
        return data


class FdPassingSocket(socket.socket):
    """A listening unix socket whose connections can receive descriptors.

    Build it like a ``socket.socket`` (``FdPassingSocket(AF_UNIX, SOCK_STREAM)``,
    or ``FdPassingSocket(fileno=fd)`` for an inherited one) and serve it with
    ``loop.create_unix_server(..., sock=it)``.
    """

    def accept(self) -> tuple[socket.socket, Any]:
        conn, address = super().accept()
        connection = FdReceivingConnection(conn.family, conn.type, conn.proto, conn.detach())
        _unclaimed[connection.fileno()] = connection
        return connection, address


def claim_connection(fileno: int) -> FdReceivingConnection | None:
    """The accepted connection with descriptor ``fileno``, once (None for other sockets)."""
    return _unclaimed.pop(fileno, None)


class MonitorFds:
    """The descriptors of one monitor connection, with QEMU's rules (module docstring).

    ``named`` is the table of the monitor the connection belongs to: shared by its
    successive connections, closed by its owner.
    """

    def __init__(self, named: dict[str, int]) -> None:
        self.named = named
        self._held: list[int] = []

    def receive(self, fds: list[int]) -> None:
        """Descriptors came with the last read: they replace those held."""
        _close_all(self._held)
        self._held = list(fds)

    def take_received(self) -> int | None:
        """The first held descriptor (the others are closed); None when none is held."""
        if not self._held:
            return None
        first, rest = self._held[0], self._held[1:]
        self._held = []
        _close_all(rest)
        return first

    def set_named(self, name: str, fd: int) -> None:
        """Name ``fd``; a descriptor that had the name is closed."""
        old = self.named.get(name)
        self.named[name] = fd
        if old is not None:
            _close_all([old])

    def take_named(self, name: str) -> int | None:
        """Remove the descriptor named ``name`` and return it (the caller closes it)."""
        return self.named.pop(name, None)

    def close_named(self, name: str) -> bool:
        """Close the descriptor named ``name``; False when no descriptor has that name."""
        fd = self.named.pop(name, None)
        if fd is None:
            return False
        _close_all([fd])
        return True

    def close(self) -> None:
        """The connection ended: close the descriptors nobody claimed."""
        _close_all(self._held)
        self._held = []


def close_named(named: dict[str, int]) -> None:
    """Close every descriptor of a monitor's table (the monitor is going away)."""
    _close_all(named.values())
    named.clear()

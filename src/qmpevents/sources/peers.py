"""Who connected to a listening socket: the peer's pid, and the VM name on its command line.

QEMU started with ``-chardev socket,id=qmpev,path=PATH,reconnect=5 -mon
chardev=qmpev,mode=control`` connects to us; the kernel tells us its pid
(``SO_PEERCRED``), and ``/proc/PID/cmdline`` tells us its ``-name``:

- ``-name NAME`` or ``-name guest=NAME`` (also ``--name``), with other options
  after commas (``-name NAME,process=qemu-NAME,debug-threads=on``); ``,,`` is a
  literal comma, as in every QEMU option; the last ``-name`` wins, as in QEMU;
- no ``-name`` (or one without a guest name): no name here, the caller asks
  ``query-name`` and else names the VM after its pid (``pid-1234``).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Sequence
from typing import Final

__all__ = ["describe_peer", "name_from_argv", "peer_pid", "pid_name", "read_argv"]

_UCRED: Final = struct.Struct("3i")  # struct ucred: pid, uid, gid


def peer_pid(sock: socket.socket) -> int | None:
    """The pid of the process at the other end of unix socket ``sock`` (None: unknown)."""
    try:
        pid, _uid, _gid = _UCRED.unpack(
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
        )
    except OSError:
        return None
    return pid if pid > 0 else None  # 0: the peer is in a pid namespace we cannot see


def pid_name(pid: int | None) -> str:
    """The VM name of a QEMU without a name: ``pid-1234``."""
    return f"pid-{pid}" if pid is not None else "pid-unknown"


def read_argv(pid: int) -> list[str] | None:
    """The command line of process ``pid``, or None when ``/proc`` does not tell us."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            data = f.read()
    except OSError:
        return None
    if not data:
        return None  # a zombie, or a process that hid its arguments
    return [arg.decode("utf-8", "surrogateescape") for arg in data.rstrip(b"\0").split(b"\0")]


def _split_options(text: str) -> list[str]:
    """QEMU's option list ``a,b=c``: commas split, ``,,`` is a literal comma."""
    parts: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == ",":
            if text.startswith(",,", i):
                current.append(",")
                i += 2
                continue
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    parts.append("".join(current))
    return parts


def _guest_of(value: str) -> str | None:
    guest: str | None = None
    for index, part in enumerate(_split_options(value)):
        key, sep, rest = part.partition("=")
        if not sep:
            if index == 0 and key:
                guest = key  # guest= is the implied first key
        elif key == "guest" and rest:
            guest = rest
    return guest


def name_from_argv(argv: Sequence[str]) -> str | None:
    """The guest name a QEMU command line gives (``-name``), or None."""
    name: str | None = None
    args = iter(argv[1:])
    for arg in args:
        if arg in ("-name", "--name"):
            value = next(args, None)
            if value is not None:
                name = _guest_of(value) or name
    return name


def describe_peer(pid: int | None) -> str:
    """``pid 1234 (python3)`` for log lines: the pid, and the program when /proc says it."""
    if pid is None:
        return "pid unknown"
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            comm = f.read().strip().decode("utf-8", "replace")
    except OSError:
        return f"pid {pid}"
    return f"pid {pid} ({comm})" if comm else f"pid {pid}"

"""Listening sockets of a QMP server: unix and TCP, one client at a time like QEMU.

QEMU serves one client per ``-qmp`` socket: a second client is accepted by the
kernel but gets no greeting, and is not read, until the first one leaves. A
:class:`Listener` does the same, or serves every connection at once when built
with ``multi_client=True``.

Unix sockets are created with mode 0600 (only the owner may connect, as the
monitor can do anything to the VM). A socket file nobody listens on (left by a
crashed process) is replaced; one with a live server behind it is an error.
The file is removed when the listener closes, if it is still ours.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
import stat
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any

from qmpevents.addresses import is_loopback
from qmpevents.errors import ConfigError
from qmpevents.server.fdpass import FdPassingSocket, close_named
from qmpevents.server.monitor import Monitor

if TYPE_CHECKING:
    from qmpevents.server.server import QMPServer

__all__ = [
    "Listener",
    "clear_stale_socket",
    "open_inherited_listener",
    "open_tcp_listener",
    "open_unix_listener",
    "remove_if_ours",
]

# asyncio's accept loop logs this, with a traceback, for every accept() that
# fails with EMFILE/ENFILE: up to a backlog's worth per retry, thousands a second.
_ACCEPT_EXHAUSTED = "socket.accept() out of system resource"
# While it lasts, the outage is logged once per this many seconds, with a count.
_EXHAUSTED_LOG_INTERVAL = 60.0
_filtered_loops: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()
log = logging.getLogger("qmpevents.server")


def _quiet_accept_exhaustion(loop: asyncio.AbstractEventLoop) -> None:
    """Log running out of file descriptors once, not per failed accept.

    asyncio already stops accepting for a second after such a failure; this only
    keeps the log readable. Every other exception goes to the handler that was
    there before (or asyncio's default).
    """
    if loop in _filtered_loops:
        return
    _filtered_loops.add(loop)
    previous = loop.get_exception_handler()
    last_logged = -_EXHAUSTED_LOG_INTERVAL
    suppressed = 0

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        nonlocal last_logged, suppressed
        if context.get("message") != _ACCEPT_EXHAUSTED:
            if previous is not None:
                previous(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        now = time.monotonic()
        if now - last_logged < _EXHAUSTED_LOG_INTERVAL:
            suppressed += 1
            return
        more = f" ({suppressed} more failures since the last report)" if suppressed else ""
        log.error(
            "cannot accept new QMP connections: %s; retrying every second%s",
            context.get("exception"),
            more,
        )
        last_logged, suppressed = now, 0

    loop.set_exception_handler(handler)


# Room for bursts of clients connecting at once (a unix connect fails outright,
# rather than waiting, when the backlog is full); the kernel caps it at somaxconn.
_BACKLOG = 1024


class Listener:
    """One listening socket and the connections it accepted.

    ``monitors`` is the server-wide set every started connection joins (events
    are broadcast over it); a connection leaves it when it closes.
    """

    def __init__(
        self, server: QMPServer, label: str, monitors: set[Monitor], *, multi_client: bool
    ) -> None:
        self.label = label
        self.multi_client = multi_client
        self._server = server
        self._monitors = monitors
        self._active: set[Monitor] = set()
        self._waiting: deque[Monitor] = deque()
        self._accepted = 0
        self._asyncio_server: asyncio.Server | None = None
        self._unix_path: str | None = None
        self._unix_inode = 0
        #: The descriptors ``getfd`` named on this monitor: its connections share them.
        self.named_fds: dict[str, int] = {}

    @property
    def active_peers(self) -> list[str]:
        """The clients served now (their greeting sent), by :attr:`Monitor.peer`."""
        return [monitor.peer for monitor in self._active]

    def protocol_factory(self) -> Monitor:
        """A new :class:`Monitor` for an accepted connection."""
        self._accepted += 1
        return Monitor(self._server, self, f"{self.label}#{self._accepted}")

    def attach(self, monitor: Monitor) -> None:
        """Start ``monitor`` now if the socket is free (or multi-client), else queue it."""
        if self.multi_client or not self._active:
            self._start(monitor)
        else:
            self._waiting.append(monitor)

    def detach(self, monitor: Monitor) -> None:
        """``monitor`` closed: the next waiting connection, if any, gets the greeting."""
        self._monitors.discard(monitor)
        if monitor in self._active:
            self._active.discard(monitor)
            while self._waiting and not self._active:
                waiting = self._waiting.popleft()
                if not waiting.closed:
                    self._start(waiting)
        else:
            with contextlib.suppress(ValueError):  # already taken off by close()
                self._waiting.remove(monitor)

    def close(self) -> None:
        """Stop accepting, drop the connections still waiting, remove our socket file."""
        if self._asyncio_server is not None:
            self._asyncio_server.close()
            self._asyncio_server = None
        while self._waiting:
            self._waiting.popleft().abort()
        if self._unix_path is not None:
            remove_if_ours(self._unix_path, self._unix_inode)
            self._unix_path = None
        close_named(self.named_fds)

    def _start(self, monitor: Monitor) -> None:
        self._active.add(monitor)
        self._monitors.add(monitor)
        monitor.start()


async def open_unix_listener(
    server: QMPServer, path: str, monitors: set[Monitor], *, multi_client: bool
) -> Listener:
    """Listen on unix socket ``path`` (mode 0600), replacing a stale socket file.

    Raises :class:`ConfigError` naming the path when a server already listens
    there or the path exists and is not a socket.
    """
    clear_stale_socket(path)
    # Its connections can pass descriptors (getfd), as on QEMU's unix sockets.
    sock = FdPassingSocket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Linux creates the file with the mode of the socket inode: set it before
        # bind so that no other user can connect in the window before chmod.
        os.fchmod(sock.fileno(), 0o600)
        try:
            sock.bind(path)
        except OSError as error:
            raise ConfigError(f"{path}: cannot listen: {_reason(error)}") from error
        os.chmod(path, 0o600)
        inode = os.stat(path).st_ino
        listener = Listener(server, f"unix:{path}", monitors, multi_client=multi_client)
        loop = asyncio.get_running_loop()
        _quiet_accept_exhaustion(loop)
        listener._asyncio_server = await loop.create_unix_server(
            listener.protocol_factory, sock=sock, backlog=_BACKLOG
        )
    except BaseException:
        sock.close()
        raise
    listener._unix_path = path
    listener._unix_inode = inode
    return listener


async def open_inherited_listener(
    server: QMPServer, fd: int, monitors: set[Monitor], *, multi_client: bool
) -> Listener:
    """Serve on listening socket ``fd``, inherited from our parent (QEMU's ``fd=N``).

    libvirt creates the monitor socket itself and passes it open: the socket is
    put in the listening state (again). As QEMU does with any listening unix
    socket, its file is removed when the listener closes (if it is still that
    socket's). A unix socket's connections can pass descriptors. Raises
    :class:`ConfigError` when ``fd`` is not a stream socket.
    """
    try:
        sock = FdPassingSocket(fileno=fd)
    except OSError as error:
        raise ConfigError(f"File descriptor '{fd}' is not a socket: {_reason(error)}") from None
    try:
        if sock.type != socket.SOCK_STREAM:
            raise ConfigError(f"File descriptor '{fd}' is not a stream socket")
        address = sock.getsockname()
        path = ""
        if sock.family == socket.AF_UNIX:
            path = address if isinstance(address, str) else address.decode()
            label = f"unix:{path}"
        else:
            label = f"tcp:{address[0]}:{address[1]}"
        listener = Listener(server, label, monitors, multi_client=multi_client)
        loop = asyncio.get_running_loop()
        _quiet_accept_exhaustion(loop)
        listener._asyncio_server = await loop.create_server(
            listener.protocol_factory, sock=sock, backlog=_BACKLOG
        )
    except BaseException:
        sock.close()
        raise
    if path and not path.startswith("\0"):
        with contextlib.suppress(OSError):
            listener._unix_inode = os.stat(path).st_ino
            listener._unix_path = path
    return listener


async def open_tcp_listener(
    server: QMPServer,
    host: str,
    port: int,
    monitors: set[Monitor],
    *,
    allow_remote: bool,
    multi_client: bool,
) -> tuple[Listener, tuple[str, int]]:
    """Listen on TCP ``host``:``port``; returns the listener and the bound address.

    A host that is not a loopback address needs ``allow_remote=True``
    (:class:`ConfigError` otherwise): QMP has no authentication.
    """
    if not allow_remote and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host!r}: not a loopback address (allow_remote=True to permit)"
        )
    listener = Listener(server, f"tcp:{host}:{port}", monitors, multi_client=multi_client)
    loop = asyncio.get_running_loop()
    _quiet_accept_exhaustion(loop)
    try:
        asyncio_server = await loop.create_server(
            listener.protocol_factory, host, port, backlog=_BACKLOG
        )
    except OSError as error:
        shown = f"[{host}]" if ":" in host else host
        raise ConfigError(f"{shown}:{port}: cannot listen: {_reason(error)}") from error
    listener._asyncio_server = asyncio_server
    bound = asyncio_server.sockets[0].getsockname()
    listener.label = f"tcp:{bound[0]}:{bound[1]}"
    return listener, (str(bound[0]), int(bound[1]))


def _reason(error: OSError) -> str:
    """An OSError's words without its errno decoration ('address already in use')."""
    text = os.strerror(error.errno) if error.errno else (error.strerror or str(error))
    return text[:1].lower() + text[1:] if text else type(error).__name__


def clear_stale_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise ConfigError(f"{path}: exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.setblocking(False)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens: left over from a process that died
        return
    except OSError as error:
        # EAGAIN: a live server with a full backlog; anything else we cannot judge.
        if error.errno != errno.EAGAIN:
            raise ConfigError(f"{path}: cannot check the existing socket: {error}") from error
    finally:
        probe.close()
    raise ConfigError(f"{path}: another server is already listening on this socket")


def remove_if_ours(path: str, inode: int) -> None:
    # Another process may have replaced the file since (its stale-socket check):
    # only remove the socket we created.
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass

"""The proxy's listening sockets: unix (mode 0600) and TCP (loopback unless told otherwise).

The same rules as :mod:`qmpevents.server.sockets`, whose stale-socket check
and removal this reuses: a socket file nobody listens on is replaced, a live
one is an error, and the file is removed on close if it is still ours. Unlike
QEMU, every connection is served at once: that is the point of the proxy.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable

from qmpevents.addresses import is_loopback
from qmpevents.errors import ConfigError
from qmpevents.server.sockets import clear_stale_socket, remove_if_ours

__all__ = ["ListeningSocket", "listen_tcp", "listen_unix"]

_BACKLOG = 1024

Factory = Callable[[], asyncio.Protocol]


class ListeningSocket:
    """One listening socket; :meth:`close` stops it (and removes its unix file)."""

    def __init__(self, server: asyncio.Server, label: str, path: str | None, inode: int) -> None:
        self.server = server
        self.label = label
        self._path = path
        self._inode = inode

    def close(self) -> None:
        """Stop accepting; remove our socket file."""
        self.server.close()
        if self._path is not None:
            remove_if_ours(self._path, self._inode)
            self._path = None


async def listen_unix(path: str, factory: Factory) -> ListeningSocket:
    """Listen on unix socket ``path``, mode 0600 from the start.

    Raises :class:`ConfigError` when a server already listens there or the
    path is not a socket.
    """
    clear_stale_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        os.fchmod(sock.fileno(), 0o600)  # before bind: no window where others may connect
        sock.bind(path)
        os.chmod(path, 0o600)
        inode = os.stat(path).st_ino
        server = await asyncio.get_running_loop().create_unix_server(
            factory, sock=sock, backlog=_BACKLOG
        )
    except BaseException:
        sock.close()
        raise
    return ListeningSocket(server, f"unix:{path}", path, inode)


async def listen_tcp(
    host: str, port: int, factory: Factory, *, allow_remote: bool
) -> tuple[ListeningSocket, tuple[str, int]]:
    """Listen on TCP ``host``:``port`` (0: any free port); the socket and the bound address.

    A host that is not loopback needs ``allow_remote`` (:class:`ConfigError`
    otherwise): QMP has no authentication.
    """
    if not allow_remote and not is_loopback(host):
        raise ConfigError(
            f"refusing to listen on {host!r}: not a loopback address (allow_remote=True to permit)"
        )
    server = await asyncio.get_running_loop().create_server(factory, host, port, backlog=_BACKLOG)
    bound = server.sockets[0].getsockname()
    address = (str(bound[0]), int(bound[1]))
    return ListeningSocket(server, f"tcp:{address[0]}:{address[1]}", None, 0), address

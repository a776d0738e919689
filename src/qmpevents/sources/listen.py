"""QEMU connects to us: one listening unix socket, any number of VMs.

This is how Proxmox's qmeventd attaches: every VM is started with ::

    -chardev socket,id=qmpev,path=PATH,reconnect=5 -mon chardev=qmpev,mode=control

and connects to ``PATH`` itself (QEMU 7.2 starts without the listener, tries again
every ``reconnect`` seconds, and greets at once on each connection). Nothing has
to be discovered, and a VM comes back by itself after we restart.

:class:`ListenSource` listens (mode 0600; a live socket at ``PATH`` is refused, a
stale one replaced; our own file is removed on close) and announces each VM once,
as a :class:`VMSource`: ``async for vm in listen`` yields the VMs as they first
connect. Each is an ordinary :class:`~.base.EventSource` named after the VM, and
yields what a :class:`~.qmp.QMPSource` yields: ``Connected``, typed events,
``Disconnected`` at loss, and on return ``Connected`` + ``Gap`` (+ ``RunState``).

Identifying a peer: its pid from ``SO_PEERCRED``; its name from ``-name`` on
``/proc/PID/cmdline`` (see :mod:`.peers`), else from ``query-name`` after the
negotiation, else ``pid-1234``. A QEMU that reconnects with the same name is the
same VM. A second live connection for a name already connected is refused.

A peer that is not QEMU (garbage, silence, EOF before the greeting) gets one log
line naming its pid and is dropped; the handshake (greeting, negotiation,
``query-name``, ``query-status``) is bounded by ``greeting_timeout``, and at most
``max_pending`` peers may be in it at once (more are dropped with a log line).
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
from collections import deque
from collections.abc import AsyncIterator, Mapping
from typing import Any

from qmpevents.client import Gap, OverflowPolicy
from qmpevents.client.runstate import RunStateTracker, parse_status
from qmpevents.errors import ConfigError, ConnectionLost, QMPEventsError
from qmpevents.schema.events import Resume, Stop
from qmpevents.sources.accepted import AcceptedQMP
from qmpevents.sources.base import Connected, Disconnected, EventSource, SourceItem
from qmpevents.sources.peers import describe_peer, name_from_argv, peer_pid, pid_name, read_argv

__all__ = ["ListenSource", "VMSource"]

log = logging.getLogger(__name__)

_BACKLOG = 128
_STOP_OR_RESUME = (Stop, Resume)


class VMSource(EventSource):
    """The events of one VM that connects to a :class:`ListenSource`, across its reconnections.

    ``pid`` and ``greeting`` are those of its latest connection.
    """

    def __init__(self, name: str, path: str) -> None:
        self.name = name
        self.path = path
        self.pid: int | None = None
        self.greeting_version: str | None = None
        self._arrived: deque[tuple[AcceptedQMP, tuple[str, bool] | None]] = deque()
        self._wake = asyncio.Event()
        self._current: AcceptedQMP | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        """Whether a connection of this VM is up now."""
        return any(conn.alive for conn in self._connections())

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called (a new connection then makes a new source)."""
        return self._closed

    def _connections(self) -> list[AcceptedQMP]:
        current = [self._current] if self._current is not None else []
        return current + [conn for conn, _ in self._arrived]

    def _arrive(self, conn: AcceptedQMP, status: tuple[str, bool] | None) -> None:
        """A connection of this VM finished its handshake (called by the listener)."""
        self._arrived.append((conn, status))
        self._wake.set()

    async def aclose(self) -> None:
        self._closed = True
        self._wake.set()
        for conn in self._connections():
            conn.close()  # its listener ends after what it holds

    def __aiter__(self) -> AsyncIterator[SourceItem]:
        return self._items()

    async def _items(self) -> AsyncIterator[SourceItem]:
        lost_at: float | None = None
        run_state = RunStateTracker()
        try:
            while True:
                while not self._arrived and not self._closed:
                    self._wake.clear()
                    await self._wake.wait()
                if self._closed:
                    return
                conn, status = self._arrived.popleft()
                self._current = conn
                marker = run_state.connected(status)
                now = time.time()
                yield Connected(now, f"{conn.label} connected to {self.path}")
                if lost_at is not None:
                    yield Gap(lost_at, now)
                if marker is not None:
                    yield marker
                reason = "connection closed"
                try:
                    async for item in conn.listener:
                        if isinstance(item, _STOP_OR_RESUME):
                            run_state.observe((item,))
                        yield item
                except ConnectionLost as error:
                    reason = f"connection lost: {error}"
                conn.close()
                self._current = None
                if self._closed:
                    return
                lost_at = conn.lost_at or time.time()
                yield Disconnected(lost_at, reason)
        finally:
            for conn in self._connections():
                conn.close()
            self._current = None


class ListenSource:
    """Listens on the unix socket ``path`` for QEMUs; see the module docstring.

    ``await start()`` (or ``async with``) binds; ``async for vm in source`` yields
    each new :class:`VMSource`; :meth:`aclose` stops listening, closes every VM's
    connection (their iterations end after what they hold) and removes the socket.
    ``names``, ``where``, ``queue_size`` and ``policy`` are every VM listener's.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        names: tuple[str, ...] = (),
        where: Mapping[str, Any] | None = None,
        greeting_timeout: float = 5.0,
        max_pending: int = 64,
        queue_size: int = 10_000,
        policy: OverflowPolicy = "block",
    ) -> None:
        if greeting_timeout <= 0 or max_pending < 1:
            raise ValueError("need greeting_timeout > 0 and max_pending >= 1")
        self.path = os.fspath(path)
        self.names = names
        self.where = dict(where or {})
        self.greeting_timeout = greeting_timeout
        self.max_pending = max_pending
        self.queue_size = queue_size
        self.policy: OverflowPolicy = policy
        self.rejected = 0  # peers dropped: not QEMU, silent, over the limit, duplicate
        self._vms: dict[str, VMSource] = {}
        self._announce: asyncio.Queue[VMSource | None] = asyncio.Queue()
        self._pending: set[asyncio.Task[None]] = set()
        self._sock: socket.socket | None = None
        self._inode: int | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def vms(self) -> Mapping[str, VMSource]:
        """The VMs announced so far, by name."""
        return dict(self._vms)

    @property
    def pending(self) -> int:
        """Peers in their handshake now (not identified yet)."""
        return len(self._pending)

    async def start(self) -> None:
        """Listen. ``ConfigError`` for a live socket or a non-socket at ``path``; ``OSError``."""
        if self._sock is not None or self._closed:
            return
        _clear_stale_socket(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            os.fchmod(sock.fileno(), 0o600)
            sock.bind(self.path)
            os.chmod(self.path, 0o600)  # before listen(): nobody can connect until then
            self._inode = os.stat(self.path).st_ino
            sock.listen(_BACKLOG)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._accepting = asyncio.get_running_loop().create_task(
            self._accept_loop(sock), name=f"listen {self.path}"
        )

    async def __aenter__(self) -> ListenSource:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[VMSource]:
        return self._announced()

    async def _announced(self) -> AsyncIterator[VMSource]:
        while True:
            vm = await self._announce.get()
            if vm is None:
                self._announce.put_nowait(None)  # every iteration ends
                return
            yield vm

    async def aclose(self) -> None:
        """Stop listening and close every connection; remove our socket file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.wait(list(self._pending))
        if self._sock is not None:
            self._sock.close()
            if self._inode is not None:
                _remove_if_ours(self.path, self._inode)
        for vm in list(self._vms.values()):
            await vm.aclose()
        self._announce.put_nowait(None)

    async def _accept_loop(self, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(sock)
            except OSError as error:  # EMFILE and the like: wait rather than spin
                log.error("listen %s: accept failed: %s", self.path, error)
                await asyncio.sleep(0.5)
                continue
            pid = peer_pid(conn)
            if len(self._pending) >= self.max_pending:
                self._reject(pid, f"{self.max_pending} peers are already in their handshake")
                conn.close()
                continue
            task = loop.create_task(self._identify(conn, pid), name=f"listen peer {pid}")
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)

    def _reject(self, pid: int | None, why: str) -> None:
        self.rejected += 1
        log.warning("listen %s: peer %s dropped: %s", self.path, describe_peer(pid), why)

    async def _identify(self, sock: socket.socket, pid: int | None) -> None:
        """Handshake with one peer, name it, and give it to its VM; drop it if not QEMU."""
        label = f"QEMU pid {pid}" if pid is not None else "QEMU (pid unknown)"
        conn = AcceptedQMP(
            label,
            names=self.names,
            where=self.where,
            queue_size=self.queue_size,
            policy=self.policy,
        )
        argv = read_argv(pid) if pid is not None else None
        try:
            await conn.adopt(sock)
        except OSError as error:
            sock.close()
            self._reject(pid, f"cannot adopt the socket: {error}")
            return
        try:
            async with asyncio.timeout(self.greeting_timeout):
                await conn.handshake()
                name = name_from_argv(argv) if argv is not None else None
                if name is None:
                    name = await self._query_name(conn) or pid_name(pid)
                status = await self._query_status(conn)
        except TimeoutError:
            conn.close()
            what = "no QMP greeting" if conn.greeting is None else "no QMP handshake"
            self._reject(pid, f"not QEMU? {what} within {self.greeting_timeout} s")
            return
        except QMPEventsError as error:
            conn.close()
            self._reject(pid, f"not QEMU? {error}")
            return
        except BaseException:
            conn.close()
            raise
        self._route(conn, name, pid, status)

    def _route(
        self, conn: AcceptedQMP, name: str, pid: int | None, status: tuple[str, bool] | None
    ) -> None:
        vm = self._vms.get(name)
        if vm is not None and not vm.closed and vm.connected:
            conn.close()
            self._reject(pid, f"the VM {name!r} is already connected (QEMU pid {vm.pid})")
            return
        announce = vm is None or vm.closed
        if vm is None or vm.closed:
            vm = VMSource(name, self.path)
            self._vms[name] = vm
        vm.pid = pid
        vm.greeting_version = conn.greeting.version if conn.greeting is not None else None
        vm._arrive(conn, status)
        if announce:
            self._announce.put_nowait(vm)

    @staticmethod
    async def _query_name(conn: AcceptedQMP) -> str | None:
        try:
            value = await conn.execute("query-name")
        except QMPEventsError as error:
            if isinstance(error, ConnectionLost):
                raise
            return None
        name = value.get("name") if isinstance(value, dict) else None
        return name if isinstance(name, str) and name else None

    @staticmethod
    async def _query_status(conn: AcceptedQMP) -> tuple[str, bool] | None:
        try:
            return parse_status(await conn.execute("query-status"))
        except QMPEventsError as error:
            if isinstance(error, ConnectionLost):
                raise
            return None


def _clear_stale_socket(path: str) -> None:
    """Remove a socket file nobody listens on; refuse a live socket or another file."""
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
        os.unlink(path)  # left over from a listener that died
        return
    except OSError as error:
        if error.errno != errno.EAGAIN:  # EAGAIN: alive, with a full backlog
            raise ConfigError(f"{path}: cannot check the existing socket: {error}") from error
    finally:
        probe.close()
    raise ConfigError(f"{path}: something is already listening on this socket")


def _remove_if_ours(path: str, inode: int) -> None:
    with contextlib.suppress(FileNotFoundError):
        if os.stat(path).st_ino == inode:
            os.unlink(path)

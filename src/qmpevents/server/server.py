"""``QMPServer``: an asyncio QMP server that speaks exactly like QEMU 7.2.

A server owns the command registry, the declared events, the VM run state and
the one event rate limiter; it serves any number of listening sockets (QEMU's
several ``-qmp`` options), each connection a :class:`~qmpevents.server.monitor.Monitor`
with its own protocol session. Typical use::

    server = QMPServer(start_paused=True)
    server.register("device_del", device_del, DeviceDelArgs)
    path = await server.listen_unix("/run/vm/qmp.sock")
    install_signal_handlers(server)
    server.emit("VSERPORT_CHANGE", {"id": "vs0", "open": True})
    status = await server.wait_closed()   # after quit, close() or SIGTERM

Everything here runs on one event loop; :meth:`QMPServer.emit` may be called
from command handlers and from any other code on that loop.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Mapping
from importlib import metadata
from types import MappingProxyType, TracebackType
from typing import Any, Final, TypeVar

import msgspec

from qmpevents.errors import ConfigError
from qmpevents.protocol.arguments import NoArguments
from qmpevents.protocol.introspection import EventInfo
from qmpevents.protocol.server_session import GreetingInfo
from qmpevents.schema.events import EVENT_TYPES
from qmpevents.server.broadcast import EventBroadcaster, EventData
from qmpevents.server.builtins import BUILTIN_EVENTS, install_builtin_commands
from qmpevents.server.commands import (
    CommandContext,
    CommandHandler,
    CommandRegistry,
    CommandSpec,
)
from qmpevents.server.monitor import Monitor
from qmpevents.server.sockets import (
    Listener,
    open_inherited_listener,
    open_tcp_listener,
    open_unix_listener,
)
from qmpevents.server.vmstate import VMState
from qmpevents.throttle import RateLimiter

__all__ = ["DEFAULT_OUTPUT_LIMIT", "QMPServer", "default_greeting", "install_signal_handlers"]

log = logging.getLogger("qmpevents.server")

A = TypeVar("A", bound=msgspec.Struct)

DEFAULT_OUTPUT_LIMIT: Final = 4 << 20
"""Unread output (bytes) after which a client is disconnected."""

_CLOSE_FLUSH_TIMEOUT: Final = 2.0


def default_greeting() -> GreetingInfo:
    """QEMU 7.2's greeting with package ``qmpevents <version>``."""
    try:
        version = metadata.version("qmpevents")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return GreetingInfo(package=f"qmpevents {version}")


class QMPServer:
    """A QMP server: commands, events through QEMU's rate limiter, and listeners.

    ``greeting`` is what the greeting and ``query-version`` announce (default
    :func:`default_greeting`). ``rate_limiter`` is the one limiter shared by all
    monitors (default: QEMU's rules, 1 s). ``wall_clock`` stamps events (seconds
    since the epoch); ``monotonic`` drives the limiter. ``output_limit`` bounds
    each client's unread output in bytes. ``start_paused`` is QEMU's ``-S``: the
    VM starts in ``prelaunch`` instead of ``running``.
    """

    def __init__(
        self,
        greeting: GreetingInfo | None = None,
        *,
        rate_limiter: RateLimiter[bytes] | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        output_limit: int = DEFAULT_OUTPUT_LIMIT,
        start_paused: bool = False,
    ) -> None:
        if output_limit <= 0:
            raise ConfigError(f"output_limit must be positive, not {output_limit}")
        self.greeting = greeting or default_greeting()
        self.output_limit = output_limit
        self.commands = CommandRegistry()
        self._events: dict[str, EventInfo] = {}
        self._monitors: set[Monitor] = set()
        self._listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._broadcaster = EventBroadcaster(
            self._deliver,
            rate_limiter if rate_limiter is not None else RateLimiter(),
            wall_clock=wall_clock,
            monotonic=monotonic,
        )
        self.vm = VMState(self.emit, start_paused=start_paused)
        self._closing: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()
        self.exit_status = 0
        for name, features in BUILTIN_EVENTS.items():
            self.register_event(name, features=features)
        install_builtin_commands(self)

    # --- registration -----------------------------------------------------------

    def register(
        self,
        name: str,
        handler: CommandHandler[A],
        args: type[A] = NoArguments,  # type: ignore[assignment]
        *,
        returns: Any = None,
        allow_oob: bool = False,
    ) -> None:
        """Register command ``name``: ``handler(args, ctx)``, sync or async.

        ``args`` is a msgspec Struct with the arguments in QAPI schema order
        (validated with QEMU's wording before the handler runs); ``returns`` the
        type of the return value, for ``query-qmp-schema``; ``allow_oob`` lets
        clients run it with ``exec-oob``. The handler's return value is the
        reply's ``return`` (mappings in schema order, Structs, lists, scalars);
        it raises :class:`~qmpevents.server.commands.QMPCommandFailure` for a QMP
        error reply. A name can be registered once (:class:`ConfigError`).
        """
        self.commands.add(CommandSpec(name, handler, args, returns, allow_oob))

    def register_event(
        self,
        name: str,
        data_type: type[msgspec.Struct] | None = None,
        *,
        features: tuple[str, ...] = (),
    ) -> None:
        """Declare event ``name`` with its ``data`` Struct type (None: no members).

        Without ``data_type`` a modeled event (``schema.EVENT_TYPES``) takes its
        model's ``data`` type. ``features`` are QAPI features (``deprecated``).
        Declared events are what ``query-qmp-schema`` lists and what :meth:`emit`
        accepts; declaring a name again replaces its declaration.
        """
        if data_type is None and name in EVENT_TYPES:
            info = EventInfo.from_model(EVENT_TYPES[name], features)
        else:
            info = EventInfo(name, data_type, features)
        self._events[name] = info

    @property
    def events(self) -> Mapping[str, EventInfo]:
        """Declared events by name, in declaration order (read-only)."""
        return MappingProxyType(self._events)

    # --- events -----------------------------------------------------------------

    def emit(self, name: str, data: EventData = None) -> bytes:
        """Send event ``name`` to every negotiated monitor, through the rate limiter.

        ``data`` is a mapping with members in QAPI schema order, a ``data``
        Struct, or None. The timestamp is taken now from ``wall_clock``; a held
        event keeps it. Returns the encoded line. Raises :class:`ConfigError`
        for an event that was not declared with :meth:`register_event`.
        """
        if name not in self._events:
            raise ConfigError(f"event {name} is not declared (QMPServer.register_event)")
        return self._broadcaster.emit(name, data)

    @property
    def rate_limiter(self) -> RateLimiter[bytes]:
        """The global event rate limiter."""
        return self._broadcaster.limiter

    def _deliver(self, line: bytes) -> None:
        # A copy: send() may disconnect a client, and events must not depend on
        # when its connection_lost runs.
        for monitor in tuple(self._monitors):
            if monitor.negotiated:
                monitor.send(line)

    # --- listeners ----------------------------------------------------------------

    async def listen_unix(self, path: str, *, multi_client: bool = False) -> str:
        """Serve QMP on unix socket ``path`` (mode 0600); returns the path.

        A stale socket file is replaced; a live one raises :class:`ConfigError`.
        One client at a time unless ``multi_client``. The file is removed on close.
        """
        self._check_open()
        listener = await open_unix_listener(self, path, self._monitors, multi_client=multi_client)
        self._listeners.append(listener)
        log.info("listening on unix:%s", path)
        return path

    async def listen_fd(self, fd: int, *, multi_client: bool = False) -> str:
        """Serve QMP on the listening socket ``fd`` a parent process passed us.

        Returns its address (``unix:PATH`` or ``tcp:HOST:PORT``). A unix socket's
        file is removed on close, as QEMU removes it; its clients can pass
        descriptors (:mod:`qmpevents.server.fdpass`).
        """
        self._check_open()
        listener = await open_inherited_listener(
            self, fd, self._monitors, multi_client=multi_client
        )
        self._listeners.append(listener)
        log.info("listening on inherited fd %d (%s)", fd, listener.label)
        return listener.label

    async def listen_tcp(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        allow_remote: bool = False,
        multi_client: bool = False,
    ) -> tuple[str, int]:
        """Serve QMP on TCP ``host``:``port`` (0: any free port); returns the bound address.

        A non-loopback ``host`` needs ``allow_remote=True`` (:class:`ConfigError`).
        """
        self._check_open()
        listener, address = await open_tcp_listener(
            self,
            host,
            port,
            self._monitors,
            allow_remote=allow_remote,
            multi_client=multi_client,
        )
        self._listeners.append(listener)
        log.info("listening on tcp:%s:%d", *address)
        return address

    def listener_peers(self, address: str) -> list[str]:
        """The clients the listener on ``address`` (``unix:PATH``, ``tcp:HOST:PORT``) serves now."""
        for listener in self._listeners:
            if listener.label == address:
                return listener.active_peers
        return []

    @property
    def connections(self) -> int:
        """How many clients are being served (not counting those waiting for their turn)."""
        return len(self._monitors)

    @property
    def negotiated_clients(self) -> int:
        """How many clients finished ``qmp_capabilities`` (and so receive events)."""
        return sum(1 for monitor in self._monitors if monitor.negotiated)

    def pending_output(self) -> int:
        """Bytes written to clients that the kernel has not taken yet, over all clients.

        An emitter that must not outrun its readers (a benchmark, a replay) can
        wait for this to fall instead of risking their disconnection.
        """
        return sum(monitor.write_buffer_size() for monitor in self._monitors)

    # --- lifetime -------------------------------------------------------------------

    def context(self, peer: str, oob: bool) -> CommandContext:
        """The context a handler gets for a request from ``peer`` (see :class:`Monitor`)."""
        return CommandContext(self, peer, oob)

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` as a task the server keeps alive and whose failure it logs."""
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("task %s failed", task.get_name(), exc_info=task.exception())

    def request_close(self, exit_status: int = 0) -> None:
        """Start :meth:`close` without waiting (for handlers and signal handlers)."""
        if self._closing is None:
            self.exit_status = exit_status
            self._closing = asyncio.get_running_loop().create_task(self._close())

    async def close(self, exit_status: int = 0) -> None:
        """Stop accepting, flush queued output (bounded), close every connection.

        Removes the unix socket files. Idempotent: later calls wait for the first.
        """
        self.request_close(exit_status)
        await self.wait_closed()

    async def wait_closed(self) -> int:
        """Wait until the server has closed; returns its exit status (0 after ``quit``)."""
        await self._closed.wait()
        return self.exit_status

    async def __aenter__(self) -> QMPServer:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def _check_open(self) -> None:
        if self._closing is not None:
            raise ConfigError("the server is closed")

    async def _close(self) -> None:
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()
        self._broadcaster.close()
        monitors = list(self._monitors)
        # transport.close() writes out what is buffered before closing.
        for monitor in monitors:
            monitor.close()
        waits = [asyncio.ensure_future(monitor.wait_closed()) for monitor in monitors]
        if waits:
            _, late = await asyncio.wait(waits, timeout=_CLOSE_FLUSH_TIMEOUT)
            for wait in late:
                wait.cancel()
            for monitor in monitors:
                if monitor.write_buffer_size():
                    log.warning("%s: output not flushed in time, dropped", monitor.peer)
                monitor.abort()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            # Let them finish their cleanup, but never wait on one forever.
            _, stuck = await asyncio.wait(tasks, timeout=_CLOSE_FLUSH_TIMEOUT)
            for task in stuck:
                log.warning(
                    "server task %s did not end within %s s", task.get_name(), _CLOSE_FLUSH_TIMEOUT
                )
        log.info("server closed (exit status %d)", self.exit_status)
        self._closed.set()


def install_signal_handlers(server: QMPServer) -> None:
    """Make SIGINT, SIGTERM and SIGHUP shut ``server`` down as QEMU does (exit status 0).

    Like QEMU 7.2, every negotiated client first gets ``SHUTDOWN {"guest": false,
    "reason": "host-signal"}``; then the server closes gracefully. Call it from
    the running event loop of the server, in the main thread. (The simulator's
    programs do more, in :mod:`qmpevents.sim.signals`: they also print QEMU's
    "terminating on signal" line, naming the sender.)
    """
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(signum, _on_signal, server, signum)


def _on_signal(server: QMPServer, signum: int) -> None:
    log.info("%s received, shutting down", signal.Signals(signum).name)
    if server._closing is None:  # a second signal while closing sends nothing more
        server.emit("SHUTDOWN", {"guest": False, "reason": "host-signal"})
    server.request_close(0)

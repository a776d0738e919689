"""An asyncio QMP client: connect, execute commands, listen for typed events.

::

    async with connect("/run/vm1/qmp.sock") as qmp:
        print(qmp.greeting.version)
        async with qmp.events("QUORUM_*", where={"node-name": "qM-c2"}) as events:
            await qmp.execute("human-monitor-command", {"command-line": "..."})
            async for event in events:
                ...

The protocol work is done by the sans-IO :class:`~qmpevents.protocol.client_session.
ClientSession`; this module adds the socket (an ``asyncio.Protocol``, so bytes go
from ``data_received`` through the framer and the decoder to the listeners with no
task switch per message), timeouts, listeners and reconnection.

Promises:

* Nothing waits forever: the handshake is bounded by ``greeting_timeout``,
  :meth:`QMPClient.execute` and :meth:`QMPClient.wait_for` take timeouts, and
  every listener ends (:class:`~qmpevents.errors.ConnectionLost`) when the
  connection is lost for good.
* Bad server output never ends the connection: each protocol violation is counted
  in :attr:`QMPClient.protocol_errors`, logged once, and the next good message is
  still delivered.
* Memory is bounded: listener queues are bounded and nothing keeps history.
"""

from __future__ import annotations

import asyncio
import os
import stat
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

from qmpevents.addresses import Address, parse_address
from qmpevents.errors import (
    CommandError,
    ConnectionLost,
    QMPConnectionError,
    QMPTimeoutError,
)
from qmpevents.protocol.client_session import (
    ClientSession,
    ErrorResponse,
    Greeting,
    Response,
)
from qmpevents.protocol.lines import DEFAULT_MAX_LINE
from qmpevents.schema.events import Event
from qmpevents.schema.live import LiveSchema

from .hub import ListenerHub
from .listeners import (
    Dropped,
    EventListener,
    EventWaiter,
    Gap,
    ListenerItem,
    OverflowPolicy,
)
from .reports import ConnectionEvents
from .runstate import RunStateTracker, parse_status
from .transport import ClientProtocol, open_transport

# The listener types are re-exported: users of the client name them.
__all__ = [
    "Dropped",
    "EventListener",
    "EventWaiter",
    "Gap",
    "ListenerItem",
    "QMPClient",
    "connect",
]


class QMPClient(ConnectionEvents):
    """A QMP connection with listeners; see the module docstring.

    ``target`` is a unix socket path or ``"HOST:PORT"``. Listeners may be created
    before :meth:`connect`, and then see every event from the first byte on,
    including events sent before the reply to ``qmp_capabilities``.

    Options: ``greeting_timeout`` bounds each handshake (connect, greeting,
    negotiation, schema fetch); ``negotiate=False`` stops after the greeting;
    ``max_line`` bounds one server message; ``validate=True`` fetches
    ``query-qmp-schema`` and checks every event against it (invalid events are
    still delivered, and counted in :attr:`invalid_events`); ``reconnect=True``
    reconnects after a drop, waiting ``backoff`` seconds at first, doubling up to
    ``max_backoff``, and giving up (listeners then end) after ``reconnect_timeout``
    seconds without a connection.
    """

    def __init__(
        self,
        target: str | os.PathLike[str] | Address,
        *,
        greeting_timeout: float = 5.0,
        negotiate: bool = True,
        max_line: int = DEFAULT_MAX_LINE,
        validate: bool = False,
        reconnect: bool = False,
        backoff: float = 0.1,
        max_backoff: float = 5.0,
        reconnect_timeout: float = 60.0,
    ) -> None:
        self.target = parse_address(target)
        self.greeting_timeout = greeting_timeout
        self.negotiate = negotiate
        self.max_line = max_line
        self.validate = validate
        self.reconnect = reconnect
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.reconnect_timeout = reconnect_timeout
        self.greeting: Greeting | None = None
        self.schema: LiveSchema | None = None
        self.protocol_errors = 0
        self.invalid_events = 0
        self._hub = ListenerHub(self._update_reading)
        self._holding: list[Event] | None = None
        self._failure: BaseException | None = None  # why the reconnect gave up
        self._run_state = RunStateTracker()  # used when reconnecting
        self._reading_paused = False
        self._protocol: ClientProtocol | None = None
        self._replies: dict[Any, asyncio.Future[Response | ErrorResponse]] = {}
        self._greeting_waiter: asyncio.Future[Greeting] | None = None
        self._ready: asyncio.Event | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._dropped_at: float | None = None
        self._closed = False

    # -- life cycle ----------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether a negotiated connection is up."""
        return self._ready is not None and self._ready.is_set()

    async def connect(self) -> None:
        """Connect, await the greeting and negotiate (oob when offered).

        Raises :class:`~qmpevents.errors.QMPConnectionError` naming the target when
        the socket is missing or refuses, :class:`~qmpevents.errors.GreetingError`
        for a garbage greeting and :class:`~qmpevents.errors.QMPTimeoutError` when
        the handshake takes longer than ``greeting_timeout``.
        """
        if self._closed:
            raise QMPConnectionError(f"{self.target}: the client is closed")
        self._ready = asyncio.Event()
        await self._open()

    async def close(self) -> None:
        """Disconnect; listeners stop after what they queued. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._ready is not None:
            self._ready.clear()
        if self._reconnecting is not None:
            self._reconnecting.cancel()
        protocol = self._protocol
        self._protocol = None
        if protocol is not None and protocol.transport is not None:
            protocol.transport.close()
        self._fail_pending(ConnectionLost(f"{self.target}: the client was closed"))
        self._hub.end_all(None, closing=True)

    async def __aenter__(self) -> QMPClient:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _open(self) -> None:
        """One connection attempt and handshake; on failure nothing stays open."""
        loop = asyncio.get_running_loop()
        session = ClientSession(max_line=self.max_line)
        protocol = ClientProtocol(self, session)
        self._greeting_waiter = loop.create_future()
        self._protocol = protocol
        self._reading_paused = False  # a new transport reads until told otherwise
        # On a reconnect, events that arrive during the handshake wait until the
        # Gap is marked: it is delivered only once the handshake has succeeded.
        self._holding = [] if self._dropped_at is not None else None
        run_state: tuple[str, bool] | None = None
        try:
            async with asyncio.timeout(self.greeting_timeout):
                await open_transport(self.target, loop, lambda: protocol)
                self.greeting = await self._greeting_waiter
                if self.negotiate:
                    data = session.negotiate()
                    reply = await self._request(session.negotiation_id, data)
                    if isinstance(reply, ErrorResponse):
                        raise QMPConnectionError(
                            f"{self.target}: qmp_capabilities failed: "
                            f"{reply.error_class}: {reply.desc}"
                        )
                    if self.validate:
                        self.schema = LiveSchema.from_query(
                            self._value(await self._request(*session.command("query-qmp-schema")))
                        )
                    if self.reconnect:
                        run_state = await self._query_run_state(session)
        except TimeoutError:
            self._abandon(protocol)
            if protocol.transport is not None and protocol.session.greeting is None:
                # Accepted, yet silent: QEMU greets one client per socket at a time.
                raise QMPTimeoutError(
                    f"{self.target}: no greeting within {self.greeting_timeout} s: another"
                    " client may hold this socket (QEMU serves one at a time)"
                ) from None
            raise QMPTimeoutError(
                f"{self.target}: no QMP handshake within {self.greeting_timeout} s"
            ) from None
        except OSError as error:
            self._abandon(protocol)
            reason = _not_a_socket(self.target) or error.strerror or str(error)
            raise QMPConnectionError(
                f"{self.target}: cannot connect: {reason or type(error).__name__}"
            ) from error
        except BaseException:
            self._abandon(protocol)
            raise
        finally:
            self._greeting_waiter = None
        held, self._holding = self._holding, None
        if self._dropped_at is not None:
            self._hub.mark(Gap(self._dropped_at, time.time()))
        marker = self._run_state.connected(run_state)
        if marker is not None:
            self._hub.mark(marker)
        if held:
            self._events(held)
        self._dropped_at = None
        assert self._ready is not None
        self._ready.set()
        self._update_reading()  # listeners still full from before hold the new socket too

    async def _query_run_state(self, session: ClientSession) -> tuple[str, bool] | None:
        """``query-status`` as (status, running); None from a server without it."""
        reply = await self._request(*session.command("query-status"))
        return None if isinstance(reply, ErrorResponse) else parse_status(reply.value)

    def _abandon(self, protocol: ClientProtocol) -> None:
        if self._protocol is protocol:
            self._protocol = None
        if protocol.transport is not None:
            protocol.transport.close()
        self._fail_pending(ConnectionLost(f"{self.target}: the handshake failed"))

    # -- commands ------------------------------------------------------------------

    async def execute(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run ``command``; returns its ``return`` value as plain Python data.

        Raises :class:`~qmpevents.errors.CommandError` with QEMU's class and desc,
        :class:`~qmpevents.errors.QMPTimeoutError` after ``timeout`` seconds
        (``None``: no limit; a late reply is then ignored) and
        :class:`~qmpevents.errors.ConnectionLost` when the connection goes first.
        While a reconnect is under way, the command waits for it (within ``timeout``).
        """
        try:
            async with asyncio.timeout(timeout):
                protocol = await self._usable()
                reply = await self._request(
                    *protocol.session.command(command, dict(arguments) if arguments else None)
                )
        except TimeoutError:
            raise QMPTimeoutError(f"{command}: no reply within {timeout} s") from None
        return self._value(reply)

    async def _usable(self) -> ClientProtocol:
        while True:
            if self._closed or self._ready is None:
                failure = self._failure
                if failure is not None:
                    raise ConnectionLost(f"{self.target}: gave up reconnecting: {failure}") from (
                        failure
                    )
                raise ConnectionLost(f"{self.target}: not connected")
            protocol = self._protocol
            if self._ready.is_set() and protocol is not None:
                return protocol
            if self._reconnecting is None:
                raise ConnectionLost(f"{self.target}: not connected")
            await self._ready.wait()

    async def _request(self, request_id: Any, data: bytes) -> Response | ErrorResponse:
        protocol = self._protocol
        if protocol is None or protocol.transport is None:
            raise ConnectionLost(f"{self.target}: not connected")
        future: asyncio.Future[Response | ErrorResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self._replies[request_id] = future
        # A reply must get through even while full listeners hold reading back.
        self._update_reading()
        try:
            protocol.transport.write(data)
            return await future
        finally:
            self._replies.pop(request_id, None)
            self._update_reading()

    @staticmethod
    def _value(reply: Response | ErrorResponse) -> Any:
        if isinstance(reply, ErrorResponse):
            raise CommandError(reply.command, reply.error_class, reply.desc)
        return reply.value

    # -- events --------------------------------------------------------------------

    def events(
        self,
        *names: str,
        where: Mapping[str, Any] | None = None,
        maxsize: int = 1000,
        policy: OverflowPolicy = "block",
        hard_limit: int | None = None,
    ) -> EventListener:
        """A new listener for the events called ``names`` (exact or glob; none: all).

        ``where`` keeps only events whose ``data`` members equal the given values
        (``{"result.status": "failed"}``). See :class:`~qmpevents.client.listeners.EventListener`
        for the queue bound, the overflow ``policy`` and the markers it yields.
        """
        return self._hub.listener(
            names, where, maxsize=maxsize, policy=policy, hard_limit=hard_limit
        )

    def wait_for(
        self,
        name: str | Iterable[str],
        where: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = 30.0,
    ) -> EventWaiter:
        """The first event called ``name`` (or one of several names, globs allowed).

        Listening starts at the call, so ``waiter = qmp.wait_for(...)``, then a
        command, then ``await waiter`` cannot miss an event the command raises.
        Awaiting raises :class:`~qmpevents.errors.QMPTimeoutError` after ``timeout``
        seconds in total.
        """
        return self._hub.waiter((name,) if isinstance(name, str) else name, where, timeout)

    def _update_reading(self) -> None:
        """Read while no listener is full, or while a reply is awaited (backpressure)."""
        protocol = self._protocol
        transport = protocol.transport if protocol is not None else None
        if transport is None or transport.is_closing():
            return
        pause = self._hub.holding_back and not self._replies
        if pause != self._reading_paused:
            self._reading_paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()


def _not_a_socket(address: Address) -> str | None:
    """What a unix socket path really is, when it is not a socket."""
    if address.path is None:
        return None
    try:
        mode = os.stat(address.path).st_mode
    except OSError:
        return None
    if stat.S_ISSOCK(mode):
        return None
    return "not a socket but a directory" if stat.S_ISDIR(mode) else "not a socket but a file"


def connect(
    target: str | os.PathLike[str] | Address,
    *,
    greeting_timeout: float = 5.0,
    negotiate: bool = True,
    max_line: int = DEFAULT_MAX_LINE,
    validate: bool = False,
    reconnect: bool = False,
    backoff: float = 0.1,
    max_backoff: float = 5.0,
    reconnect_timeout: float = 60.0,
) -> QMPClient:
    """A client for ``target``, connected by ``async with`` (closed on exit).

    ``async with connect(path) as qmp:`` connects, awaits the greeting and
    negotiates; the options are those of :class:`QMPClient`.
    """
    return QMPClient(
        target,
        greeting_timeout=greeting_timeout,
        negotiate=negotiate,
        max_line=max_line,
        validate=validate,
        reconnect=reconnect,
        backoff=backoff,
        max_backoff=max_backoff,
        reconnect_timeout=reconnect_timeout,
    )

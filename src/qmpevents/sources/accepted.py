"""One QMP connection that a QEMU opened to us: we accepted the socket, QEMU still greets.

With ``-chardev socket,...,reconnect=N -mon chardev=...,mode=control`` QEMU is the
client at the socket level and the QMP server on it: it sends the greeting as
soon as it is connected, and we negotiate. :class:`~qmpevents.client.QMPClient`
only opens its own connections, so :class:`AcceptedQMP` is the small owner of the
client's own transport (:class:`~qmpevents.client.transport.ClientProtocol`,
the sans-IO :class:`~qmpevents.protocol.client_session.ClientSession`) and
listener hub for an accepted socket: the same framing, decoding, typed events,
bounded listener and backpressure (reading pauses while the listener is full,
unless a reply is awaited) as every client connection.

The listener exists from the first byte, so events sent during the handshake are
not missed. Nothing here waits without a bound of the caller's.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Mapping
from typing import Any

from qmpevents.client import EventListener, OverflowPolicy
from qmpevents.client.hub import ListenerHub
from qmpevents.client.transport import ClientProtocol
from qmpevents.errors import CommandError, ConnectionLost, GreetingError, QMPEventsError
from qmpevents.protocol.client_session import (
    ClientSession,
    ErrorResponse,
    Greeting,
    ProtocolViolation,
    Response,
    ServerMessage,
    require_greeting,
)
from qmpevents.protocol.lines import DEFAULT_MAX_LINE
from qmpevents.schema.events import Event

__all__ = ["AcceptedQMP"]

log = logging.getLogger(__name__)

_CONTEXT = 200  # how much of a bad message a log line shows


class AcceptedQMP:
    """The QMP client end of an accepted socket; ``label`` names the peer in messages.

    ``names``, ``where``, ``queue_size`` and ``policy`` make its one listener, as
    :meth:`QMPClient.events` does. Use :meth:`adopt`, then :meth:`handshake` and
    :meth:`execute` under a timeout of the caller's, then read :attr:`listener`.
    """

    def __init__(
        self,
        label: str,
        *,
        names: tuple[str, ...] = (),
        where: Mapping[str, Any] | None = None,
        queue_size: int = 10_000,
        policy: OverflowPolicy = "block",
        max_line: int = DEFAULT_MAX_LINE,
    ) -> None:
        self.label = label
        self.session = ClientSession(max_line=max_line)
        self.protocol = ClientProtocol(self, self.session)
        self.greeting: Greeting | None = None
        self.protocol_errors = 0
        self.lost_at: float | None = None
        self.lost_reason: str | None = None
        self._hub = ListenerHub(self._update_reading)
        self.listener: EventListener = self._hub.listener(
            names, where, maxsize=queue_size, policy=policy, hard_limit=None
        )
        self._greeting_waiter: asyncio.Future[Greeting] = asyncio.get_running_loop().create_future()
        self._replies: dict[Any, asyncio.Future[Response | ErrorResponse]] = {}
        self._paused = False
        self._closed = False

    @property
    def alive(self) -> bool:
        """Whether the connection is still up (not lost, not closed)."""
        transport = self.protocol.transport
        return self.lost_at is None and not self._closed and transport is not None

    async def adopt(self, sock: socket.socket) -> None:
        """Put the accepted ``sock`` on the event loop; reading starts at once."""
        loop = asyncio.get_running_loop()
        await loop.connect_accepted_socket(lambda: self.protocol, sock)

    async def handshake(self) -> Greeting:
        """Await QEMU's greeting and negotiate (oob when offered).

        Raises :class:`~qmpevents.errors.GreetingError` for a peer that sends
        something else, :class:`~qmpevents.errors.ConnectionLost` when it leaves.
        """
        self.greeting = await self._greeting_waiter
        data = self.session.negotiate()
        reply = await self._request(self.session.negotiation_id, data)
        if isinstance(reply, ErrorResponse):
            raise GreetingError(
                f"{self.label}: qmp_capabilities failed: {reply.error_class}: {reply.desc}"
            )
        return self.greeting

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run ``command``; its ``return`` value, or :class:`CommandError`."""
        reply = await self._request(*self.session.command(command, arguments))
        if isinstance(reply, ErrorResponse):
            raise CommandError(reply.command, reply.error_class, reply.desc)
        return reply.value

    def close(self) -> None:
        """Disconnect; the listener ends normally after what it queued. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if not self._greeting_waiter.done():
            self._greeting_waiter.cancel()
        self._fail_pending(ConnectionLost(f"{self.label}: closed"))
        self._hub.end_all(None, closing=True)
        transport = self.protocol.transport
        if transport is not None:
            transport.close()

    async def _request(self, request_id: Any, data: bytes) -> Response | ErrorResponse:
        transport = self.protocol.transport
        if transport is None or not self.alive:
            raise ConnectionLost(f"{self.label}: {self.lost_reason or 'not connected'}")
        future: asyncio.Future[Response | ErrorResponse] = (
            asyncio.get_running_loop().create_future()
        )
        self._replies[request_id] = future
        self._update_reading()  # a reply gets through even while the listener is full
        try:
            transport.write(data)
            return await future
        finally:
            self._replies.pop(request_id, None)
            self._update_reading()

    def _update_reading(self) -> None:
        transport = self.protocol.transport
        if transport is None or transport.is_closing():
            return
        pause = self._hub.holding_back and not self._replies
        if pause != self._paused:
            self._paused = pause
            if pause:
                transport.pause_reading()
            else:
                transport.resume_reading()

    def _fail_greeting(self, error: BaseException) -> None:
        if not self._greeting_waiter.done():
            self._greeting_waiter.set_exception(error)

    def _fail_pending(self, error: BaseException) -> None:
        replies, self._replies = self._replies, {}
        for future in replies.values():
            if not future.done():
                future.set_exception(error)

    # -- the ProtocolOwner interface of ClientProtocol -----------------------------

    def _reply(self, reply: Response | ErrorResponse) -> None:
        future = self._replies.get(reply.id)
        if future is not None and not future.done():
            future.set_result(reply)

    def _violation(self, protocol: ClientProtocol, violation: ProtocolViolation) -> None:
        self.protocol_errors += 1
        error = violation.error
        if self.session.greeting is None:
            self._greeted(protocol, violation)  # a garbage greeting: not QEMU
            return
        log.warning(
            "%s: protocol error #%d: %s; received: %r",
            self.label,
            self.protocol_errors,
            error,
            (error.raw or b"")[:_CONTEXT],
        )

    def _greeted(self, protocol: ClientProtocol | None, message: ServerMessage) -> None:
        if self._greeting_waiter.done():
            return
        try:
            greeting = require_greeting(message)
        except GreetingError as error:
            raw = (error.raw or b"")[:_CONTEXT]
            self._fail_greeting(GreetingError(f"{error}: {raw!r}", error.raw))
            return
        self._greeting_waiter.set_result(greeting)

    def _events(self, events: list[Event]) -> None:
        if self.session.greeting is None:
            first = events[0]
            self._fail_greeting(
                GreetingError(f"expected a QMP greeting, got event {first.name}", first.raw)
            )
            return
        self._hub.deliver(events)

    def _lost(
        self, protocol: ClientProtocol, exc: Exception | None, tail: QMPEventsError | None
    ) -> None:
        if self.lost_at is not None:
            return
        self.lost_at = time.time()
        detail = "the peer closed the connection"
        if tail is not None:
            self.protocol_errors += 1
            detail = str(tail)
        elif exc is not None:
            detail = f"{detail}: {exc}"
        self.lost_reason = detail
        error = ConnectionLost(f"{self.label}: {detail}")
        error.__cause__ = tail or exc
        raw = getattr(tail, "raw", None)
        self._fail_greeting(GreetingError(f"no greeting: {detail}", raw))
        self._fail_pending(error)
        if not self._closed:
            self._hub.end_all(error, closing=True)

"""One client connection of a QMP server (one QEMU "monitor"), as an asyncio Protocol.

Bytes go through the connection's :class:`ServerSession`; the work items it
returns are handled strictly in order, as QEMU's monitor does: replies the
session built are written, requests are dispatched one at a time (a slow
command delays the replies behind it, never those of other clients). An
``exec-oob`` request runs at once, beside the queue.

Like QEMU (``QMP_REQ_QUEUE_LEN_MAX``), reading pauses while 8 requests wait
(1 without oob), so a client cannot queue unbounded work. Output is never
awaited: every write checks the transport's buffer, and a client whose unread
output passes ``output_limit`` is disconnected (see :meth:`Monitor.send`), so it
can neither stall the server nor grow its memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Coroutine
from typing import Any, Final, Protocol

from qmpevents.protocol.requests import Request
from qmpevents.protocol.server_session import GreetingInfo, Reply, ServerSession, WorkItem
from qmpevents.server.commands import CommandContext, CommandRegistry, QMPCommandFailure
from qmpevents.server.fdpass import MonitorFds, claim_connection

__all__ = ["Monitor", "MonitorOwner", "MonitorServer"]

log = logging.getLogger("qmpevents.server")

# QMP_REQ_QUEUE_LEN_MAX in monitor/qmp.c; without oob QEMU queues one request.
_QUEUE_MAX: Final = 8


class MonitorOwner(Protocol):
    """What a monitor reports its life to: the listener that accepted it."""

    def attach(self, monitor: Monitor) -> None:
        """A connection was accepted; start it now or when its turn comes."""

    def detach(self, monitor: Monitor) -> None:
        """The connection is gone."""

    @property
    def named_fds(self) -> dict[str, int]:
        """The descriptors ``getfd`` named on this monitor (shared by its connections)."""


class MonitorServer(Protocol):
    """What a monitor needs of its server, and no more."""

    @property
    def greeting(self) -> GreetingInfo:
        """What the monitor greets with."""

    @property
    def output_limit(self) -> int:
        """Unread output past which a client is disconnected."""

    @property
    def commands(self) -> CommandRegistry:
        """The commands requests are dispatched to."""

    def spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Run ``coro`` as a task the server awaits when it closes."""

    def context(self, peer: str, oob: bool) -> CommandContext:
        """The context a command handler gets for a request from ``peer``."""


class Monitor(asyncio.Protocol):
    """The server side of one QMP connection."""

    def __init__(self, server: MonitorServer, owner: MonitorOwner, label: str) -> None:
        self._server = server
        self._owner = owner
        self.session = ServerSession(server.greeting)
        #: The client for logs: its TCP address, or ``label`` when it has none (unix).
        self.peer = label
        self._transport: asyncio.Transport | None = None
        self._active = False
        self._closed = False
        self._queue: deque[WorkItem] = deque()
        self._queued_requests = 0
        self._worker: asyncio.Task[None] | None = None
        self._reading = True
        self._closed_event = asyncio.Event()
        #: Descriptors the client passed (SCM_RIGHTS on a unix socket) and named.
        self.fds = MonitorFds(owner.named_fds)

    @property
    def negotiated(self) -> bool:
        """True once the client finished ``qmp_capabilities`` (it then receives events)."""
        return self.session.negotiated and not self._closed

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed."""
        return self._closed

    # --- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self.peer = _peer_name(transport, self.peer)
        sock = transport.get_extra_info("socket")
        connection = claim_connection(sock.fileno()) if sock is not None else None
        if connection is not None:
            connection.sink = self.fds.receive
        # Not our turn yet (one client per socket): no greeting, no reading.
        self._set_reading(False)
        self._owner.attach(self)

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        # With oob, QEMU's I/O thread runs an exec-oob at once while everything
        # else (parse errors included) waits for the dispatcher: so here too,
        # replies then go through the queue, which lets out-of-band work go first.
        direct = not self.session.oob_enabled
        for item in self.session.receive_data(data):
            if isinstance(item, Request) and item.oob:
                # Out of band: runs beside the queue and answers as soon as it is done.
                self._server.spawn(self._run(item), self.peer)
            elif direct and not self._queue and self._worker is None and isinstance(item, Reply):
                self.send(item.data)
            else:
                self._enqueue(item)

    def eof_received(self) -> bool:
        # QEMU drops what the client left unfinished and closes its side too.
        self.session.receive_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._queue.clear()
        self._queued_requests = 0
        self._closed_event.set()
        self.fds.close()
        self._owner.detach(self)

    # --- called by the owner and the server ----------------------------------

    def start(self) -> None:
        """It is this connection's turn: send the greeting and start reading."""
        if self._closed:
            return
        self._active = True
        self.send(self.session.greeting_bytes())
        self._update_reading()

    def send(self, data: bytes) -> None:
        """Write ``data``; disconnect the client if its unread output passes the limit.

        A client therefore holds at most ``output_limit`` plus one message of
        server memory, whether it stopped reading or provoked one huge reply.
        """
        transport = self._transport
        if self._closed or transport is None:
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self._server.output_limit:
            log.warning(
                "disconnecting %s: %d bytes of output unread (limit %d)",
                self.peer,
                transport.get_write_buffer_size(),
                self._server.output_limit,
            )
            self.abort()

    def close(self) -> None:
        """Close after the buffered output is written (the transport flushes it)."""
        if self._transport is not None and not self._closed:
            self._closed = True
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection now, buffered output included."""
        if self._transport is not None:
            self._closed = True
            self._transport.abort()

    def write_buffer_size(self) -> int:
        """Bytes written but not yet taken by the kernel (0 once the connection is gone)."""
        if self._transport is None or self._closed_event.is_set():
            return 0
        return self._transport.get_write_buffer_size()

    async def wait_closed(self) -> None:
        """Return once the connection is fully closed."""
        await self._closed_event.wait()

    # --- internals ------------------------------------------------------------

    def _enqueue(self, item: WorkItem) -> None:
        self._queue.append(item)
        if isinstance(item, Request):
            self._queued_requests += 1
            self._update_reading()
        if self._worker is None:
            self._worker = self._server.spawn(self._drain(), self.peer)

    async def _drain(self) -> None:
        try:
            if self.session.oob_enabled:
                # One turn of the loop: exec-oob requests read with this work
                # were spawned after this task, and must answer before it.
                await asyncio.sleep(0)
            # A closing connection (quit, server close) runs nothing more.
            while self._queue and not self._closed:
                item = self._queue.popleft()
                if isinstance(item, Reply):
                    self.send(item.data)
                    continue
                self._queued_requests -= 1
                self._update_reading()
                await self._run(item)
        finally:
            self._worker = None

    async def _run(self, request: Request) -> None:
        ctx = self._server.context(self.peer, request.oob)
        ctx.fds = self.fds
        try:
            value = await self._server.commands.dispatch(request, ctx)
        except QMPCommandFailure as failure:
            reply = self.session.reply_error(request, failure.error_class, failure.desc)
        else:
            try:
                reply = self.session.reply(request, value)
            except TypeError:
                log.exception("command %s returned a value QMP cannot encode", request.command)
                reply = self.session.reply_error(
                    request, "GenericError", f"Command {request.command} returned a bad value"
                )
        # A client that left mid-command costs nothing: send() drops the reply.
        self.send(reply)
        ctx.run_after_reply()

    def _update_reading(self) -> None:
        limit = _QUEUE_MAX if self.session.oob_enabled else 1
        self._set_reading(self._active and self._queued_requests < limit)

    def _set_reading(self, reading: bool) -> None:
        if reading == self._reading or self._transport is None or self._closed:
            return
        self._reading = reading
        if reading:
            self._transport.resume_reading()
        else:
            self._transport.pause_reading()


def _peer_name(transport: asyncio.Transport, label: str) -> str:
    peer = transport.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"{peer[0]}:{peer[1]}"
    # A unix client socket usually has no name of its own.
    return label

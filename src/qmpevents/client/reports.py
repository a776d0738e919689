"""What a client connection reports, and how the client answers: the receive side.

:class:`ConnectionEvents` is the part of :class:`~qmpevents.client.QMPClient`
that its transport calls (the :class:`~.transport.ProtocolOwner` interface):
events to the listener hub, replies to their waiting commands, protocol
violations counted and logged, the greeting to the handshake, and a lost
connection, which either ends every waiter or starts the reconnect with the one
backoff schedule. It holds no state of its own: the attributes below are the
client's, declared here for the type checker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Final

from qmpevents.addresses import Address
from qmpevents.errors import (
    ConnectionLost,
    GreetingError,
    QMPConnectionError,
    QMPEventsError,
    QMPTimeoutError,
)
from qmpevents.protocol.client_session import (
    ErrorResponse,
    Greeting,
    ProtocolViolation,
    Response,
    ServerMessage,
    require_greeting,
)
from qmpevents.schema.events import Event
from qmpevents.schema.live import LiveSchema

from .backoff import Backoff
from .hub import ListenerHub
from .listeners import plain_data
from .runstate import RunStateTracker
from .transport import ClientProtocol

__all__ = ["ConnectionEvents"]

_log = logging.getLogger("qmpevents.client.connection")

# Events held back during one reconnect handshake, at most (see _events).
_HOLD_LIMIT: Final = 100_000
# How much of a bad message a log line or error shows.
_CONTEXT: Final = 200


class ConnectionEvents:
    """The receive side of :class:`~qmpevents.client.QMPClient`; see the module docstring."""

    target: Address
    reconnect: bool
    backoff: float
    max_backoff: float
    reconnect_timeout: float
    schema: LiveSchema | None
    protocol_errors: int
    invalid_events: int
    _hub: ListenerHub
    _holding: list[Event] | None
    _failure: BaseException | None
    _run_state: RunStateTracker
    _protocol: ClientProtocol | None
    _replies: dict[Any, asyncio.Future[Response | ErrorResponse]]
    _greeting_waiter: asyncio.Future[Greeting] | None
    _ready: asyncio.Event | None
    _reconnecting: asyncio.Task[None] | None
    _dropped_at: float | None
    _closed: bool

    async def _open(self) -> None:
        raise NotImplementedError  # the client's handshake

    def _events(self, events: list[Event]) -> None:
        waiter = self._greeting_waiter
        if waiter is not None and not waiter.done():
            protocol = self._protocol
            if protocol is not None and protocol.session.greeting is None:
                # Not QEMU, or not QMP: say so now rather than at the timeout.
                first = events[0]
                waiter.set_exception(
                    GreetingError(
                        f"{self.target}: expected a QMP greeting, got event {first.name}",
                        first.raw,
                    )
                )
                return
        holding = self._holding
        if holding is not None:
            if len(holding) < _HOLD_LIMIT:
                holding.extend(events)
                return
            # A handshake flooded with events: deliver them, the Gap comes late.
            self._holding = None
            self._events(holding)
        if self.reconnect:
            self._run_state.observe(events)
        if self.schema is not None:
            for event in events:
                self._validate(event)
        self._hub.deliver(events)

    def _validate(self, event: Event) -> None:
        assert self.schema is not None
        problems = self.schema.validate_event(event.name, plain_data(event))
        if problems:
            self.invalid_events += 1
            _log.warning(
                "%s: %s does not match the live schema: %s", self.target, event.name, problems
            )

    def _reply(self, reply: Response | ErrorResponse) -> None:
        future = self._replies.get(reply.id)
        # No future: a reply to a command that timed out; nobody waits for it.
        if future is not None and not future.done():
            future.set_result(reply)

    def _violation(self, protocol: ClientProtocol, violation: ProtocolViolation) -> None:
        self.protocol_errors += 1
        if protocol.session.greeting is None:
            self._greeted(protocol, violation)  # fails the handshake: a garbage greeting
            return
        error = violation.error
        _log.warning(
            "%s: protocol error #%d: %s; received: %r",
            self.target,
            self.protocol_errors,
            error,
            (error.raw or b"")[:_CONTEXT],
        )

    def _greeted(self, protocol: ClientProtocol | None, message: ServerMessage) -> None:
        waiter = self._greeting_waiter
        if waiter is None or waiter.done() or protocol is not self._protocol:
            return
        try:
            greeting = require_greeting(message)
        except GreetingError as error:
            waiter.set_exception(GreetingError(f"{self.target}: {error}", error.raw))
            return
        waiter.set_result(greeting)

    def _lost(
        self, protocol: ClientProtocol, exc: Exception | None, tail: QMPEventsError | None
    ) -> None:
        if protocol is not self._protocol:
            return  # a connection we already gave up on
        self._protocol = None
        detail = "the server closed the connection"
        if tail is not None:
            self.protocol_errors += 1
            detail = str(tail)
        elif exc is not None:
            detail = f"{detail}: {exc}"
        error = ConnectionLost(f"{self.target}: {detail}")
        error.__cause__ = tail or exc
        waiter = self._greeting_waiter
        if waiter is not None and not waiter.done():
            raw = getattr(tail, "raw", None)
            waiter.set_exception(GreetingError(f"{self.target}: no greeting: {detail}", raw))
        self._fail_pending(error)
        if self._ready is None or not self._ready.is_set() or self._closed:
            return  # a handshake in progress reports the loss itself
        self._ready.clear()
        if self.reconnect:
            self._dropped_at = time.time()
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect(error))
        else:
            self._hub.end_all(error, closing=True)

    def _fail_pending(self, error: BaseException) -> None:
        replies, self._replies = self._replies, {}
        for future in replies.values():
            if not future.done():
                future.set_exception(error)

    async def _reconnect(self, error: ConnectionLost) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_timeout
        delays = Backoff(self.backoff, self.max_backoff).delays()
        last: BaseException = error
        try:
            while loop.time() < deadline:
                await asyncio.sleep(min(next(delays), max(0.0, deadline - loop.time())))
                try:
                    await self._open()
                except (QMPConnectionError, QMPTimeoutError) as attempt_error:
                    last = attempt_error
                    _log.info("%s: reconnect failed: %s", self.target, attempt_error)
                    continue
                _log.info("%s: reconnected", self.target)
                return
            lost = ConnectionLost(
                f"{self.target}: no connection for {self.reconnect_timeout} s; last error: {last}"
            )
            lost.__cause__ = last
            self._give_up(lost)
        except Exception as error:
            # Anything else (a refused query-qmp-schema, a bug) ends every waiter
            # with that error: nobody may wait for a reconnect that will not come.
            _log.error("%s: reconnect failed for good: %s", self.target, error)
            self._give_up(error)
        finally:
            self._reconnecting = None

    def _give_up(self, error: BaseException) -> None:
        """The connection will not come back: end listeners and commands with ``error``."""
        self._closed = True
        self._failure = error
        self._hub.end_all(error, closing=True)
        self._fail_pending(error)
        # Wake commands waiting for the reconnect: _usable() sees the client closed.
        assert self._ready is not None
        self._ready.set()

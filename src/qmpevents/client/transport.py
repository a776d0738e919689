"""The client's asyncio transport: bytes from the socket into the session, out to the client.

:class:`ClientProtocol` is the ``asyncio.Protocol`` of one connection: each read
goes through the sans-IO :class:`~qmpevents.protocol.client_session.ClientSession`
with no task switch per message, and what it completes is handed to the owner
(the :class:`~qmpevents.client.QMPClient`) through the narrow
:class:`ProtocolOwner` interface.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol

from qmpevents.addresses import Address
from qmpevents.errors import QMPEventsError
from qmpevents.protocol.client_session import (
    ClientSession,
    ErrorResponse,
    Greeting,
    ProtocolViolation,
    Response,
    ServerMessage,
)
from qmpevents.schema.events import Event

__all__ = ["ClientProtocol", "ProtocolOwner", "open_transport"]


class ProtocolOwner(Protocol):
    """What a :class:`ClientProtocol` reports to."""

    def _reply(self, reply: Response | ErrorResponse) -> None: ...

    def _violation(self, protocol: ClientProtocol, violation: ProtocolViolation) -> None: ...

    def _greeted(self, protocol: ClientProtocol | None, message: ServerMessage) -> None: ...

    def _events(self, events: list[Event]) -> None: ...

    def _lost(
        self, protocol: ClientProtocol, exc: Exception | None, tail: QMPEventsError | None
    ) -> None: ...


async def open_transport(
    address: Address, loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.Protocol]
) -> None:
    """Connect a new transport to the protocol that ``factory`` makes."""
    if address.path is not None:
        await loop.create_unix_connection(factory, address.path)
    else:
        assert address.host is not None and address.port is not None
        await loop.create_connection(factory, address.host, address.port)


class ClientProtocol(asyncio.Protocol):
    """One connection: bytes -> ClientSession -> the client's handlers."""

    def __init__(self, client: ProtocolOwner, session: ClientSession) -> None:
        self.client = client
        self.session = session
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        client = self.client
        events: list[Event] = []
        others: list[ServerMessage] = []
        self.session._receive_into(data, events, others)
        for message in others:
            if isinstance(message, Response | ErrorResponse):
                client._reply(message)
            elif isinstance(message, ProtocolViolation):
                client._violation(self, message)
            elif isinstance(message, Greeting):
                client._greeted(self, message)
            else:  # pragma: no cover - _receive_into puts every event in `events`
                raise AssertionError(f"unexpected message {message!r}")
        # Events go out after the replies of the same read: an awaiting
        # execute() resumes only later, so it still finds these events queued.
        if events:
            client._events(events)

    def connection_lost(self, exc: Exception | None) -> None:
        tail = self.session.receive_eof()
        self.client._lost(self, exc, tail)

"""One client of the proxy, answered exactly as QEMU would answer it.

Each client has its own :class:`~qmpevents.protocol.server_session.ServerSession`:
parse errors, bad requests, commands before negotiation and ``qmp_capabilities``
are answered here, in QEMU's words, and never reach the upstream. Every other
request goes to the :class:`DownstreamHub` (the proxy), which forwards it.

Ordering: a client's replies leave in the order of its requests, as QEMU's
monitor answers them. Each in-band request and each locally built reply takes
a slot in a queue; a slot waiting for the upstream holds back those behind it,
and a reply fills its slot. ``exec-oob`` replies skip the queue, as in QEMU.

Backpressure, both ways. Reading pauses while the client has as many requests
in flight as QEMU would queue (8 with oob, 1 without), so a client cannot pile
up work upstream. Output is never awaited: a client whose unread output passes
``output_limit`` is disconnected, like :class:`qmpevents.server.monitor.Monitor`
does, so it can neither stall the others nor the upstream's reading.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Final, Protocol

from qmpevents.protocol.requests import Request
from qmpevents.protocol.server_session import GreetingInfo, Reply, ServerSession
from qmpevents.proxy.recorder import DOWN_TO_PROXY, PROXY_TO_DOWN, Recorder

__all__ = ["Downstream", "DownstreamHub"]

log = logging.getLogger("qmpevents.proxy")

# QMP_REQ_QUEUE_LEN_MAX in monitor/qmp.c; without oob QEMU queues one request.
_QUEUE_MAX: Final = 8


class DownstreamHub(Protocol):
    """What a client needs of the proxy."""

    @property
    def output_limit(self) -> int:
        """Unread output past which a client is disconnected."""

    @property
    def recorder(self) -> Recorder | None:
        """Where messages are recorded, if anywhere."""

    def attach(self, client: Downstream) -> None:
        """A client connected: greet it now, or once the upstream is there."""

    def detach(self, client: Downstream) -> None:
        """A client is gone."""

    def forward(self, client: Downstream, request: Request) -> int | None:
        """Send ``request`` upstream; its proxy id (None: no upstream to send it to)."""


class _Slot:
    """A reply's place in a client's queue: its bytes, once known."""

    __slots__ = ("data", "proxy_id")

    def __init__(self, data: bytes | None, proxy_id: int | None = None) -> None:
        self.data = data
        self.proxy_id = proxy_id


class Downstream(asyncio.Protocol):
    """The proxy's side of one client connection."""

    def __init__(self, hub: DownstreamHub, label: str) -> None:
        self._hub = hub
        self.label = label
        self.session: ServerSession | None = None
        self._transport: asyncio.Transport | None = None
        self._closed = False
        self._slots: deque[_Slot] = deque()
        self._in_flight = 0
        self._reading = True

    @property
    def negotiated(self) -> bool:
        """True once the client finished ``qmp_capabilities`` (it then receives events)."""
        return self.session is not None and self.session.negotiated and not self._closed

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed."""
        return self._closed

    @property
    def in_flight(self) -> int:
        """Requests forwarded upstream and not yet answered."""
        return self._in_flight

    # --- asyncio.Protocol -------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.label = f"{self.label}({peer[0]}:{peer[1]})"
        self._set_reading(False)  # nothing is read before the greeting
        self._hub.attach(self)

    def data_received(self, data: bytes) -> None:
        if self._closed or self.session is None:
            return
        recorder = self._hub.recorder
        if recorder is not None:
            recorder.record(DOWN_TO_PROXY, self.label, data)
        for item in self.session.receive_data(data):
            if isinstance(item, Reply):
                self._slots.append(_Slot(item.data))
                continue
            proxy_id = self._hub.forward(self, item)
            if proxy_id is None:
                continue  # the upstream is gone; this connection is closing
            self._in_flight += 1
            if not item.oob:
                self._slots.append(_Slot(None, proxy_id))
        self._flush()
        self._update_reading()

    def eof_received(self) -> bool:
        # QEMU drops what the client left unfinished and closes its side too.
        if self.session is not None:
            self.session.receive_eof()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._slots.clear()
        self._hub.detach(self)

    # --- called by the proxy -----------------------------------------------------

    def start(self, greeting: bytes, info: GreetingInfo) -> None:
        """The upstream is there: greet with its exact greeting, and start reading."""
        if self._closed:
            return
        self.session = ServerSession(info)
        self.send(greeting)
        self._update_reading()

    def reply(self, proxy_id: int, data: bytes, oob: bool) -> None:
        """The reply to forwarded request ``proxy_id``, relabelled for this client."""
        if self._closed:
            return
        self._in_flight -= 1
        if oob:
            self.send(data)
        else:
            for slot in self._slots:
                if slot.proxy_id == proxy_id:
                    slot.data = data
                    break
            self._flush()
        self._update_reading()

    def send_event(self, line: bytes) -> None:
        """An event, as the upstream sent it (only once negotiated)."""
        if self.negotiated:
            self._write(line)

    def send(self, data: bytes) -> None:
        """Write one message (recorded); see :meth:`_write` for the output limit."""
        recorder = self._hub.recorder
        if recorder is not None and not self._closed:
            recorder.record(PROXY_TO_DOWN, self.label, data)
        self._write(data)

    def close(self) -> None:
        """Close once the buffered output is written."""
        if self._transport is not None and not self._closed:
            self._closed = True
            self._transport.close()

    def abort(self) -> None:
        """Drop the connection now, buffered output included."""
        if self._transport is not None:
            self._closed = True
            self._transport.abort()

    # --- internals ------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        transport = self._transport
        if self._closed or transport is None:
            return
        transport.write(data)
        unread = transport.get_write_buffer_size()
        if unread > self._hub.output_limit:
            log.warning(
                "disconnecting %s: %d bytes of output unread (limit %d)",
                self.label,
                unread,
                self._hub.output_limit,
            )
            self.abort()

    def _flush(self) -> None:
        slots = self._slots
        while slots and slots[0].data is not None:
            data = slots.popleft().data
            assert data is not None
            self.send(data)

    def _update_reading(self) -> None:
        if self.session is None:
            return
        limit = _QUEUE_MAX if self.session.oob_enabled else 1
        self._set_reading(self._in_flight < limit)

    def _set_reading(self, reading: bool) -> None:
        if reading == self._reading or self._transport is None or self._closed:
            return
        self._reading = reading
        if reading:
            self._transport.resume_reading()
        else:
            self._transport.pause_reading()

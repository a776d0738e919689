"""The proxy's one connection to QEMU: greeting, negotiation, then lines in, requests out.

:func:`open_upstream` connects (unix path or TCP), reads the greeting and keeps
its exact bytes, and negotiates with ``oob`` when the greeting offers it. From
then on every complete line goes to the :class:`UpstreamSink` as QEMU sent it,
``\\r\\n`` included. Reading never pauses: a slow client is the client's
problem (see :mod:`.downstream`), never the upstream's.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Final, Protocol

from qmpevents.addresses import Address
from qmpevents.errors import ConnectionLost, GreetingError, QMPConnectionError
from qmpevents.protocol.lines import DEFAULT_MAX_LINE
from qmpevents.protocol.server_session import GreetingInfo
from qmpevents.proxy.messages import parse_greeting, read_upstream_line

__all__ = ["Upstream", "UpstreamSink", "open_upstream"]

log = logging.getLogger("qmpevents.proxy")

NEGOTIATION_TIMEOUT: Final = 10.0


class UpstreamSink(Protocol):
    """Where the upstream's lines go once it is negotiated."""

    def upstream_line(self, line: bytes) -> None:
        """One complete line from the upstream, line end included."""

    def upstream_lost(self) -> None:
        """The upstream connection ended."""


class _LineSplitter:
    """Bytes in, complete lines (``\\n`` and what precedes it kept) out; bounded."""

    def __init__(self, max_line: int) -> None:
        self.max_line = max_line
        self._buffer = bytearray()
        self._skipping = False
        self.oversized = 0

    def feed(self, data: bytes) -> list[bytes]:
        end = data.rfind(b"\n")
        if end < 0:
            if not self._skipping:
                self._buffer += data
                if len(self._buffer) > self.max_line:
                    self._buffer.clear()
                    self._skipping = True
                    self.oversized += 1
            return []
        head, tail = data[: end + 1], data[end + 1 :]
        if self._skipping:
            head = head[head.find(b"\n") + 1 :]
            self._skipping = False
        elif self._buffer:
            head = bytes(self._buffer) + head
            self._buffer.clear()
        lines = head.splitlines(keepends=True)
        self._buffer += tail
        return lines


class Upstream(asyncio.Protocol):
    """The connection to QEMU."""

    def __init__(self, label: str, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.label = label
        self.greeting: bytes | None = None
        self.greeting_info: GreetingInfo | None = None
        self.oob = False
        self.sink: UpstreamSink | None = None
        self._splitter = _LineSplitter(max_line)
        self._early: list[bytes] = []
        self._transport: asyncio.Transport | None = None
        self._greeted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._lost = asyncio.Event()
        self._arrived = asyncio.Event()  # a line came (or the connection went) meanwhile

    @property
    def closed(self) -> bool:
        """True once the connection is gone."""
        return self._lost.is_set()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        for line in self._splitter.feed(data):
            if self.greeting is None:
                self.greeting = line
                if not self._greeted.done():
                    self._greeted.set_result(None)
            elif self.sink is not None:
                self.sink.upstream_line(line)
            else:
                self._early.append(line)
                self._arrived.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost.set()
        self._arrived.set()
        if not self._greeted.done():
            self._greeted.set_exception(ConnectionLost(f"{self.label}: closed before greeting"))
        if self.sink is not None:
            self.sink.upstream_lost()

    def write(self, data: bytes) -> None:
        """Send bytes to QEMU (dropped once the connection is gone)."""
        if self._transport is not None and not self._lost.is_set():
            self._transport.write(data)

    def attach(self, sink: UpstreamSink) -> None:
        """Send every line from now on (and those held since negotiation) to ``sink``."""
        self.sink = sink
        early, self._early = self._early, []
        for line in early:
            sink.upstream_line(line)
        if self._lost.is_set():
            sink.upstream_lost()

    def close(self) -> None:
        """Close the connection."""
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        """Return once the connection is gone."""
        await self._lost.wait()

    async def _negotiate(self, negotiation_id: int) -> None:
        await self._greeted
        assert self.greeting is not None
        self.greeting_info = parse_greeting(self.greeting)
        self.oob = "oob" in self.greeting_info.capabilities
        enable = ', "arguments": {"enable": ["oob"]}' if self.oob else ""
        self.write(f'{{"execute": "qmp_capabilities"{enable}, "id": {negotiation_id}}}\n'.encode())
        while True:
            while not self._early:
                if self._lost.is_set():
                    raise ConnectionLost(f"{self.label}: closed during negotiation")
                self._arrived.clear()
                await self._arrived.wait()
            line = self._early.pop(0)
            reply = read_upstream_line(line)
            if reply is not None and reply.id == negotiation_id:
                if reply.key != "return":
                    raise QMPConnectionError(
                        f"{self.label}: qmp_capabilities refused: {reply.value.decode()}"
                    )
                return


async def open_upstream(
    address: Address, negotiation_id: int, *, timeout: float = NEGOTIATION_TIMEOUT
) -> Upstream:
    """Connect to ``address``, read the greeting and negotiate (oob when offered).

    Raises OSError when nobody listens, :class:`GreetingError` or
    :class:`QMPConnectionError` when the peer is no QMP server, and
    :class:`ConnectionLost` when it closes before negotiation is done.
    """
    loop = asyncio.get_running_loop()
    label = str(address)

    def factory() -> Upstream:
        return Upstream(label)

    if address.path is not None:
        _, upstream = await loop.create_unix_connection(factory, address.path)
    else:
        assert address.host is not None and address.port is not None
        _, upstream = await loop.create_connection(factory, address.host, address.port)
    try:
        await asyncio.wait_for(upstream._negotiate(negotiation_id), timeout)
    except TimeoutError:
        upstream.close()
        raise GreetingError(f"{label}: no greeting or negotiation within {timeout} s") from None
    except BaseException:
        upstream.close()
        raise
    return upstream

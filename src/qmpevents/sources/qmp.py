"""The events of one QMP monitor (a unix socket or ``HOST:PORT``), kept attached.

:class:`QMPSource` runs one :class:`~qmpevents.client.QMPClient` at a time, with
no reconnect of the client's own: the source reconnects, so that it can say at
once that the connection is gone (:class:`~.base.Disconnected`), which the
client's own ``Gap`` marker can only say once the connection is back. Attempts
are spaced by a :class:`~qmpevents.client.backoff.Backoff`.

The listener is created before each handshake, so nothing QEMU sends after it
is missed, and its items come out in the order received.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from qmpevents.addresses import Address, parse_address
from qmpevents.client import EventListener, Gap, OverflowPolicy, QMPClient
from qmpevents.client.backoff import Backoff
from qmpevents.client.runstate import RunStateTracker, parse_status
from qmpevents.errors import CommandError, ConnectionLost, QMPConnectionError, QMPTimeoutError
from qmpevents.schema.events import Resume, Stop
from qmpevents.sources.base import (
    Connected,
    Disconnected,
    EventSource,
    SourceItem,
    Unreachable,
)

__all__ = ["QMPSource"]

STOP_OR_RESUME = (Stop, Resume)


class QMPSource(EventSource):
    """The events of the QMP monitor at ``address``, attributed to ``name``.

    ``names`` and ``where`` filter as :meth:`QMPClient.events` does; ``policy``
    and ``queue_size`` are the listener's. With ``reconnect`` the source keeps
    trying (``backoff``, which may give up: then ``ConnectionLost`` is raised)
    and reports what happens as markers; without it, the first failure or loss
    is raised.
    """

    def __init__(
        self,
        name: str,
        address: str | Address,
        *,
        names: tuple[str, ...] = (),
        where: Mapping[str, Any] | None = None,
        reconnect: bool = True,
        backoff: Backoff | None = None,
        greeting_timeout: float = 5.0,
        queue_size: int = 10_000,
        policy: OverflowPolicy = "block",
    ) -> None:
        self.name = name
        self.address = parse_address(address)
        self.names = names
        self.where = dict(where or {})
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.greeting_timeout = greeting_timeout
        self.queue_size = queue_size
        self.policy: OverflowPolicy = policy
        self.client: QMPClient | None = None
        self._receiving = False
        self._stopping = False
        self._wake = asyncio.Event()

    @property
    def connected(self) -> bool:
        """Whether the monitor is attached and negotiated now."""
        return self._receiving

    async def aclose(self) -> None:
        self._stopping = True
        self._wake.set()
        if self.client is not None:
            # Closing ends the listener after what it holds: nothing received is lost.
            await self.client.close()

    def __aiter__(self) -> AsyncIterator[SourceItem]:
        return self._items()

    async def _items(self) -> AsyncIterator[SourceItem]:
        delays = self.backoff.delays()
        failing: str | None = None
        lost_at: float | None = None
        started = time.time()
        run_state = RunStateTracker()
        try:
            while not self._stopping:
                client = QMPClient(
                    self.address, greeting_timeout=self.greeting_timeout, reconnect=False
                )
                listener = client.events(
                    *self.names, where=self.where, maxsize=self.queue_size, policy=self.policy
                )
                self.client = client
                try:
                    await client.connect()
                except (QMPConnectionError, QMPTimeoutError) as error:
                    await client.close()
                    if not self.reconnect:
                        raise
                    self._give_up_if_due(lost_at, started, error)
                    if str(error) != failing:  # one marker per new reason, not per attempt
                        failing = str(error)
                        yield Unreachable(time.time(), f"{error}; retrying")
                    await self._pause(next(delays))
                    continue
                failing = None
                delays = self.backoff.delays()
                self._receiving = True
                # Asked before anything is yielded: the consumer may be slow to come back.
                marker = run_state.connected(await self._query_status(client))
                now = time.time()
                yield Connected(now, f"connected to {self.address}")
                if lost_at is not None:
                    yield Gap(lost_at, now)
                if marker is not None:
                    yield marker
                reason = None
                async for item in self._drain(listener):
                    if isinstance(item, str):
                        reason = item
                    else:
                        if isinstance(item, STOP_OR_RESUME):
                            run_state.observe((item,))
                        yield item
                self._receiving = False
                await client.close()
                if self._stopping:
                    return
                lost_at = time.time()
                yield Disconnected(lost_at, reason or "connection closed")
                await self._pause(next(delays))
        finally:
            self._receiving = False
            if self.client is not None:
                await self.client.close()

    async def _drain(self, listener: EventListener) -> AsyncIterator[SourceItem | str]:
        """The listener's items; a final ``str`` says why the connection ended."""
        try:
            async for item in listener:
                yield item
        except ConnectionLost as error:
            if not self.reconnect:
                raise
            yield f"connection lost: {error}"

    async def _query_status(self, client: QMPClient) -> tuple[str, bool] | None:
        """The VM's run state now; None when the server has no query-status or is gone."""
        try:
            return parse_status(await client.execute("query-status", timeout=self.greeting_timeout))
        except (CommandError, ConnectionLost, QMPTimeoutError):
            return None

    def _give_up_if_due(
        self, lost_at: float | None, started: float, error: QMPConnectionError | QMPTimeoutError
    ) -> None:
        limit = self.backoff.give_up_after
        if limit is not None and time.time() - (lost_at or started) >= limit:
            lost = ConnectionLost(
                f"{self.address}: no connection for {limit} s; last error: {error}"
            )
            raise lost from error

    async def _pause(self, seconds: float) -> None:
        """Sleep between attempts, cut short by :meth:`aclose`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

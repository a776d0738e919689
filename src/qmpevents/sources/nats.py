"""The events of a whole fleet, read back from NATS JetStream (stream ``QMP_EVENTS``).

Every host's collector publishes its VMs' events to ``qmp.<vm>.<EVENT>`` (QEMU's
exact bytes) and their gaps to ``qmp.<vm>._GAP`` (JSON); see
:mod:`.nats_subjects`. :class:`NatsSource` reads them live (and first replays from
``since``, JetStream's deliver policy by start time) through ordered push
consumers, one per subject filter (:func:`~.nats_subjects.subject_filters`: the
``vm`` and ``names`` filters become subjects where they can; the rest, and
``where``, is checked here).

It yields :class:`FleetItem` (the VM, its host and a typed event decoded by the
same models as a socket's, a :class:`~qmpevents.client.Gap` for a closed gap, a
:class:`~.base.Disconnected` for a gap still open) and the connection's own
markers (:class:`~.base.Connected`, :class:`~.base.Disconnected`,
:class:`~.base.Unreachable`, with ``vm`` left out). nats-py reconnects underneath;
the first connection failing raises ``QMPConnectionError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import fnmatch
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import ConsumerConfig, DeliverPolicy

from qmpevents.client import Gap
from qmpevents.client.listeners import EventFilter
from qmpevents.errors import QMPConnectionError, QMPEventsError
from qmpevents.schema.decode import decode_event
from qmpevents.schema.events import Event
from qmpevents.sources.base import Connected, Disconnected, Unreachable
from qmpevents.sources.nats_subjects import (
    GAP_TOKEN,
    HOST_HEADER,
    STREAM,
    VM_HEADER,
    header_text,
    subject_filters,
)

__all__ = ["FleetItem", "FleetSourceItem", "GapMessage", "NatsSource", "parse_gap"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FleetItem:
    """What VM ``vm`` of collector ``host`` had: an event, a closed gap, or an open one."""

    vm: str
    host: str | None
    item: Event | Gap | Disconnected


FleetSourceItem = FleetItem | Connected | Disconnected | Unreachable


class GapMessage(msgspec.Struct, frozen=True):
    """The JSON payload of a gap on ``qmp.<vm>._GAP``."""

    vm: str
    started: float
    ended: float | None
    reason: str


_GAP_DECODER = msgspec.json.Decoder(GapMessage)


def parse_gap(payload: bytes) -> GapMessage:
    """The gap in ``payload``; ``msgspec.DecodeError`` if it is not one."""
    return _GAP_DECODER.decode(payload)


class NatsSource:
    """The fleet's events from JetStream at ``servers``; see the module docstring.

    ``vm`` is a VM name glob, ``names`` event name globs, ``where`` as for
    :class:`~qmpevents.sources.QMPSource`; ``since`` (epoch seconds) replays the
    stream from then before going live. Use :meth:`start` (or iterate, which starts)
    and :meth:`aclose`.
    """

    def __init__(
        self,
        servers: Sequence[str],
        *,
        name: str | None = None,
        names: tuple[str, ...] = (),
        where: Mapping[str, Any] | None = None,
        vm: str | None = None,
        since: float | None = None,
        stream: str = STREAM,
        connect_timeout: float = 5.0,
        queue_size: int = 10_000,
    ) -> None:
        self.servers = list(servers)
        self.name = name or ",".join(self.servers)
        self.filter = EventFilter(names, where)
        self.vm = vm
        self.since = since
        self.stream = stream
        self.connect_timeout = connect_timeout
        self.subjects = subject_filters(vm, names)
        self._queue: asyncio.Queue[FleetSourceItem | None] = asyncio.Queue(queue_size)
        self._nc: Client | None = None
        self._subscriptions: list[Subscription] = []
        self._closed = False

    async def start(self) -> None:
        """Connect and subscribe; ``QMPConnectionError`` when no server answers in time."""
        if self._nc is not None:
            return
        try:
            self._nc = await asyncio.wait_for(
                nats.connect(
                    self.servers,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=max(1, round(self.connect_timeout)),
                    disconnected_cb=self._disconnected,
                    reconnected_cb=self._reconnected,
                    error_cb=self._error,
                ),
                self.connect_timeout,
            )
        except (TimeoutError, OSError, nats.errors.Error) as error:
            reason = str(error) or (
                f"no answer within {self.connect_timeout:g} s"
                if isinstance(error, TimeoutError)
                else type(error).__name__
            )
            raise QMPConnectionError(f"NATS {self.name}: not reachable: {reason}") from None
        js = self._nc.jetstream()
        try:
            for subject in self.subjects:
                self._subscriptions.append(
                    await js.subscribe(
                        subject,
                        stream=self.stream,
                        cb=self._on_message,
                        ordered_consumer=True,
                        config=self._consumer_config(),
                    )
                )
        except (TimeoutError, nats.errors.Error, nats.js.errors.Error) as error:
            await self.aclose()
            raise QMPConnectionError(
                f"NATS {self.name}: cannot read stream {self.stream}: {error}"
            ) from None
        self._put(Connected(time.time(), f"reading {', '.join(self.subjects)} from {self.name}"))

    def _consumer_config(self) -> ConsumerConfig:
        """New messages only, or from ``since`` (one config per consumer: nats-py fills it)."""
        if self.since is None:
            return ConsumerConfig(deliver_policy=DeliverPolicy.NEW)
        return ConsumerConfig(
            deliver_policy=DeliverPolicy.BY_START_TIME,
            opt_start_time=datetime.datetime.fromtimestamp(self.since, datetime.UTC),
        )

    def __aiter__(self) -> AsyncIterator[FleetSourceItem]:
        return self._items()

    async def _items(self) -> AsyncIterator[FleetSourceItem]:
        await self.start()
        while True:
            item = await self._queue.get()
            if item is None:
                return
            yield item

    async def aclose(self) -> None:
        """Unsubscribe and disconnect; iteration ends after what was received. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()
        nc, self._nc = self._nc, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(nc.close(), 2)
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)

    def _put(self, item: FleetSourceItem) -> None:
        if not self._closed:
            with contextlib.suppress(asyncio.QueueFull):  # a marker: the events matter more
                self._queue.put_nowait(item)

    async def _on_message(self, msg: Msg) -> None:
        item = self.read(msg)
        if item is not None and not self._closed:
            await self._queue.put(item)  # a full queue holds the consumer (flow control)

    def read(self, msg: Msg) -> FleetItem | None:
        """The item of ``msg``, or ``None`` when a filter refuses it (or it is unreadable)."""
        vm = header_text(msg.headers, VM_HEADER)
        host = header_text(msg.headers, HOST_HEADER)
        try:
            if msg.subject.endswith("." + GAP_TOKEN):
                gap = parse_gap(msg.data)
                vm = vm or gap.vm
                if not self._vm_matches(vm):
                    return None
                if gap.ended is None:
                    return FleetItem(vm, host, Disconnected(gap.started, gap.reason))
                return FleetItem(vm, host, Gap(gap.started, gap.ended))
            event = decode_event(msg.data)
        except (msgspec.DecodeError, QMPEventsError) as error:
            log.warning("NATS %s: %s: unreadable message: %s", self.name, msg.subject, error)
            return None
        if vm is None or not self._vm_matches(vm) or not self.filter.accepts(event):
            return None
        return FleetItem(vm, host, event)

    def _vm_matches(self, vm: str) -> bool:
        return self.vm is None or fnmatch.fnmatchcase(vm, self.vm)

    async def _disconnected(self) -> None:
        if not self._closed:
            self._put(Disconnected(time.time(), "NATS connection lost, reconnecting"))

    async def _reconnected(self) -> None:
        if not self._closed and self._nc is not None:
            self._put(Connected(time.time(), f"reconnected to {self._nc.connected_url}"))

    async def _error(self, error: Exception) -> None:
        self._put(Unreachable(time.time(), f"{type(error).__name__}: {error}"))

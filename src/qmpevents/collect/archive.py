"""The central archive: the fleet's records, from JetStream into one SQLite database.

:class:`Archive` reads stream ``QMP_EVENTS`` (every ``qmp.>`` subject) through a
durable pull consumer (``durable``, default ``qmpevents-archive``), ``batch``
messages per fetch, and for each batch:

1. turns each message into a record (:func:`record_of`): an event (VM from header
   ``Qmp-Vm``, QEMU's bytes as they are), a gap (its JSON), with the ``Qmp-Host``
   header and the ``Nats-Msg-Id``;
2. commits them in one SQLite transaction (:class:`~.archive_store.ArchiveStore`:
   an event already archived under its message id is skipped);
3. only then acknowledges the messages.

So a crash (SIGKILL) after the commit and before the acks makes JetStream deliver
those messages again (after ``ack_wait``), and they are skipped as duplicates; a
crash before the commit loses nothing either. The durable consumer remembers what
was acknowledged: a restarted archive picks up where it stopped. A storage failure
is retried (nothing acknowledged meanwhile); a message that is no record at all is
logged, counted in :attr:`Archive.rejected` and acknowledged (it would come back
for ever otherwise). NATS trouble (a node gone, a leader election) is retried with
backoff; nats-py reconnects to the other servers underneath.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.parse
from pathlib import Path

import msgspec
import nats
import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from qmpevents.collect.archive_store import Archived, ArchiveStore
from qmpevents.collect.fleet_publish import ensure_stream
from qmpevents.collect.records import EventRecord, GapRecord
from qmpevents.sources.nats import parse_gap
from qmpevents.sources.nats_subjects import (
    GAP_TOKEN,
    HOST_HEADER,
    MSG_ID_HEADER,
    RECEIVED_HEADER,
    STREAM,
    VM_HEADER,
    header_text,
)

__all__ = ["DURABLE", "Archive", "record_of"]

log = logging.getLogger(__name__)

DURABLE = "qmpevents-archive"
"""The default name of the archive's durable consumer."""


class _Stamp(msgspec.Struct):
    seconds: int
    microseconds: int


class _Head(msgspec.Struct):
    event: str
    timestamp: _Stamp


_HEAD = msgspec.json.Decoder(_Head)


def record_of(msg: Msg) -> Archived:
    """The record in ``msg`` with its message id and host; ``ValueError`` if it is none."""
    headers = msg.headers or {}
    msg_id = headers.get(MSG_ID_HEADER) or f"{msg.metadata.stream}#{msg.metadata.sequence.stream}"
    host = header_text(headers, HOST_HEADER)
    try:
        if msg.subject.endswith("." + GAP_TOKEN):
            gap = parse_gap(msg.data)
            record: EventRecord | GapRecord = GapRecord(gap.vm, gap.started, gap.ended, gap.reason)
        else:
            vm = headers.get(VM_HEADER)
            if vm is None:
                raise ValueError(f"{msg.subject}: no {VM_HEADER} header")
            head = _HEAD.decode(msg.data)
            received = headers.get(RECEIVED_HEADER)
            record = EventRecord(
                vm=urllib.parse.unquote(vm),
                name=head.event,
                qemu_seconds=head.timestamp.seconds,
                qemu_micros=head.timestamp.microseconds,
                received_at=float(received) if received else msg.metadata.timestamp.timestamp(),
                raw=msg.data,
            )
    except msgspec.DecodeError as error:
        raise ValueError(f"{msg.subject}: {error}") from None
    return Archived(msg_id, host, record)


class Archive:
    """Archives stream ``stream`` at ``servers`` into ``db``; see the module docstring."""

    def __init__(
        self,
        servers: list[str],
        db: Path,
        *,
        durable: str = DURABLE,
        stream: str = STREAM,
        replicas: int = 1,
        batch: int = 500,
        fetch_timeout: float = 1.0,
        ack_wait: float = 30.0,
        connect_timeout: float = 5.0,
        retry_max: float = 5.0,
    ) -> None:
        self.servers = servers
        self.db = db
        self.durable = durable
        self.stream = stream
        self.replicas = replicas
        self.batch = batch
        self.fetch_timeout = fetch_timeout
        self.ack_wait = ack_wait
        self.connect_timeout = connect_timeout
        self.retry_max = retry_max
        self.store: ArchiveStore | None = None
        self.stored = 0
        """Records written (events new to the archive, and gap writes)."""
        self.duplicates = 0
        """Events skipped because their message id was archived already."""
        self.rejected = 0
        """Messages that were no record, or that SQLite refused alone (logged, acknowledged)."""
        self.failures = 0
        """Failed attempts (NATS or storage), each logged."""
        self._nc: Client | None = None
        self._sub: JetStreamContext.PullSubscription | None = None
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        """Make :meth:`run` return after the batch in hand is committed and acknowledged."""
        self._stopping.set()

    async def run(self) -> None:
        """Open the database (``ConfigError`` if it cannot be), archive until :meth:`stop`."""
        self.store = await asyncio.to_thread(ArchiveStore, self.db)
        try:
            delay = 0.1
            while not self._stopping.is_set():
                try:
                    messages = await self._fetch()
                except (nats.errors.TimeoutError, TimeoutError):  # nothing new
                    continue
                except Exception as error:  # NATS away, a leader election: retry
                    self._failed("cannot fetch", error)
                    await self._reset()
                    await self._pause(delay)
                    delay = min(delay * 2, self.retry_max)
                    continue
                delay = 0.1
                if messages:
                    await self._archive(messages)
        finally:
            await self._reset()
            store, self.store = self.store, None
            if store is not None:
                await asyncio.to_thread(store.close)

    async def _fetch(self) -> list[Msg]:
        if self._sub is None:
            try:
                await self._subscribe()
            except (TimeoutError, nats.errors.TimeoutError) as error:
                # Not "nothing new": run() retries these silently, and an unreachable
                # NATS must be logged.
                raise ConnectionError(
                    f"NATS {','.join(self.servers)}: no answer within {self.connect_timeout:g} s"
                ) from error
        assert self._sub is not None
        return await self._sub.fetch(self.batch, timeout=self.fetch_timeout)

    async def _subscribe(self) -> None:
        """Connect (once), make sure the stream exists, bind the durable consumer."""
        if self._nc is None:
            self._nc = await asyncio.wait_for(
                nats.connect(
                    self.servers,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=0.5,
                    connect_timeout=max(1, round(self.connect_timeout)),
                    error_cb=self._quiet,
                ),
                self.connect_timeout,
            )
        js = self._nc.jetstream()
        await ensure_stream(js, self.stream, self.replicas)
        self._sub = await js.pull_subscribe(
            "qmp.>",
            durable=self.durable,
            stream=self.stream,
            config=ConsumerConfig(
                ack_policy=AckPolicy.EXPLICIT,
                deliver_policy=DeliverPolicy.ALL,
                ack_wait=self.ack_wait,
                max_ack_pending=max(1000, 4 * self.batch),
            ),
        )
        log.warning("archiving stream %s as consumer %s", self.stream, self.durable)

    async def _archive(self, messages: list[Msg]) -> None:
        """Commit ``messages`` (retrying storage failures), then acknowledge them."""
        batch: list[Archived] = []
        for msg in messages:
            try:
                batch.append(record_of(msg))
            except ValueError as error:
                self.rejected += 1
                log.error("not a record, acknowledged and skipped: %s", error)
        delay = 0.1
        while True:
            try:
                assert self.store is not None
                outcome = await asyncio.to_thread(self.store.write, batch)
                break
            except Exception as error:
                self._failed(f"cannot write {self.db}", error)
                if self._stopping.is_set():
                    return  # not acknowledged: delivered again to the next run
                await self._pause(delay)
                delay = min(delay * 2, self.retry_max)
        self.stored += outcome.stored
        self.duplicates += outcome.duplicates
        for item, why in outcome.rejected:
            self.rejected += 1
            log.error("SQLite refused message %s, acknowledged and skipped: %s", item.msg_id, why)
        for msg in messages:
            with contextlib.suppress(Exception):  # unacknowledged: redelivered, then skipped
                await msg.ack()

    def _failed(self, what: str, error: BaseException) -> None:
        self.failures += 1
        log.error("%s: %s: %s; retrying", what, type(error).__name__, error)

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _reset(self) -> None:
        """Drop the subscription (made again at the next fetch); at stop, the connection."""
        sub, self._sub = self._sub, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sub.unsubscribe(), 1)
        if self._stopping.is_set() or sub is None:
            nc, self._nc = self._nc, None
            if nc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(nc.close(), 2)  # sends the acks still buffered

    async def _quiet(self, error: Exception) -> None:
        log.debug("NATS: %s", error)

"""Publishing records to JetStream, acknowledged: what the direct sink and the outbox share.

:class:`JetStreamPublisher` connects (nats-py reconnects underneath), creates the
stream if it is missing, and publishes one batch of records pipelined
(:meth:`JetStreamPublisher._publish`), returning those to retry later. Each message
carries the ``Nats-Msg-Id`` of :func:`~.nats_messages.message_id`, so a record
published again after a lost acknowledgement is dropped by JetStream's
de-duplication (within the stream's duplicate window, 2 minutes by default).

A record that can never be published (over ``max_payload``, no subject, refused by
JetStream) is tried again alone, then rejected: counted per reason in
:attr:`JetStreamPublisher.rejections` and logged (:mod:`.rejects`). It never holds
up the records behind it.

Two owners: :class:`~.nats_sink.NatsSink` (records handed over in memory, bounded
buffer) and :class:`~.nats_outbox.NatsOutbox` (records read from the SQLite journal
behind a persistent cursor).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType

from qmpevents.collect.nats_messages import NATS_REASONS, Unpublishable, message_for
from qmpevents.collect.records import Record
from qmpevents.collect.rejects import Rejections

__all__ = ["STREAM", "JetStreamPublisher"]

log = logging.getLogger(__name__)

STREAM = "QMP_EVENTS"
"""The default stream name."""

# Raised by nats-py for one message, before it is sent: that message's fault. (message_for
# checks size and subject first: publish_async leaks a pending slot when it raises.)
_REFUSED_HERE = (
    nats.errors.MaxPayloadError,
    nats.errors.BadSubjectError,
    nats.errors.BadHeaderError,
)


def describe(error: BaseException) -> str:
    """``error`` as one log phrase."""
    return f"{type(error).__name__}: {error}"


def _refused(error: BaseException) -> bool:
    """Whether JetStream's answer refuses the message itself (400), not the moment."""
    return isinstance(error, nats.js.errors.BadRequestError)


class JetStreamPublisher:
    """The connection to JetStream at ``servers`` and acknowledged batch publishing.

    Subclasses own the records and the retries; they say in :meth:`_keeping` what
    they keep after a failure (for the log line).
    """

    name = "nats"

    def __init__(
        self,
        servers: str | list[str],
        *,
        stream: str = STREAM,
        ack_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        retry_initial: float = 0.2,
        retry_max: float = 10.0,
        reconnect_wait: float = 0.5,
    ) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.stream = stream
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.reconnect_wait = reconnect_wait
        self._closing = False
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._last_logged: str | None = None
        self._max_msg_size = -1  # the stream's limit, if it has one
        self.published = 0
        """Records acknowledged by JetStream so far."""
        self.failures = 0
        """Failed publish attempts so far (each one logged)."""
        self.last_error: str | None = None
        """The last publishing error, ``None`` once publishing succeeds again."""
        self.rejections = Rejections(self.name, NATS_REASONS)
        """The records that can never be published (see :mod:`.rejects`)."""

    @property
    def rejected(self) -> dict[str, int]:
        """Records that can never be published, per reason."""
        return self.rejections.counts

    @property
    def healthy(self) -> bool:
        """Connected, and the last attempt to publish succeeded."""
        return self._nc is not None and self._nc.is_connected and self.last_error is None

    async def _disconnect(self, timeout: float = 1.0) -> None:
        """Close the connection (bounded: a NATS that is away never holds this up)."""
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(nats.errors.Error, TimeoutError, OSError):
                await asyncio.wait_for(nc.close(), timeout)

    def _recovered(self) -> None:
        """A batch went through: say so once after failures."""
        if self.last_error is not None:
            log.warning("NATS %s: publishing again", self.servers)
            self.last_error = None

    async def _jetstream(self) -> JetStreamContext:
        """The JetStream context, connecting and creating the stream first if needed."""
        if self._js is not None:
            return self._js
        if self._nc is None:
            connecting = nats.connect(
                self.servers,
                allow_reconnect=True,
                # nats-py reconnects for ever once connected; with no limit it would also
                # retry the first connection for ever, hence the timeout around it.
                max_reconnect_attempts=-1,
                reconnect_time_wait=self.reconnect_wait,
                connect_timeout=max(1, round(self.connect_timeout)),
                error_cb=self._on_error,
                disconnected_cb=self._on_disconnected,
                reconnected_cb=self._on_reconnected,
            )
            try:
                self._nc = await asyncio.wait_for(connecting, self.connect_timeout)
            except TimeoutError:
                raise ConnectionError(
                    f"no NATS server reachable within {self.connect_timeout} s"
                ) from None
        self._js = await self._bind_stream(self._nc)
        return self._js

    async def _bind_stream(self, nc: Client) -> JetStreamContext:
        """A JetStream context on ``nc`` whose stream exists (created if missing)."""
        js = nc.jetstream()
        try:
            info = await js.stream_info(self.stream)
            self._max_msg_size = info.config.max_msg_size or -1
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=self.stream, subjects=["qmp.>"], storage=StorageType.FILE)
            log.info("NATS %s: created stream %s", self.servers, self.stream)
        return js

    def _size_limit(self) -> int:
        """The largest message (headers and payload) the server and the stream take."""
        assert self._nc is not None
        limit = self._nc.max_payload
        return min(limit, self._max_msg_size) if self._max_msg_size > 0 else limit

    async def _publish(self, js: JetStreamContext, batch: list[Record]) -> list[Record]:
        """Publish ``batch`` pipelined; return the records to retry later.

        A record that fails for its own sake (see :meth:`_publish_alone`) is published
        again on its own, and rejected if it fails alone too.
        """
        limit = self._size_limit()
        sent: list[tuple[Record, asyncio.Future[PubAck]]] = []
        suspects: list[Record] = []
        try:
            for record in batch:
                try:
                    message = message_for(record, limit)
                except Exception:  # Unpublishable or worse: _publish_alone says why
                    suspects.append(record)
                    continue
                try:
                    future = await js.publish_async(
                        message.subject, message.payload, headers=message.headers
                    )
                except _REFUSED_HERE:
                    suspects.append(record)
                    continue
                sent.append((record, future))
        except BaseException:
            for _, future in sent:
                future.cancel()
            raise
        failed = await self._acknowledged(sent, suspects)
        for i, record in enumerate(suspects):
            try:
                await self._publish_alone(js, record)
            except Exception as error:  # NATS itself failed meanwhile: retry them later
                rest = suspects[i:]
                self._failed(describe(error), len(rest))
                failed += rest
                break
        return failed

    async def _acknowledged(
        self, sent: list[tuple[Record, asyncio.Future[PubAck]]], suspects: list[Record]
    ) -> list[Record]:
        """Wait for the acks of ``sent``; return what to retry, add the suspects to ``suspects``.

        A refusal is the record's own fault; so, likely, is a missing ack when others of
        the batch were acknowledged (nats-py loses JetStream's error answer to an
        asynchronous publish, and the ack never comes).
        """
        if not sent:
            return []
        done, pending = await asyncio.wait([f for _, f in sent], timeout=self.ack_timeout)
        for future in pending:
            future.cancel()
        unacknowledged: list[Record] = []
        reason: str | None = None
        acknowledged = 0
        for record, future in sent:
            error: BaseException | None = TimeoutError()
            if future in done and not future.cancelled():
                error = future.exception()
            if error is None:
                acknowledged += 1
            elif _refused(error):
                suspects.append(record)
            else:
                unacknowledged.append(record)
                if reason is None and not isinstance(error, TimeoutError):
                    reason = describe(error)
        self.published += acknowledged
        if unacknowledged and acknowledged:
            suspects.extend(unacknowledged)  # the others went through: try these alone
            return []
        if unacknowledged:
            reason = reason or f"no acknowledgement within {self.ack_timeout} s"
            self._failed(reason, len(unacknowledged))
        return unacknowledged

    async def _publish_alone(self, js: JetStreamContext, record: Record) -> None:
        """Publish ``record`` on its own, waiting for JetStream's answer; reject it if refused.

        Raises for any failure that is not the record's (NATS away, no answer in time).
        """
        try:
            message = message_for(record, self._size_limit())
            await js.publish(
                message.subject, message.payload, timeout=self.ack_timeout, headers=message.headers
            )
        except Unpublishable as problem:
            self.rejections.add(record, problem.reason, str(problem))
        except nats.errors.MaxPayloadError as error:
            self.rejections.add(record, "too_large", describe(error))
        except (nats.errors.BadSubjectError, nats.errors.BadHeaderError) as error:
            self.rejections.add(record, "subject", describe(error))
        except nats.js.errors.BadRequestError as error:
            self.rejections.add(record, "refused", describe(error))
        except (nats.errors.Error, nats.js.errors.Error, OSError, TimeoutError):
            raise  # NATS's trouble, not the record's
        except Exception as error:  # a record we cannot even read
            self.rejections.add(record, "invalid", describe(error))
        else:
            self.published += 1

    def _keeping(self, count: int) -> str:
        """What is kept for a retry after ``count`` records failed (ends the log line)."""
        return f"keeping {count}"

    def _failed(self, reason: str, count: int) -> None:
        self.failures += 1
        self.last_error = reason
        log.error(
            "NATS %s: %d record(s) not published: %s; %s, retrying",
            self.servers,
            count,
            reason,
            self._keeping(count),
        )

    async def _on_error(self, error: Exception) -> None:
        # nats-py reports each failed reconnection attempt: say it once, not twice a second
        text = f"{type(error).__name__}: {error}"
        if text != self._last_logged:
            self._last_logged = text
            log.warning("NATS %s: %s", self.servers, text)

    async def _on_disconnected(self) -> None:
        if self._closing:
            return
        log.warning("NATS %s: disconnected, reconnecting", self.servers)

    async def _on_reconnected(self) -> None:
        self._last_logged = None
        log.warning("NATS %s: reconnected", self.servers)

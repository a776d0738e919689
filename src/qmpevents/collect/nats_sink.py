"""The NATS JetStream sink: every record published to stream ``QMP_EVENTS``, acknowledged.

Layout for subscribers, who need nothing but a NATS client:

- An event goes to ``qmp.<vm>.<EVENT>``; its payload is the event exactly as QEMU
  sent it. A gap goes to ``qmp.<vm>._GAP`` as JSON (``{"type": "gap", "vm": ...,
  "started": ..., "ended": ..., "reason": ...}``); it is published when it opens and
  again when it closes.
- ``<vm>`` is the VM name made into one subject token by :func:`subject_token`
  (``.``, ``*``, ``>``, ``%``, whitespace and control characters become ``%XX``);
  the header ``Qmp-Vm`` carries the name unchanged, ``Qmp-Received-At`` the
  collector's receive time (seconds since the epoch).
- ``Nats-Msg-Id`` is derived from the record alone (VM, QEMU timestamp, event name and
  a hash of the raw bytes; see :func:`message_id`), so republishing a record after a
  lost acknowledgement is dropped by JetStream's de-duplication (within the stream's
  duplicate window, 2 minutes by default). Two events of one VM identical down to the
  microsecond and the byte are indistinguishable and are stored once.

Delivery is at least once: a record leaves the local buffer only when JetStream has
acknowledged it. While NATS is unreachable, records wait in a buffer of at most
``buffer_limit`` (the oldest are dropped and counted beyond that) plus one window of
``window`` records in flight, and are retried with backoff; nats-py reconnects
underneath.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time

import msgspec
import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType

from qmpevents.collect.buffer import DropOldestBuffer
from qmpevents.collect.records import EventRecord, Record

__all__ = ["GAP_TOKEN", "STREAM", "NatsSink", "message_id", "subject_of", "subject_token"]

log = logging.getLogger(__name__)

STREAM = "QMP_EVENTS"
"""The default stream name."""

GAP_TOKEN = "_GAP"
"""The last subject token of gap records (no QEMU event name starts with ``_``)."""

_ESCAPED = frozenset(".*>%")


def subject_token(name: str) -> str:
    """``name`` as one NATS subject token: reserved and blank characters become ``%XX``.

    The mapping is one-to-one (``%`` itself is escaped), so two VM names never
    share a subject. Raises ``ValueError`` for an empty name.
    """
    if not name:
        raise ValueError("an empty name cannot be a subject token")
    return "".join(
        "".join(f"%{byte:02X}" for byte in ch.encode())
        if ch in _ESCAPED or ch.isspace() or not ch.isprintable()
        else ch
        for ch in name
    )


def subject_of(record: Record) -> str:
    """The subject ``record`` is published to (``qmp.<vm>.<event>`` or ``qmp.<vm>._GAP``)."""
    last = subject_token(record.name) if isinstance(record, EventRecord) else GAP_TOKEN
    return f"qmp.{subject_token(record.vm)}.{last}"


def message_id(record: Record) -> str:
    """The ``Nats-Msg-Id`` of ``record``: the same record always gets the same id.

    For an event: VM, QEMU timestamp, event name and a BLAKE2b hash of the raw bytes.
    For a gap: VM, start and end (an open gap and its closing are two messages).
    """
    if isinstance(record, EventRecord):
        digest = hashlib.blake2b(record.raw, digest_size=12).hexdigest()
        return f"{record.vm}:{record.qemu_seconds}.{record.qemu_micros:06d}:{record.name}:{digest}"
    return f"{record.vm}:gap:{record.started!r}:{record.ended!r}"


def _payload(record: Record) -> bytes:
    return record.raw if isinstance(record, EventRecord) else msgspec.json.encode(record)


def _received_at(record: Record) -> float:
    return record.received_at if isinstance(record, EventRecord) else record.started


class NatsSink:
    """A sink that publishes records to JetStream at ``servers`` (see the module docstring).

    :meth:`submit` never blocks; :meth:`start` returns at once even when NATS is
    down (the publisher keeps trying); :meth:`aclose` publishes what it can within
    its timeout.
    """

    name = "nats"

    def __init__(
        self,
        servers: str | list[str],
        *,
        stream: str = STREAM,
        buffer_limit: int = 100_000,
        window: int = 512,
        ack_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        retry_initial: float = 0.2,
        retry_max: float = 10.0,
        reconnect_wait: float = 0.5,
    ) -> None:
        self.servers = [servers] if isinstance(servers, str) else list(servers)
        self.stream = stream
        self.window = window
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.reconnect_wait = reconnect_wait
        self._buffer: DropOldestBuffer[Record] = DropOldestBuffer(buffer_limit)
        self._in_flight = 0
        self._wakeup = asyncio.Event()
        self._closing = False
        self._close_deadline = 0.0
        self._task: asyncio.Task[None] | None = None
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._last_logged: str | None = None
        self.published = 0
        """Records acknowledged by JetStream so far."""
        self.failures = 0
        """Failed publish attempts so far (each one logged)."""
        self.last_error: str | None = None
        """The last publishing error, ``None`` once publishing succeeds again."""

    def submit(self, record: Record) -> None:
        """Queue ``record`` for publishing and return at once (a full buffer drops its oldest).

        Once :meth:`aclose` was called, records are no longer taken: each is counted
        in :attr:`dropped` instead.
        """
        if self._closing:
            self._buffer.dropped += 1
            return
        self._buffer.append(record)
        self._wakeup.set()

    @property
    def depth(self) -> int:
        """Records received and not yet acknowledged (waiting plus in flight)."""
        return len(self._buffer) + self._in_flight

    @property
    def dropped(self) -> int:
        """Records dropped because the buffer reached ``buffer_limit``."""
        return self._buffer.dropped

    async def start(self) -> None:
        """Start the publisher task (it connects, creates the stream if missing, publishes)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"nats-sink {self.servers}")

    async def aclose(self, timeout: float = 10.0) -> int:
        """Publish what is waiting (retrying for up to ``timeout`` s), disconnect, return losses.

        Records still not acknowledged at the deadline are logged, counted in
        :attr:`dropped` and their number returned. Idempotent.
        """
        lost = 0
        if self._task is not None:
            self._closing = True
            self._close_deadline = time.monotonic() + timeout
            self._wakeup.set()
            # past the deadline the task is cancelled, wherever it waits
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._task, timeout)
            lost = self._buffer.drop_all()
            if lost:
                log.error("NATS %s: closing with %d record(s) not published", self.servers, lost)
        if self._nc is not None:
            with contextlib.suppress(nats.errors.Error):
                await self._nc.close()
        return lost

    async def _run(self) -> None:
        delay = self.retry_initial
        while True:
            if not self._buffer:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            batch = self._buffer.take(self.window)
            self._in_flight = len(batch)
            try:
                js = await self._jetstream()
                failed = await self._publish(js, batch)
            except asyncio.CancelledError:
                self._buffer.restore(batch)
                raise
            # Whatever goes wrong, the records are kept and retried: the sink must
            # outlive any NATS or network failure.
            except Exception as error:
                failed = batch
                self._failed(f"{type(error).__name__}: {error}", len(batch))
            finally:
                self._in_flight = 0
            self.published += len(batch) - len(failed)
            if not failed:
                delay = self.retry_initial
                if self.last_error is not None:
                    log.warning("NATS %s: publishing again", self.servers)
                    self.last_error = None
                continue
            self._buffer.restore(failed)
            remaining = self._close_deadline - time.monotonic()
            if self._closing and remaining <= 0:
                return
            await asyncio.sleep(min(delay, remaining) if self._closing else delay)
            delay = min(delay * 2, self.retry_max)

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
        js = self._nc.jetstream()
        try:
            await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=self.stream, subjects=["qmp.>"], storage=StorageType.FILE)
            log.info("NATS %s: created stream %s", self.servers, self.stream)
        self._js = js
        return js

    async def _publish(self, js: JetStreamContext, batch: list[Record]) -> list[Record]:
        """Publish ``batch`` pipelined; return the records that were not acknowledged."""
        futures: list[asyncio.Future[PubAck]] = []
        try:
            for record in batch:
                headers = {
                    "Nats-Msg-Id": message_id(record),
                    "Qmp-Vm": record.vm,
                    "Qmp-Received-At": repr(_received_at(record)),
                }
                futures.append(
                    await js.publish_async(subject_of(record), _payload(record), headers=headers)
                )
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        done, pending = await asyncio.wait(futures, timeout=self.ack_timeout)
        for future in pending:
            future.cancel()
        failed = [
            record
            for record, future in zip(batch, futures, strict=True)
            if future not in done or future.cancelled() or future.exception() is not None
        ]
        if failed:
            reason = next(
                (
                    f"{type(exc).__name__}: {exc}"
                    for f in done
                    if not f.cancelled() and (exc := f.exception()) is not None
                ),
                f"no acknowledgement within {self.ack_timeout} s",
            )
            self._failed(reason, len(failed))
        return failed

    def _failed(self, reason: str, count: int) -> None:
        self.failures += 1
        self.last_error = reason
        log.error(
            "NATS %s: %d record(s) not published: %s; keeping %d (limit %d, %d dropped so far),"
            " retrying",
            self.servers,
            count,
            reason,
            self.depth + count,
            self._buffer.limit,
            self._buffer.dropped,
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

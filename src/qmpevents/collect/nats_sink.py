"""The NATS JetStream sink: every record published to stream ``QMP_EVENTS``, acknowledged.

Subscribers need nothing but a NATS client. An event goes to ``qmp.<vm>.<EVENT>``
with the bytes QEMU sent as payload, a gap to ``qmp.<vm>._GAP`` as JSON (when it
opens and again when it closes); header ``Qmp-Vm`` is the VM name percent-escaped
(``urllib.parse.unquote`` gives it back exactly), ``Qmp-Received-At`` the receive
time. :mod:`.nats_messages` has the details, and :func:`message_id` the
``Nats-Msg-Id`` derived from the record alone, so that republishing a record after a
lost acknowledgement is dropped by JetStream's de-duplication (within the stream's
duplicate window, 2 minutes by default).

This is the direct path, used when there is no SQLite journal (the collector
always has one and publishes through :class:`~.nats_outbox.NatsOutbox` instead).
Delivery is at least once: a record leaves the local buffer only when JetStream has
acknowledged it. While NATS is unreachable, records wait in a buffer of at most
``buffer_limit`` (the oldest are dropped and counted beyond that) plus one window of
``window`` records in flight, and are retried with backoff; nats-py reconnects
underneath.

A record that can never be published (an event over the server's ``max_payload``,
1 MiB by default; an event name that makes no subject, such as ``""``; one JetStream
refuses, such as one over the stream's ``max_msg_size``) is tried again alone, then
rejected: counted per reason in :attr:`NatsSink.rejected` and logged (:mod:`.rejects`).
It never holds up the records behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from qmpevents.collect.buffer import DropOldestBuffer
from qmpevents.collect.nats_messages import GAP_TOKEN, message_id, subject_of, subject_token
from qmpevents.collect.nats_publish import STREAM, JetStreamPublisher
from qmpevents.collect.records import Record

__all__ = ["GAP_TOKEN", "STREAM", "NatsSink", "message_id", "subject_of", "subject_token"]

log = logging.getLogger(__name__)


class NatsSink(JetStreamPublisher):
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
        super().__init__(
            servers,
            stream=stream,
            ack_timeout=ack_timeout,
            connect_timeout=connect_timeout,
            retry_initial=retry_initial,
            retry_max=retry_max,
            reconnect_wait=reconnect_wait,
        )
        self.window = window
        self._buffer: DropOldestBuffer[Record] = DropOldestBuffer(buffer_limit)
        self._in_flight = 0
        self._wakeup = asyncio.Event()
        self._close_deadline = 0.0
        self._task: asyncio.Task[None] | None = None

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
        """Records dropped because the buffer reached ``buffer_limit`` (or lost at close)."""
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
        await self._disconnect()
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
            if not failed:
                delay = self.retry_initial
                self._recovered()
                continue
            self._buffer.restore(failed)
            remaining = self._close_deadline - time.monotonic()
            if self._closing and remaining <= 0:
                return
            await asyncio.sleep(min(delay, remaining) if self._closing else delay)
            delay = min(delay * 2, self.retry_max)

    def _keeping(self, count: int) -> str:
        return (
            f"keeping {len(self._buffer) + count} (limit {self._buffer.limit},"
            f" {self._buffer.dropped} dropped so far)"
        )

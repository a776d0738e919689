"""A host's part in the fleet: its records published with its name, to a replicated stream.

:class:`HostOutbox` is the :class:`~.nats_outbox.NatsOutbox` (the SQLite journal
published in order, acknowledged, de-duplicated by message id) with two additions:

- every message carries header ``Qmp-Host`` (the collector's ``--host``,
  percent-escaped as ``Qmp-Vm`` is), so that the central archive knows where each
  record comes from;
- the stream is created, or updated, with ``replicas`` copies (a NATS cluster of
  at least that many servers keeps it through the loss of a minority of them).

:func:`ensure_stream` is what the archive uses too.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import PubAck, StorageType, StreamConfig

from qmpevents.collect.names import percent_escape
from qmpevents.collect.nats_outbox import Journal, NatsOutbox
from qmpevents.sources.nats_subjects import HOST_HEADER, STREAM

__all__ = ["HostJetStream", "HostOutbox", "ensure_stream"]

log = logging.getLogger(__name__)


async def ensure_stream(js: JetStreamContext, stream: str = STREAM, replicas: int = 1) -> int:
    """Create ``stream`` (subjects ``qmp.>``, file storage, ``replicas``) or update its replicas.

    Returns the stream's ``max_msg_size`` (``-1``: none). A stream that has more
    replicas than asked for keeps them (another collector asked for more).
    """
    try:
        info = await js.stream_info(stream)
    except nats.js.errors.NotFoundError:
        try:
            await js.add_stream(
                name=stream, subjects=["qmp.>"], storage=StorageType.FILE, num_replicas=replicas
            )
            log.info("NATS: created stream %s with %d replica(s)", stream, replicas)
            return -1
        except nats.js.errors.BadRequestError:  # created meanwhile by another collector
            info = await js.stream_info(stream)
    if (info.config.num_replicas or 1) < replicas:
        config: StreamConfig = info.config
        config.num_replicas = replicas
        await js.update_stream(config)
        log.info("NATS: stream %s now has %d replica(s)", stream, replicas)
    return info.config.max_msg_size or -1


class HostJetStream(JetStreamContext):
    """A JetStream context that adds header ``Qmp-Host`` to everything it publishes."""

    def __init__(self, nc: Client, host: str, **options: Any) -> None:
        super().__init__(nc, **options)
        self.host_header = percent_escape(host)

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        timeout: float | None = None,
        stream: str | None = None,
        headers: dict[str, Any] | None = None,
        msg_ttl: float | None = None,
    ) -> PubAck:
        return await super().publish(
            subject, payload, timeout, stream, self._stamped(headers), msg_ttl
        )

    async def publish_async(
        self,
        subject: str,
        payload: bytes = b"",
        wait_stall: float | None = None,
        stream: str | None = None,
        headers: dict[Any, Any] | None = None,
        msg_ttl: float | None = None,
    ) -> asyncio.Future[PubAck]:
        return await super().publish_async(
            subject, payload, wait_stall, stream, self._stamped(headers), msg_ttl
        )

    def _stamped(self, headers: dict[str, Any] | None) -> dict[str, Any]:
        return {**(headers or {}), HOST_HEADER: self.host_header}


class HostOutbox(NatsOutbox):
    """The NATS outbox of collector ``host``, to a stream of ``replicas``; see the module doc."""

    def __init__(
        self,
        servers: str | list[str],
        journal: Journal,
        *,
        host: str,
        replicas: int = 1,
        **options: Any,
    ) -> None:
        super().__init__(servers, journal, **options)
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        self.host = host
        self.replicas = replicas

    async def _bind_stream(self, nc: Client) -> JetStreamContext:
        """The stream created or grown to ``replicas``; every publish carries ``Qmp-Host``."""
        js = HostJetStream(nc, self.host)
        self._max_msg_size = await ensure_stream(js, self.stream, self.replicas)
        return js

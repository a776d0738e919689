"""The live stream of the page (Server-Sent Events): new events and gaps, tailed from SQLite.

One :class:`Tail` per server reads what was committed since its last look, every
``interval`` seconds, and hands it to each subscriber whose filters match. Reading the
journal rather than the fan-out means the page shows exactly what is stored (a mark
can always be opened), and the same stream works over a database another process is
writing (``qmpevents ui``). A subscriber that does not keep up (its bounded queue is
full) gets a ``reset`` message instead of what it missed, and reloads its view.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import logging
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from qmpevents.collect.sqlite_schema import connect
from qmpevents.collect.web_api import held_back
from qmpevents.errors import ConfigError

__all__ = ["Subscriber", "Tail"]

log = logging.getLogger(__name__)
_QUEUE = 2000
_ROWS = 5000  # events read per look at most; the rest comes at the next one


@dataclass(eq=False)
class Subscriber:
    """One stream: its filters and the encoded SSE messages waiting for it (``None``: end)."""

    vm: str | None
    events: tuple[str, ...]
    queue: asyncio.Queue[bytes | None] = field(
        default_factory=lambda: asyncio.Queue[bytes | None](_QUEUE)
    )
    lagging: bool = False

    def wants(self, vm: str, name: str | None) -> bool:
        """Whether a record of ``vm`` (an event ``name``, or a gap: ``None``) is for it."""
        if self.vm is not None and not fnmatch.fnmatchcase(vm, self.vm):
            return False
        if name is None or not self.events:
            return True
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.events)

    def offer(self, message: bytes) -> None:
        if self.lagging:
            return
        try:
            self.queue.put_nowait(message)
        except asyncio.QueueFull:
            self.lagging = True
            with contextlib.suppress(asyncio.QueueEmpty):
                self.queue.get_nowait()
            self.queue.put_nowait(b"event: reset\ndata: {}\n\n")


def sse(kind: str, payload: Any) -> bytes:
    """One Server-Sent Events message."""
    return b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode(payload) + b"\n\n"


class Tail:
    """Follows the history at ``path`` for the subscribers; see the module docstring."""

    def __init__(
        self, path: Path, *, interval: float = 0.25, clock: Callable[[], float] | None = None
    ) -> None:
        self.path = path
        self.interval = interval
        self.subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._started = False
        self.ready = asyncio.Event()  # set once the first look has fixed where new begins
        self._last_event = -1
        self._last_gap = -1
        self._gaps: dict[int, float | None] = {}  # gap id -> ended as last sent (open ones)

    def subscribe(self, vm: str | None, events: tuple[str, ...]) -> Subscriber:
        """A new stream; the tail starts with the first one."""
        subscriber = Subscriber(vm, events)
        self.subscribers.add(subscriber)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="web tail")
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)

    async def aclose(self) -> None:
        """End every stream and stop tailing."""
        for subscriber in self.subscribers:
            subscriber.lagging = False
            with contextlib.suppress(asyncio.QueueFull):
                subscriber.queue.put_nowait(None)
        self.subscribers.clear()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while self.subscribers:
            try:
                messages = await asyncio.to_thread(self._look)
                self.ready.set()
            except (sqlite3.Error, ConfigError) as error:
                log.debug("web tail of %s: %s", self.path, error)
                messages = []
            for vm, name, message in messages:
                for subscriber in list(self.subscribers):
                    if subscriber.wants(vm, name):
                        subscriber.offer(message)
            await asyncio.sleep(self.interval)

    def _look(self) -> list[tuple[str, str | None, bytes]]:
        # A connection per look: it is made in whichever worker thread runs this.
        conn = connect(self.path, readonly=True)
        try:
            return self._read(conn)
        finally:
            conn.close()

    def _read(self, conn: sqlite3.Connection) -> list[tuple[str, str | None, bytes]]:
        if not self._started:
            (self._last_event,) = conn.execute("SELECT IFNULL(MAX(id), 0) FROM events").fetchone()
            (self._last_gap,) = conn.execute("SELECT IFNULL(MAX(id), 0) FROM gaps").fetchone()
            self._gaps = {
                gap_id: None
                for (gap_id,) in conn.execute("SELECT id FROM gaps WHERE ended IS NULL")
            }
            self._started = True
        found: list[tuple[str, str | None, bytes]] = []
        for row_id, vm, name, ts, received in conn.execute(
            "SELECT id, vm, name, qemu_ts, received_at FROM events"
            " WHERE id > ? ORDER BY id LIMIT ?",
            (self._last_event, _ROWS),
        ):
            self._last_event = row_id
            payload = {
                "id": row_id,
                "vm": vm,
                "event": name,
                "timestamp": ts,
                "held": held_back(name, ts, received),
            }
            found.append((vm, name, sse("event", payload)))
        watched = list(self._gaps)
        rows = conn.execute(
            "SELECT id, vm, started, ended, reason FROM gaps WHERE id > ?", (self._last_gap,)
        ).fetchall()
        for start in range(0, len(watched), 500):
            chunk = watched[start : start + 500]
            rows += conn.execute(
                "SELECT id, vm, started, ended, reason FROM gaps WHERE ended IS NOT NULL"
                f" AND id IN ({','.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
        for gap_id, vm, started, ended, reason in rows:
            self._last_gap = max(self._last_gap, gap_id)
            if ended is None:
                self._gaps[gap_id] = None
            else:
                self._gaps.pop(gap_id, None)
            payload = {"vm": vm, "started": started, "ended": ended, "reason": reason}
            found.append((vm, None, sse("gap", payload)))
        return found

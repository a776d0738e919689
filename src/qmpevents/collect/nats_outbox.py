"""NATS fed from the SQLite journal: the outbox.

With an SQLite history, the history is the journal (:mod:`.outbox_journal`) and NATS
is fed from it: :class:`NatsOutbox` reads committed records in journal order, in
pages of at most ``page_size`` (memory stays bounded whatever the backlog), publishes
each page acknowledged (:class:`~.nats_publish.JetStreamPublisher`, message ids for
de-duplication), and moves its cursor, in the same database, past the page only once
every record of it is acknowledged or rejected. It publishes nothing more until that
cursor is stored, so at most one page is ever published ahead of it.

- NATS away: the page is retried with backoff; the records behind it wait in the
  journal, not in memory, for as long as it takes. :attr:`NatsOutbox.backlog` (the
  ``qmpevents_nats_backlog`` gauge) says how many.
- Stopping: :meth:`NatsOutbox.aclose` never waits for an unreachable NATS. When the
  last publish succeeded it lets the publisher catch up for at most ``drain`` seconds;
  otherwise, or after that, it stops at once. What is left stays in the journal.
- Restarting: the publisher resumes at the stored cursor. The page that was being
  published when the process died (SIGKILL) is published again, and JetStream drops
  the copies it already has by message id (within the stream's duplicate window, 2
  minutes by default: a collector that stays down longer may publish that page twice).
- A record NATS can never take is rejected and counted (:mod:`.rejects`); the cursor
  moves past it. A record SQLite rejected is not in the journal and is not published.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from qmpevents.collect.nats_publish import STREAM, JetStreamPublisher, describe
from qmpevents.collect.outbox_journal import (
    Cursor,
    Page,
    ensure_cursor,
    read_page,
    store_cursor,
)
from qmpevents.collect.records import Record
from qmpevents.collect.sqlite_schema import connect

__all__ = ["CONSUMER", "Journal", "NatsOutbox"]

log = logging.getLogger(__name__)

CONSUMER = "nats"
"""The outbox cursor's name in ``outbox_cursor``."""

T = TypeVar("T")


class Journal(Protocol):
    """What the outbox needs of the SQLite sink (:class:`~.sqlite_store.SQLiteStore`)."""

    path: Path
    journal_tail: Cursor
    on_commit: Callable[[], None] | None


class NatsOutbox(JetStreamPublisher):
    """Publishes the journal of ``journal`` to JetStream at ``servers``; see the module doc.

    It looks like a sink to the metrics (``depth`` is the backlog) but takes no
    records: the fan-out gives them to SQLite only.
    """

    def __init__(
        self,
        servers: str | list[str],
        journal: Journal,
        *,
        stream: str = STREAM,
        page_size: int = 500,
        poll: float = 1.0,
        drain: float = 1.0,
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
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {page_size}")
        self.journal = journal
        self.page_size = page_size
        self.poll = poll
        self.drain = drain
        self.cursor = Cursor()
        """The position published and stored so far."""
        self._conn: sqlite3.Connection | None = None
        self._db_lock = threading.Lock()  # one statement at a time on the connection
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # --- what the metrics read --------------------------------------------------------

    @property
    def backlog(self) -> int:
        """Records committed to the journal and not yet published (or rejected)."""
        return self.cursor.behind(self.journal.journal_tail)

    @property
    def depth(self) -> int:
        """The backlog: records waiting, in the journal, to be published."""
        return self.backlog

    @property
    def dropped(self) -> int:
        """Always 0: what is not published stays in the journal."""
        return 0

    def submit(self, record: Record) -> None:
        """Not used: records reach the outbox through the journal."""
        raise TypeError("the NATS outbox reads the SQLite journal; submit to SQLite")

    # --- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the journal, read (or create) the cursor, start publishing.

        Returns at once even when NATS is down (the publisher keeps trying). Raises
        what SQLite raises if the journal cannot be opened.
        """
        if self._task is not None:
            return
        self.cursor = await self._db(self._open)
        loop = asyncio.get_running_loop()

        def committed() -> None:  # the writer thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody to wake
                loop.call_soon_threadsafe(self._wakeup.set)

        self.journal.on_commit = committed
        self._task = asyncio.create_task(self._run(), name=f"nats-outbox {self.servers}")

    def _open(self) -> Cursor:
        self._conn = connect(self.journal.path)
        self._conn.execute("PRAGMA busy_timeout = 2000")
        return ensure_cursor(self._conn, CONSUMER)

    async def aclose(self, drain: float | None = None) -> int:
        """Stop publishing: at once if NATS is not healthy, else within ``drain`` seconds.

        Returns the backlog left in the journal (published by the next start; not
        lost). Idempotent.
        """
        drain = self.drain if drain is None else drain
        task, self._task = self._task, None
        if task is not None:
            self._closing = True
            if self.healthy and self.backlog and drain > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._caught_up(), drain)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            self.journal.on_commit = None
        await self._disconnect()
        if self._conn is not None:
            await self._db(self._close_db)
        left = self.backlog
        if left:
            log.warning(
                "NATS %s: %d record(s) not yet published stay in the journal %s; the next"
                " start publishes them",
                self.servers,
                left,
                self.journal.path,
            )
        return left

    async def _caught_up(self) -> None:
        while self.backlog and self.healthy:
            await asyncio.sleep(0.01)

    def _close_db(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    # --- the publisher ----------------------------------------------------------------

    async def _db(self, call: Callable[..., T], *args: object) -> T:
        """Run ``call(*args)`` in a thread, one at a time on the journal connection."""

        def locked() -> T:
            with self._db_lock:
                return call(*args)

        return await asyncio.to_thread(locked)

    def _read(self, cursor: Cursor) -> Page:
        assert self._conn is not None
        return read_page(self._conn, cursor, self.page_size)

    def _store(self, cursor: Cursor) -> None:
        assert self._conn is not None
        store_cursor(self._conn, CONSUMER, cursor)

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()  # before reading: a commit from now on wakes us again
            try:
                page = await self._db(self._read, self.cursor)
            except Exception as error:  # never die silently: log, count, retry
                await self._journal_failed("cannot read the journal", error)
                continue
            if not page.records:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), self.poll)
                continue
            await self._publish_page(page.records)
            await self._advance(page.cursor)

    async def _publish_page(self, records: list[Record]) -> None:
        """Publish ``records`` until each one is acknowledged or rejected."""
        delay = self.retry_initial
        pending = records
        while True:
            try:
                js = await self._jetstream()
                pending = await self._publish(js, pending)
            # Whatever goes wrong, the page is kept and retried: the publisher must
            # outlive any NATS or network failure.
            except Exception as error:
                self._failed(describe(error), len(pending))
            if not pending:
                self._recovered()
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max)

    async def _advance(self, cursor: Cursor) -> None:
        """Store ``cursor``, retrying until it is stored (nothing is published meanwhile)."""
        while True:
            try:
                await self._db(self._store, cursor)
            except Exception as error:
                await self._journal_failed("cannot store the outbox cursor", error)
                continue
            self.cursor = cursor
            return

    async def _journal_failed(self, what: str, error: BaseException) -> None:
        self.failures += 1
        log.error("NATS outbox %s: %s: %s, retrying", self.journal.path, what, describe(error))
        await asyncio.sleep(self.retry_max / 4)

    def _keeping(self, count: int) -> str:
        return f"{self.backlog} record(s) wait in the journal"

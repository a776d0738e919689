"""The SQLite sink: every record into a local history database, in batches, off the event loop.

How much a crash can lose, and how that is bounded (the numbers are the defaults of
:class:`BatchPolicy`, both configurable):

- Records are committed in batches of at most ``size`` (1000) records, and no record
  waits more than ``interval`` (0.5 s) for its batch to start. One transaction per
  batch; WAL with ``synchronous=NORMAL``, so a commit survives the death of the
  process.
- On :meth:`SQLiteStore.close` (what SIGTERM/SIGINT lead to) everything submitted is
  committed before it returns.
- After SIGKILL, what is lost is what was not yet committed: the batch being written
  and the records that arrived while it was written, so at most ``2 × size``
  records and ``interval`` plus one commit time of traffic, as long as the disk
  keeps up. While the disk refuses writes the backlog grows up to ``buffer_limit``
  instead, and a SIGKILL then loses that backlog.
- When the disk is full or the path unwritable, the error is logged, the backlog is
  kept (bounded by ``buffer_limit``: beyond it the oldest records are dropped and
  counted in :attr:`SQLiteStore.dropped`), and the write is retried with
  exponential backoff until it succeeds. Nothing raises into the caller.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qmpevents.collect.buffer import DropOldestBuffer
from qmpevents.collect.history import EventCount, History
from qmpevents.collect.records import EventRecord, GapRecord, Record
from qmpevents.collect.sqlite_schema import connect, default_db_path
from qmpevents.errors import ConfigError

__all__ = ["BatchPolicy", "SQLiteStore"]

log = logging.getLogger(__name__)

_INSERT_EVENT = (
    "INSERT INTO events (vm, name, qemu_seconds, qemu_micros, qemu_ts, received_at, raw)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
# A gap is opened, then closed with the same (vm, started): the second write updates.
_UPSERT_GAP = (
    "INSERT INTO gaps (vm, started, ended, reason) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (vm, started) DO UPDATE SET ended = excluded.ended, reason = excluded.reason"
)


@dataclass(frozen=True)
class BatchPolicy:
    """When a batch is written: ``size`` records are waiting, or the oldest waited ``interval``."""

    size: int = 1000
    interval: float = 0.5

    def __post_init__(self) -> None:
        if self.size < 1 or self.interval < 0:
            raise ValueError(f"batch size must be >= 1 and interval >= 0, got {self}")

    def due(self, pending: int, oldest_at: float | None, now: float) -> bool:
        """Whether ``pending`` records, the oldest received at ``oldest_at``, must go now."""
        if pending >= self.size:
            return True
        return oldest_at is not None and now - oldest_at >= self.interval

    def wait(self, oldest_at: float | None, now: float) -> float | None:
        """How long until the pending records are due by time (``None``: nothing pending)."""
        if oldest_at is None:
            return None
        return max(0.0, oldest_at + self.interval - now)


class SQLiteStore:
    """A sink that writes records to the SQLite history at ``path`` from its own thread.

    :meth:`submit` never blocks and never raises for storage reasons; the writer
    thread commits batches per ``batching`` (see the module docstring for what a
    crash can lose). ``path`` defaults to :func:`~.sqlite_schema.default_db_path`.
    """

    name = "sqlite"

    def __init__(
        self,
        path: Path | None = None,
        *,
        batching: BatchPolicy | None = None,
        buffer_limit: int = 100_000,
        retry_initial: float = 0.5,
        retry_max: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path if path is not None else default_db_path()
        self.batching = batching or BatchPolicy()
        if buffer_limit < self.batching.size:
            raise ValueError("buffer_limit must hold at least one batch")
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self._clock = clock
        self._cond = threading.Condition()
        # (arrival time on self._clock, record), oldest first
        self._buffer: DropOldestBuffer[tuple[float, Record]] = DropOldestBuffer(buffer_limit)
        self._in_flight = 0
        self._flush_wanted = False
        self._closing = False
        self._close_deadline = 0.0
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()
        self._open_error: ConfigError | None = None
        self._conn: sqlite3.Connection | None = None
        self._abandoned = 0
        self.committed = 0
        """Records committed so far."""
        self.failures = 0
        """Failed write attempts so far (each one logged)."""
        self.last_error: str | None = None
        """The last storage error, ``None`` once a write succeeds again."""

    # --- the producer side (any thread, typically the event loop) ---------------------

    def submit(self, record: Record) -> None:
        """Queue ``record`` for writing and return at once (a full backlog drops its oldest).

        Once :meth:`close` was called, records are no longer taken: each is counted
        in :attr:`dropped` instead.
        """
        with self._cond:
            if self._closing:
                self._buffer.dropped += 1
                return
            self._buffer.append((self._clock(), record))
            if len(self._buffer) >= self.batching.size or len(self._buffer) == 1:
                # a full batch goes now; a first record arms the interval timer
                self._cond.notify_all()

    @property
    def depth(self) -> int:
        """Records received and not yet committed (waiting plus being written)."""
        return len(self._buffer) + self._in_flight

    @property
    def dropped(self) -> int:
        """Records dropped because the backlog reached ``buffer_limit``."""
        return self._buffer.dropped

    # --- lifecycle --------------------------------------------------------------------

    def open(self) -> None:
        """Start the writer thread and wait for its first attempt to open the database.

        Raises :class:`~qmpevents.errors.ConfigError` if the database was written by a
        newer qmpevents. Any other failure (unwritable path, full disk) is logged and
        retried by the writer; records are accepted meanwhile.
        """
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=f"sqlite-writer {self.path}")
        self._thread.daemon = True
        self._thread.start()
        self._opened.wait()
        if self._open_error is not None:
            self._thread.join()
            raise self._open_error

    def flush(self, timeout: float | None = None) -> bool:
        """Write everything submitted so far now; True once it is committed within ``timeout``."""
        with self._cond:
            self._flush_wanted = True
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self.depth == 0, timeout)

    def close(self, timeout: float = 30.0) -> int:
        """Commit everything submitted, stop the writer, and return how many records were lost.

        While storage keeps failing, writes are retried for up to ``timeout`` seconds;
        what is still not stored then is logged as an error, counted in
        :attr:`dropped` and returned. Idempotent.
        """
        thread = self._thread
        if thread is None:
            return 0
        with self._cond:
            self._closing = True
            self._close_deadline = self._clock() + timeout
            self._cond.notify_all()
        thread.join()
        return self._abandoned

    async def start(self) -> None:
        """:meth:`open` without blocking the event loop."""
        await asyncio.to_thread(self.open)

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self.close)

    # --- reading ----------------------------------------------------------------------

    def query(
        self,
        vm: str | None = None,
        event: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> list[Record]:
        """What is committed so far; see :func:`~.history.query`."""
        with History(self.path) as history:
            return history.query(vm=vm, event=event, since=since, until=until, limit=limit)

    def stats(self, since: float | None = None, until: float | None = None) -> list[EventCount]:
        """Committed event counts per (VM, event); see :func:`~.history.stats`."""
        with History(self.path) as history:
            return history.stats(since=since, until=until)

    # --- the writer thread ------------------------------------------------------------

    def _run(self) -> None:
        self._try_connect()
        self._opened.set()
        if self._open_error is not None:
            return
        delay = self.retry_initial
        retry_at: float | None = None
        while True:
            with self._cond:
                batch = self._next_batch(retry_at)
                if batch is None:
                    break
            if self._write([record for _, record in batch]):
                delay = self.retry_initial
                retry_at = None
                with self._cond:
                    self._in_flight = 0
                    self.committed += len(batch)
                    self._cond.notify_all()
                continue
            with self._cond:
                self._in_flight = 0
                self._buffer.restore(batch)
                if self._closing and self._clock() >= self._close_deadline:
                    self._abandon()
                    break
                retry_at = self._clock() + delay
            delay = min(delay * 2, self.retry_max)
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _next_batch(self, retry_at: float | None) -> list[tuple[float, Record]] | None:
        """Wait (holding the condition) until a batch is due; None when closed and empty.

        After a failure (``retry_at`` set) only the backoff decides, cut short by the
        close deadline; otherwise the batch policy, a flush or closing does.
        """
        while True:
            now = self._clock()
            pending = len(self._buffer)
            if self._closing and pending == 0:
                return None
            wait: float | None
            if retry_at is not None:
                until = min(retry_at, self._close_deadline) if self._closing else retry_at
                wait = until - now
                if wait <= 0:
                    break
            else:
                oldest_at = self._buffer.oldest()[0] if pending else None
                if (
                    self._closing
                    or self._flush_wanted
                    or self.batching.due(pending, oldest_at, now)
                ):
                    break
                wait = self.batching.wait(oldest_at, now)
            self._cond.wait(wait)
        batch = self._buffer.take(self.batching.size)
        if not self._buffer:
            self._flush_wanted = False
        self._in_flight = len(batch)
        return batch

    def _abandon(self) -> None:
        self._abandoned = self._buffer.drop_all()
        log.error(
            "SQLite history %s: closing with %d record(s) not stored: %s",
            self.path,
            self._abandoned,
            self.last_error,
        )
        self._cond.notify_all()

    def _try_connect(self) -> bool:
        if self._conn is not None:
            return True
        try:
            self._conn = connect(self.path)
        except ConfigError as error:
            if not self._opened.is_set():
                self._open_error = error
            self._failed(error)
            return False
        except (sqlite3.Error, OSError) as error:
            self._failed(error)
            return False
        return True

    def _write(self, records: list[Record]) -> bool:
        if not records:
            return True
        if not self._try_connect():
            return False
        assert self._conn is not None
        events = [
            (r.vm, r.name, r.qemu_seconds, r.qemu_micros, r.qemu_ts, r.received_at, r.raw)
            for r in records
            if isinstance(r, EventRecord)
        ]
        gaps = [(r.vm, r.started, r.ended, r.reason) for r in records if isinstance(r, GapRecord)]
        try:
            self._conn.execute("BEGIN")
            self._conn.executemany(_INSERT_EVENT, events)
            self._conn.executemany(_UPSERT_GAP, gaps)
            self._conn.execute("COMMIT")
        except sqlite3.Error as error:
            # The connection may be unusable after an I/O error: start afresh next time.
            self._conn.close()
            self._conn = None
            self._failed(error)
            return False
        if self.last_error is not None:
            log.warning(
                "SQLite history %s: writing again after %d failed attempt(s)",
                self.path,
                self.failures,
            )
            self.last_error = None
        return True

    def _failed(self, error: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(error).__name__}: {error}"
        log.error(
            "SQLite history %s: cannot write: %s; keeping %d record(s) (limit %d, %d dropped"
            " so far), retrying",
            self.path,
            self.last_error,
            self.depth,
            self._buffer.limit,
            self._buffer.dropped,
        )

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
- A record SQLite refuses for its own sake (a constraint, text that is not UTF-8, a
  value out of range) is tried again alone, then rejected (counted per reason in
  :attr:`SQLiteStore.rejected`, see :mod:`.rejects`); the records around it are
  committed (:mod:`.sqlite_batches`).
- The writer thread survives any exception: an unexpected one is logged with its
  traceback, counted in :attr:`SQLiteStore.failures` and retried like a storage error.

Each VM's connection state (:meth:`SQLiteStore.submit_state`) goes the same way,
in order with the records and in the transaction of the gap it opens or closes, into
the table ``connections`` (created on an older history by the writer's first
connection, :func:`~.sqlite_schema.migrate_connections`). After SIGKILL it says
which VMs the dead collector was receiving from (:meth:`~.history.History.left_connected`).
A state counts as one record in :attr:`~SQLiteStore.committed`,
:attr:`~SQLiteStore.depth` and :attr:`~SQLiteStore.dropped`.

With ``refuse_unwritable``, :meth:`SQLiteStore.open` raises
:class:`~qmpevents.errors.ConfigError` when the database cannot be opened for writing
at all (a directory, a path under a regular file, ``/proc``): what the collector wants
at startup, where such a path is a mistake rather than an outage.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from qmpevents.collect.buffer import DropOldestBuffer
from qmpevents.collect.history import EventCount, History
from qmpevents.collect.outbox_journal import Cursor, journal_tail
from qmpevents.collect.records import ConnectionState, Record
from qmpevents.collect.rejects import Rejections
from qmpevents.collect.sqlite_batches import (
    SQLITE_REASONS,
    BatchPolicy,
    Written,
    is_storage_error,
    write_batch,
)
from qmpevents.collect.sqlite_schema import (
    connect,
    default_db_path,
    migrate_connections,
    unwritable_reason,
)
from qmpevents.errors import ConfigError

__all__ = ["BatchPolicy", "SQLiteStore"]

log = logging.getLogger(__name__)


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
        refuse_unwritable: bool = False,
    ) -> None:
        self.path = path if path is not None else default_db_path()
        self.batching = batching or BatchPolicy()
        if buffer_limit < self.batching.size:
            raise ValueError("buffer_limit must hold at least one batch")
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.refuse_unwritable = refuse_unwritable
        self._clock = clock
        self._cond = threading.Condition()
        # (arrival time on self._clock, record), oldest first
        self._buffer: DropOldestBuffer[tuple[float, Written]] = DropOldestBuffer(buffer_limit)
        self._in_flight = 0
        self._flush_wanted = False
        self._closing = False
        self._close_deadline = 0.0
        self._thread: threading.Thread | None = None
        self._opened = threading.Event()
        self._open_error: ConfigError | None = None
        self._conn: sqlite3.Connection | None = None
        self._abandoned = 0
        self._delay = retry_initial
        self._retry_at: float | None = None
        self.committed = 0
        """Records committed so far."""
        self.failures = 0
        """Failed write attempts so far, unexpected errors included (each one logged)."""
        self.last_error: str | None = None
        """The last storage error, ``None`` once a write succeeds again."""
        self.rejections = Rejections(self.name, SQLITE_REASONS)
        """The records SQLite refused for their own sake (see :mod:`.rejects`)."""
        self.journal_tail = Cursor()
        """Where the journal (:mod:`.outbox_journal`) ends, as of the last commit."""
        self.on_commit: Callable[[], None] | None = None
        """Called from the writer thread after each commit (say, to wake the outbox)."""

    # --- the producer side (any thread, typically the event loop) ---------------------

    def submit(self, record: Record) -> None:
        """Queue ``record`` for writing and return at once (a full backlog drops its oldest).

        Once :meth:`close` was called, records are no longer taken: each is counted
        in :attr:`dropped` instead.
        """
        self._take(record)

    def submit_state(self, state: ConnectionState) -> None:
        """Queue a VM's connection ``state`` (and its gap) as :meth:`submit` queues a record."""
        self._take(state)

    def _take(self, record: Written) -> None:
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
        """Records dropped because the backlog reached ``buffer_limit`` (or lost at close)."""
        return self._buffer.dropped

    @property
    def rejected(self) -> dict[str, int]:
        """Records refused for their own sake, per reason."""
        return self.rejections.counts

    # --- lifecycle --------------------------------------------------------------------

    def open(self) -> None:
        """Start the writer thread and wait for its first attempt to open the database.

        Raises :class:`~qmpevents.errors.ConfigError` if the database was written by a
        newer qmpevents or another program, and, with ``refuse_unwritable``, if it
        cannot be opened for writing. Any other failure (unwritable path, full disk) is
        logged and retried by the writer; records are accepted meanwhile.
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
        try:
            self._first_connect()
        finally:
            self._opened.set()  # open() never waits for ever, whatever happened
        if self._open_error is not None:
            return
        try:
            while True:
                try:
                    if not self._step():
                        break
                except Exception as error:  # a bug: say it, count it, keep writing
                    if not self._unexpected(error):
                        break
        finally:
            self._reset_connection()

    def _step(self) -> bool:
        """Write the next batch when it is due; False once closed and done."""
        with self._cond:
            batch = self._next_batch(self._retry_at)
            if batch is None:
                return False
        try:
            committed = self._write([record for _, record in batch])
        except Exception as error:
            return self._write_failed(error, batch)
        self._delay = self.retry_initial
        self._retry_at = None
        with self._cond:
            self._in_flight = 0  # rejected records are done with too
            self.committed += committed
            self._cond.notify_all()
        if self.on_commit is not None:
            self.on_commit()
        return True

    def _write_failed(self, error: Exception, batch: list[tuple[float, Written]]) -> bool:
        """Keep ``batch`` for a retry after the backoff; False when closing gives up."""
        with self._cond:
            self._in_flight = 0
            self._buffer.restore(batch)
            self._failed(error)
            if self._closing and self._clock() >= self._close_deadline:
                self._abandon()
                return False
            self._retry_at = self._clock() + self._delay
        self._delay = min(self._delay * 2, self.retry_max)
        return True

    def _unexpected(self, error: Exception) -> bool:
        """After an error outside any write: back off (never a busy loop); False to give up.

        It gives up only when closing and past the close deadline, like a failing write.
        """
        log.error("SQLite history %s: writer error, continuing", self.path, exc_info=error)
        with self._cond:
            self.failures += 1
            self._in_flight = 0
            if self._closing and self._clock() >= self._close_deadline:
                self._abandon()
                return False
            self._cond.wait(self._delay)
        self._delay = min(self._delay * 2, self.retry_max)
        return True

    def _next_batch(self, retry_at: float | None) -> list[tuple[float, Written]] | None:
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

    def _first_connect(self) -> None:
        try:
            self._conn = self._connect()
            self.journal_tail = journal_tail(self._conn)
        except ConfigError as error:
            self._open_error = error
        except Exception as error:
            if self.refuse_unwritable:
                self._open_error = ConfigError(
                    f"{self.path}: cannot write the history database: "
                    f"{unwritable_reason(self.path, error)}"
                )
            else:
                self._failed(error)

    def _connect(self) -> sqlite3.Connection:
        """A writable connection to the history, its connection states created if missing."""
        conn = connect(self.path)
        try:
            migrate_connections(conn)
        except BaseException:
            conn.close()
            raise
        return conn

    def _write(self, records: list[Written]) -> int:
        """Commit ``records`` (rejecting those SQLite refuses); return how many were committed."""
        if not records:
            return 0
        if self._conn is None:
            self._conn = self._connect()
        try:
            outcome = write_batch(self._conn, records)
        except Exception:
            # The connection may be unusable after an I/O error: start afresh next time.
            self._reset_connection()
            raise
        self.journal_tail = outcome.tail or self.journal_tail
        for record, reason, detail in outcome.rejected:
            self.rejections.add(record, reason, detail)
        if self.last_error is not None:
            log.warning(
                "SQLite history %s: writing again after %d failed attempt(s)",
                self.path,
                self.failures,
            )
            self.last_error = None
        return outcome.committed

    def _reset_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

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
            # a traceback only for what neither storage nor configuration explains: a bug
            exc_info=None if is_storage_error(error) or isinstance(error, ConfigError) else error,
        )

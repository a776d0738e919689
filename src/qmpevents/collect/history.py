"""Reading the recorded history back: events and gaps in time order, counts per VM and event.

The time of an event is QEMU's timestamp (when QEMU created it; a rate-limited
event can arrive up to a second later). The time of a gap is the collector's
clock. Both are seconds since the epoch.

A central archive (:mod:`.archive`) knows each record's host: its records come
back with ``host`` set, and ``host=`` filters on it (a host's own history has no
hosts: nothing matches a host filter there).
"""

from __future__ import annotations

import heapq
import itertools
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from qmpevents.collect.actions.store import read_actions
from qmpevents.collect.records import EventRecord, GapRecord, Record
from qmpevents.collect.sqlite_schema import (
    LATEST_GAP_STATE,
    connect,
    has_archive,
    has_connections,
)

__all__ = ["EventCount", "History", "left_connected", "open_gaps", "query", "stats"]


class EventCount(msgspec.Struct, frozen=True, gc=False):
    """How many ``name`` events ``vm`` had in the range asked for."""

    vm: str
    name: str
    count: int


class History:
    """Queries over one history database, read-only; usable while a collector writes it.

    Raises ``sqlite3.OperationalError`` when the database does not exist or cannot
    be read, :class:`~qmpevents.errors.ConfigError` when it is newer than this code.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn = connect(path, readonly=True)

    def close(self) -> None:
        """Release the database."""
        self._conn.close()

    def __enter__(self) -> History:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def query(
        self,
        vm: str | None = None,
        event: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
        host: str | None = None,
    ) -> list[Record]:
        """See :func:`query`."""
        return query(
            self._conn, vm=vm, event=event, since=since, until=until, limit=limit, host=host
        )

    def iter_query(
        self,
        vm: str | None = None,
        event: str | None = None,
        since: float | None = None,
        until: float | None = None,
        host: str | None = None,
    ) -> Iterator[Record]:
        """See :func:`iter_query`: the records as they are read (bounded memory)."""
        return iter_query(self._conn, vm=vm, event=event, since=since, until=until, host=host)

    def stats(
        self, since: float | None = None, until: float | None = None, host: str | None = None
    ) -> list[EventCount]:
        """See :func:`stats`."""
        return stats(self._conn, since=since, until=until, host=host)

    def open_gaps(self) -> list[GapRecord]:
        """See :func:`open_gaps`."""
        return open_gaps(self._conn)

    def left_connected(self) -> list[tuple[str, float]]:
        """See :func:`left_connected`."""
        return left_connected(self._conn)

    def actions(self) -> list[dict[str, Any]]:
        """The action runs recorded (see :func:`~.actions.store.read_actions`), oldest first."""
        return read_actions(self._conn)


def _where(conditions: list[tuple[str, object]]) -> tuple[str, list[object]]:
    if not conditions:
        return "", []
    return " WHERE " + " AND ".join(sql for sql, _ in conditions), [v for _, v in conditions]


def query(
    conn: sqlite3.Connection,
    *,
    vm: str | None = None,
    event: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
    host: str | None = None,
) -> list[Record]:
    """:func:`iter_query` as a list (its ``limit`` first records, if given)."""
    records = iter_query(conn, vm=vm, event=event, since=since, until=until, host=host, limit=limit)
    return list(itertools.islice(records, limit))


def iter_query(
    conn: sqlite3.Connection,
    *,
    vm: str | None = None,
    event: str | None = None,
    since: float | None = None,
    until: float | None = None,
    limit: int | None = None,
    host: str | None = None,
) -> Iterator[Record]:
    """Events and gaps of ``vm`` (all VMs if ``None``) in ``[since, until]``, oldest first.

    Lazily: rows are read from SQLite as they are consumed (two cursors, merged), so
    a history of any size is written out in bounded memory.

    ``event`` restricts events to that name and leaves gaps out (a gap is not an
    event of any name). A gap is included when it overlaps the range (an open gap
    reaches to now). ``limit`` keeps the first ``limit`` records of the result.
    ``host`` keeps a central archive's records of that host (none elsewhere).
    """
    archive = has_archive(conn)
    if host is not None and not archive:
        return iter(())
    event_conditions: list[tuple[str, object]] = []
    gap_conditions: list[tuple[str, object]] = []
    if vm is not None:
        event_conditions.append(("vm = ?", vm))
        gap_conditions.append(("vm = ?", vm))
    if event is not None:
        event_conditions.append(("name = ?", event))
    if since is not None:
        event_conditions.append(("qemu_ts >= ?", since))
        gap_conditions.append(("(ended IS NULL OR ended >= ?)", since))
    if until is not None:
        event_conditions.append(("qemu_ts <= ?", until))
        gap_conditions.append(("started <= ?", until))
    if host is not None:
        event_conditions.append(("a.host = ?", host))
        gap_conditions.append(("a.host = ?", host))
    # Each side is limited on its own (both are sorted), then the two are merged.
    tail, tail_params = (" LIMIT ?", [limit]) if limit is not None else ("", [])
    event_join = " LEFT JOIN archive_events AS a ON a.event_id = id" if archive else ""
    gap_join = " LEFT JOIN archive_gaps AS a ON a.gap_id = id" if archive else ""
    host_column = "a.host" if archive else "NULL"

    where, params = _where(event_conditions)
    events: Iterator[tuple[float, int, Record]] = (
        (row[0], row[1], EventRecord(*row[2:]))
        for row in conn.execute(
            "SELECT qemu_ts, id, vm, name, qemu_seconds, qemu_micros, received_at, raw,"
            f" {host_column} FROM events{event_join}{where} ORDER BY qemu_ts, id{tail}",
            params + tail_params,
        )
    )
    gaps: Iterator[tuple[float, int, Record]] = iter(())
    if event is None:
        where, params = _where(gap_conditions)
        gaps = (
            (row[0], row[1], GapRecord(*row[2:]))
            for row in conn.execute(
                f"SELECT started, id, vm, started, ended, reason, {host_column}"
                f" FROM gaps{gap_join}{where} ORDER BY started, id{tail}",
                params + tail_params,
            )
        )
    return (record for _, _, record in heapq.merge(events, gaps, key=lambda row: row[0]))


def stats(
    conn: sqlite3.Connection,
    *,
    since: float | None = None,
    until: float | None = None,
    host: str | None = None,
) -> list[EventCount]:
    """Event counts per (VM, event name) in ``[since, until]``, sorted by VM then name.

    ``host`` counts a central archive's events of that host only (none elsewhere).
    """
    conditions: list[tuple[str, object]] = []
    if host is not None:
        if not has_archive(conn):
            return []
        conditions.append(("id IN (SELECT event_id FROM archive_events WHERE host = ?)", host))
    if since is not None:
        conditions.append(("qemu_ts >= ?", since))
    if until is not None:
        conditions.append(("qemu_ts <= ?", until))
    where, params = _where(conditions)
    return [
        EventCount(*row)
        for row in conn.execute(
            f"SELECT vm, name, COUNT(*) FROM events{where} GROUP BY vm, name ORDER BY vm, name",
            params,
        )
    ]


def open_gaps(conn: sqlite3.Connection) -> list[GapRecord]:
    """The latest gap of each VM whose latest gap is still open (``ended`` is ``None``).

    A collector that starts again passes these to its fan-out, so that the first
    connection to each VM closes the gap left by the previous run.
    """
    return [
        GapRecord(*row)
        for row in conn.execute(
            "SELECT vm, started, ended, reason FROM gaps AS g"
            " WHERE started = (SELECT MAX(started) FROM gaps WHERE vm = g.vm)"
            " AND ended IS NULL ORDER BY vm"
        )
    ]


def left_connected(conn: sqlite3.Connection) -> list[tuple[str, float]]:
    """``(vm, since)`` for each VM recorded as connected (table ``connections``), by VM.

    A collector that stops normally records every VM it is connected to as
    disconnected (with the gap it opens), so such a VM was connected when a previous
    collector died (SIGKILL, crash). A VM that never connected was never recorded.
    ``since`` is the last moment that collector is known to have been receiving
    from it: the newest committed event's ``received_at`` or the connection's
    start, whichever is later. Events it received after that and never committed are
    lost, and all of them fall after ``since``.

    A history that has no ``connections`` yet (written by an older qmpevents, not
    migrated: its collector's writer creates it) is read as it implied the states:
    a VM whose latest gap is closed was connected from its end on.
    """
    states = "connections" if has_connections(conn) else f"({LATEST_GAP_STATE})"
    rows = conn.execute(f"SELECT vm, since FROM {states} WHERE connected ORDER BY vm").fetchall()
    found: list[tuple[str, float]] = []
    for vm, since in rows:
        # one index lookup per VM (events_by_vm_received)
        (newest,) = conn.execute(
            "SELECT MAX(received_at) FROM events WHERE vm = ?", (vm,)
        ).fetchone()
        found.append((vm, max(since, newest) if newest is not None else since))
    return found

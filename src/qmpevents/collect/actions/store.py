"""Action records: each run of a rule and its steps, in the history's ``action_runs``.

Written from the event loop through :func:`asyncio.to_thread`, on a connection of
the store's own (WAL, like the history's writer), so a slow disk never holds up
event intake; a write that fails is logged and the run's outcome still counted.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from qmpevents.collect.sqlite_schema import connect, migrate_actions

__all__ = ["ActionRecord", "ActionStore", "StepRecord", "read_actions"]

log = logging.getLogger(__name__)


@dataclass
class StepRecord:
    """One step of a run: ``kind``, ``target``, seconds taken, ``ok`` or the ``error``."""

    kind: str
    target: str
    duration: float
    ok: bool
    error: str | None = None


@dataclass
class ActionRecord:
    """One run: its rule, VM, trigger event and QEMU timestamp, start, duration, outcome."""

    rule: str
    vm: str
    event: str
    event_ts: float
    started: float
    duration: float = 0.0
    outcome: str = "ok"
    steps: list[StepRecord] = field(default_factory=list)


class ActionStore:
    """Appends :class:`ActionRecord` rows to the SQLite history at ``path``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _write(self, record: ActionRecord) -> None:
        with self._lock:
            if self._conn is None:
                self._conn = connect(self.path)
                migrate_actions(self._conn)
            steps = json.dumps([asdict(step) for step in record.steps])
            self._conn.execute(
                "INSERT INTO action_runs (rule, vm, event, event_ts, started, duration,"
                " outcome, steps) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.rule,
                    record.vm,
                    record.event,
                    record.event_ts,
                    record.started,
                    record.duration,
                    record.outcome,
                    steps,
                ),
            )

    async def record(self, record: ActionRecord) -> None:
        """Store ``record`` (off the event loop); a failure is logged, never raised."""
        try:
            await asyncio.to_thread(self._write, record)
        except (sqlite3.Error, OSError) as error:
            log.error(
                "action %s for VM %s: cannot record the run: %s", record.rule, record.vm, error
            )

    def close(self) -> None:
        """Close the connection (a later :meth:`record` opens another)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def read_actions(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every action run in ``conn``, oldest first, steps decoded ([] without the table)."""
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'action_runs'"
    ).fetchone()
    if exists is None:
        return []
    rows = conn.execute(
        "SELECT rule, vm, event, event_ts, started, duration, outcome, steps"
        " FROM action_runs ORDER BY id"
    ).fetchall()
    keys = ("rule", "vm", "event", "event_ts", "started", "duration", "outcome", "steps")
    runs = [dict(zip(keys, row, strict=True)) for row in rows]
    for run in runs:
        run["steps"] = json.loads(run["steps"])
    return runs

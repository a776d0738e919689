"""Event sources for collector tests: QMP servers that remember every event they sent."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

from qmpevents.collect.history import History
from qmpevents.collect.records import EventRecord, GapRecord
from qmpevents.server.server import QMPServer

# Events QEMU does not rate-limit, so every emit() goes on the wire at once.
_EVENTS: tuple[tuple[str, Any], ...] = (
    ("MIGRATION_PASS", lambda k: {"pass": k}),
    ("DUMP_COMPLETED", lambda k: {"result": {"status": "completed", "completed": k, "total": k}}),
    ("GUEST_PANICKED", lambda k: {"action": "pause"}),
    ("MEM_UNPLUG_ERROR", lambda k: {"device": f"dimm{k}", "msg": "rejected"}),
)


class Source:
    """A :class:`QMPServer` on unix socket ``path``; :attr:`sent` holds each event's bytes."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self.server = QMPServer()
        self.sent: list[bytes] = []

    async def start(self) -> Source:
        await self.server.listen_unix(str(self.path))
        return self

    def emit(self, count: int) -> None:
        """Send ``count`` more events, cycling through four unthrottled seed events."""
        for _ in range(count):
            k = len(self.sent) + 1
            name, data = _EVENTS[k % len(_EVENTS)]
            self.sent.append(self.server.emit(name, data(k)).rstrip(b"\r\n"))

    def counts(self) -> collections.Counter[bytes]:
        return collections.Counter(self.sent)

    async def close(self) -> None:
        await self.server.close()


def stored(db: Path) -> tuple[dict[str, list[EventRecord]], dict[str, list[GapRecord]]]:
    """Events (in commit order) and gaps of each VM in the history at ``db``."""
    events: dict[str, list[EventRecord]] = collections.defaultdict(list)
    gaps: dict[str, list[GapRecord]] = collections.defaultdict(list)
    with History(db) as history:
        for record in history.query():
            if isinstance(record, EventRecord):
                events[record.vm].append(record)
            else:
                gaps[record.vm].append(record)
    return events, gaps

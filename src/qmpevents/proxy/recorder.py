"""``--record FILE``: every message through the proxy as one JSON line, written as it goes.

Each line is an object::

    {"time": 1700000000.123456, "dir": "down->up", "client": "unix:/run/p.sock#3",
     "data": "{\\"execute\\": \\"stop\\", \\"id\\": 1}"}

``time`` is the wall clock (epoch seconds) when the proxy saw the bytes. ``dir``:

* ``down->proxy``: bytes a client sent, as read (QMP input is a stream, so one
  read may hold part of a request or several);
* ``proxy->down``: a message the proxy wrote to that client: the greeting, each
  reply (relabelled with the client's id, or answered by the proxy itself),
  never events (they are recorded once, as ``up->proxy``);
* ``proxy->up``: a request the proxy forwarded, with its proxy id;
* ``up->proxy``: each line the upstream sent: greeting, replies, every event.

``client`` names the client (``upstream`` for the upstream's own lines).
``data`` is the exact bytes when they are UTF-8; otherwise ``data_b64`` holds
them base64-encoded. A line ``{"time": ..., "dropped": N}`` says that N records
were lost (see below).

Bounded: :meth:`Recorder.record` never blocks the event loop. Records go to a
writer thread through a queue capped at ``max_buffer`` bytes (16 MiB by
default); when the disk is slower than the traffic and the queue is full, new
records are dropped and counted, and the count is written as a ``dropped``
line as soon as the writer catches up.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections import deque
from typing import IO, Final

__all__ = ["DEFAULT_MAX_BUFFER", "Recorder"]

log = logging.getLogger("qmpevents.proxy")

DEFAULT_MAX_BUFFER: Final = 16 << 20

DOWN_TO_PROXY: Final = "down->proxy"
PROXY_TO_DOWN: Final = "proxy->down"
PROXY_TO_UP: Final = "proxy->up"
UP_TO_PROXY: Final = "up->proxy"


def record_line(when: float, direction: str, client: str, data: bytes) -> str:
    """One record as its JSON line (newline included)."""
    entry: dict[str, object] = {"time": when, "dir": direction, "client": client}
    try:
        entry["data"] = data.decode("utf-8")
    except UnicodeDecodeError:
        entry["data_b64"] = base64.b64encode(data).decode("ascii")
    return json.dumps(entry, ensure_ascii=False) + "\n"


class Recorder:
    """Writes records to ``path`` (appending) from a thread; bounded, never blocking."""

    def __init__(self, path: str, *, max_buffer: int = DEFAULT_MAX_BUFFER) -> None:
        self.path = path
        self.max_buffer = max_buffer
        self.dropped = 0
        self.written = 0
        self._file: IO[str] = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._queue: deque[tuple[float, str, str, bytes]] = deque()
        self._queued_bytes = 0
        self._unreported = 0
        self._closing = False
        self._wake = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="qmpevents-record", daemon=True)
        self._thread.start()

    def record(self, direction: str, client: str, data: bytes) -> None:
        """Queue one record (dropped and counted when the queue is full)."""
        with self._wake:
            if self._closing:
                return
            if self._queued_bytes + len(data) > self.max_buffer:
                self.dropped += 1
                self._unreported += 1
                return
            self._queue.append((time.time(), direction, client, data))
            self._queued_bytes += len(data)
            self._wake.notify()

    def close(self) -> None:
        """Write what is queued, then close the file."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()
        self._file.close()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._queue and not self._closing and not self._unreported:
                    self._wake.wait()
                batch = list(self._queue)
                self._queue.clear()
                self._queued_bytes = 0
                lost, self._unreported = self._unreported, 0
                closing = self._closing
            try:
                lines = [record_line(*entry) for entry in batch]
                if lost:
                    lines.append(json.dumps({"time": time.time(), "dropped": lost}) + "\n")
                self._file.write("".join(lines))
                self._file.flush()
                self.written += len(batch)
            except OSError as error:
                log.error("cannot write the record file %s: %s", self.path, error)
            if closing:
                return

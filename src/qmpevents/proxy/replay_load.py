"""A ``--record`` file as what each recorded client sent and was sent (no I/O).

:func:`load_recording` reads the JSON lines :mod:`.recorder` writes and builds
one :class:`ClientScript` per client, numbered in the order they appear:

* ``chunks``: its ``down->proxy`` bytes, each with the number of messages the
  proxy had written to it before (``gate``: its greeting and replies), so that a
  replay never sends a chunk before the target has answered as much;
* ``expected``: what it received, in order: the greeting and replies
  (``proxy->down``) and the events (``up->proxy``, recorded once for everyone).

The recording does not say when a client left. A client is taken to have
received every event from its negotiation (found by running its input through
the same :class:`~qmpevents.protocol.server_session.ServerSession` the proxy
used) until another client acts (sends or connects) after the client's own last
record. Its window ends there (``end``), and a replay closes the client before
that other client's step, as the recorded session had it.

Each event is timed against the request before it (``anchor``: the latest
chunk of any client, in file order) so that a replay can check its delay.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from qmpevents.errors import GreetingError, QMPEventsError
from qmpevents.protocol.server_session import ServerSession
from qmpevents.proxy.messages import parse_greeting
from qmpevents.proxy.recorder import DOWN_TO_PROXY, PROXY_TO_DOWN, PROXY_TO_UP, UP_TO_PROXY

__all__ = [
    "ChunkRef",
    "ClientScript",
    "Expected",
    "Recording",
    "RecordingError",
    "SentChunk",
    "load_recording",
    "parse_recording",
]

_DIRECTIONS: Final = (DOWN_TO_PROXY, PROXY_TO_DOWN, PROXY_TO_UP, UP_TO_PROXY)
_UPSTREAM: Final = "upstream"

ChunkRef = tuple[int, int]
"""(client number, chunk index): one chunk of one client."""


class RecordingError(QMPEventsError):
    """The recording cannot be read or is not a proxy recording (names the line)."""


@dataclass(frozen=True, slots=True)
class SentChunk:
    """Bytes a client sent, when, and after how many messages it had received."""

    time: float
    data: bytes
    gate: int
    line: int  # position in the file (0-based record order)


@dataclass(frozen=True, slots=True)
class Expected:
    """One message the client received in the recording."""

    kind: Literal["greeting", "reply", "event"]
    time: float
    data: bytes
    step: int
    line: int  # position in the file (0-based record order)
    anchor: ChunkRef | None = None  # events: the chunk they are timed from
    delay: float = 0.0  # events: seconds after the anchor chunk


@dataclass
class ClientScript:
    """One recorded client: what it sent and what it got."""

    number: int
    label: str
    start: float
    first_line: int
    chunks: list[SentChunk] = field(default_factory=list)
    expected: list[Expected] = field(default_factory=list)
    end_line: int = -1  # the file position where its window ends (-1: end of file)
    last_line: int = 0
    negotiated_line: int | None = None

    @property
    def replies(self) -> list[Expected]:
        """The greeting and the replies, in order."""
        return [item for item in self.expected if item.kind != "event"]


@dataclass
class Recording:
    """Every recorded client, and notes on what the recording lacks."""

    clients: list[ClientScript]
    start: float
    chunk_times: dict[ChunkRef, float]
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Record:
    index: int
    lineno: int
    time: float
    direction: str
    client: str
    data: bytes


def _data(entry: dict[str, Any], where: str) -> bytes:
    if isinstance(entry.get("data"), str):
        return str(entry["data"]).encode("utf-8", "surrogatepass")
    if isinstance(entry.get("data_b64"), str):
        try:
            return base64.b64decode(str(entry["data_b64"]), validate=True)
        except binascii.Error as error:
            raise RecordingError(f"{where}: data_b64 is not base64: {error}") from None
    raise RecordingError(f"{where}: no data or data_b64 string")


def _parse_line(text: str, lineno: int, name: str, index: int, notes: list[str]) -> _Record | None:
    where = f"{name}:{lineno}"
    try:
        entry = json.loads(text)
    except ValueError as error:
        raise RecordingError(f"{where}: not JSON: {error}") from None
    if not isinstance(entry, dict):
        raise RecordingError(f"{where}: not a JSON object")
    when = entry.get("time")
    if not isinstance(when, int | float) or isinstance(when, bool):
        raise RecordingError(f"{where}: no numeric time")
    if "dropped" in entry:
        notes.append(f"{where}: the recording lost {entry['dropped']} records here")
        return None
    direction, client = entry.get("dir"), entry.get("client")
    if direction not in _DIRECTIONS:
        raise RecordingError(f"{where}: dir must be one of {', '.join(_DIRECTIONS)}")
    if not isinstance(client, str):
        raise RecordingError(f"{where}: no client string")
    return _Record(index, lineno, float(when), str(direction), client, _data(entry, where))


def parse_recording(text: str, name: str = "recording") -> Recording:
    """The recording in ``text`` (named ``name`` in errors)."""
    notes: list[str] = []
    records: list[_Record] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.strip():
            record = _parse_line(line, lineno, name, len(records), notes)
            if record is not None:
                records.append(record)
    return _build(records, name, notes)


def load_recording(path: str) -> Recording:
    """The recording at ``path``; :class:`RecordingError` if unreadable or invalid."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            text = f.read()
    except OSError as error:
        raise RecordingError(f"{path}: {error.strerror or error}") from None
    return parse_recording(text, path)


class _Builder:
    def __init__(self, name: str) -> None:
        self.name = name
        self.clients: dict[str, ClientScript] = {}
        self.sessions: dict[str, ServerSession] = {}
        self.last_chunk: ChunkRef | None = None
        self.chunk_times: dict[ChunkRef, float] = {}
        self.upstream_greetings = 0

    def add(self, record: _Record) -> None:
        if record.direction == PROXY_TO_UP:
            return
        if record.direction == UP_TO_PROXY:
            self._upstream(record)
            return
        script = self.clients.get(record.client)
        if script is None:
            self._new_client(record)
            return
        script.last_line = record.index
        if record.direction == PROXY_TO_DOWN:
            step = len(script.expected) + 1
            script.expected.append(Expected("reply", record.time, record.data, step, record.index))
            return
        gate = len(script.replies)
        script.chunks.append(SentChunk(record.time, record.data, gate, record.index))
        ref = (script.number, len(script.chunks) - 1)
        self.chunk_times[ref] = record.time
        self.last_chunk = ref
        session = self.sessions[record.client]
        if not session.negotiated:
            session.receive_data(record.data)
            if session.negotiated:
                script.negotiated_line = record.index

    def _new_client(self, record: _Record) -> None:
        where = f"{self.name}:{record.lineno}"
        if record.direction != PROXY_TO_DOWN:
            raise RecordingError(f"{where}: client {record.client!r} sent before its greeting")
        try:
            info = parse_greeting(record.data)
        except GreetingError as error:
            raise RecordingError(f"{where}: client {record.client!r}: {error}") from None
        number = len(self.clients) + 1
        script = ClientScript(number, record.client, record.time, record.index)
        script.expected.append(Expected("greeting", record.time, record.data, 1, record.index))
        script.last_line = record.index
        self.clients[record.client] = script
        self.sessions[record.client] = ServerSession(info)

    def _upstream(self, record: _Record) -> None:
        if record.data.startswith(b'{"QMP"'):
            self.upstream_greetings += 1
            return
        try:
            message = json.loads(record.data)
        except ValueError:
            return
        if not isinstance(message, dict) or "event" not in message:
            return
        for script in self.clients.values():
            if script.negotiated_line is None or script.negotiated_line > record.index:
                continue
            anchor, delay = None, 0.0
            if self.last_chunk is not None:
                anchor = self.last_chunk
                delay = record.time - self.chunk_times[anchor]
            step = len(script.expected) + 1
            item = Expected("event", record.time, record.data, step, record.index, anchor, delay)
            script.expected.append(item)

    def finish(self, records: list[_Record], notes: list[str]) -> Recording:
        if not self.clients:
            raise RecordingError(f"{self.name}: no client in the recording")
        scripts = list(self.clients.values())
        activity = [
            (r.index, r.client)
            for r in records
            if r.direction == DOWN_TO_PROXY
            or (r.direction == PROXY_TO_DOWN and self.clients[r.client].first_line == r.index)
        ]
        for script in scripts:
            later = [i for i, who in activity if i > script.last_line and who != script.label]
            script.end_line = later[0] if later else -1
            kept = [
                item
                for item in script.expected
                if item.kind != "event" or script.end_line < 0 or item.line < script.end_line
            ]
            script.expected = [_renumber(item, n) for n, item in enumerate(kept, 1)]
        if self.upstream_greetings > 1:
            notes.append(
                f"{self.name}: the upstream reconnected {self.upstream_greetings - 1} times; "
                "the replay uses one connection per client"
            )
        return Recording(scripts, scripts[0].start, self.chunk_times, notes)


def _renumber(item: Expected, step: int) -> Expected:
    return Expected(item.kind, item.time, item.data, step, item.line, item.anchor, item.delay)


def _build(records: list[_Record], name: str, notes: list[str]) -> Recording:
    builder = _Builder(name)
    for record in records:
        builder.add(record)
    return builder.finish(records, notes)

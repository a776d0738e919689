"""``qmpevents replay``: a recording's clients, sent again to another QMP server.

Each recorded client (see :mod:`.replay_load`) gets its own connection to the
target and sends what it sent, chunk by chunk, as it was recorded:

* at its recorded pace: a chunk goes as long after the previous one as it did
  in the recording;
* never before the target has answered what the recorded client had been
  answered before that chunk (its greeting and replies): a chunk that waited
  for a reply waits as long after the target's reply as it did after the
  recorded one, and chunks the client pipelined stay pipelined;
* a client whose recorded window ended (another client acted after its last
  record) is closed before that other client's step, as in the recording.

Every wait is bounded: ``timeout`` seconds for a reply (the client then stops
sending), an event's recorded delay plus ``2 * slack + 1`` seconds for an event
(later than that, it is missing). After its last expected message a client
listens ``slack`` seconds more (at most 1), for anything unexpected. Then
:func:`~.replay_compare.compare_client` compares.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Final

from qmpevents.addresses import Address
from qmpevents.errors import QMPEventsError
from qmpevents.proxy.replay_compare import (
    Comparison,
    Kind,
    Received,
    compare_client,
    event_key,
)
from qmpevents.proxy.replay_load import ChunkRef, ClientScript, Expected, Recording

__all__ = ["ClientResult", "ReplayError", "ReplayOptions", "ReplayResult", "replay"]

_LINE_LIMIT: Final = 64 << 20  # QEMU's own input limit; a longer line ends the client


class ReplayError(QMPEventsError):
    """The replay cannot run: the target is unreachable."""


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """How strict and how patient a replay is."""

    slack: float = 0.5
    timeout: float = 10.0
    strict: bool = False


@dataclass
class ClientResult:
    """One client's replay: what it received and how that compares."""

    script: ClientScript
    received: list[Received]
    comparison: Comparison


@dataclass
class ReplayResult:
    """Every client's comparison, and notes on the whole run."""

    clients: list[ClientResult]
    notes: list[str] = field(default_factory=list)

    @property
    def compared(self) -> int:
        """Messages compared, over all clients."""
        return sum(client.comparison.compared for client in self.clients)

    @property
    def differences(self) -> int:
        """Differences found, over all clients."""
        return sum(len(client.comparison.differences) for client in self.clients)


def _kind(line: bytes, first: bool) -> Kind:
    if first:
        return "greeting"
    try:
        message = json.loads(line)
    except ValueError:
        return "reply"
    is_event = isinstance(message, dict) and "event" in message
    return "event" if is_event and "return" not in message and "error" not in message else "reply"


class _Connection:
    """The replay's connection for one client: lines in, with the time each came."""

    def __init__(self, run: _Run) -> None:
        self.run = run
        self.received: list[Received] = []
        self.replies: list[Received] = []
        self.events: list[Received] = []
        self.eof = False
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None

    async def open(self, target: Address, timeout: float) -> None:
        if target.path is not None:
            opening = asyncio.open_unix_connection(target.path, limit=_LINE_LIMIT)
        else:
            opening = asyncio.open_connection(target.host, target.port, limit=_LINE_LIMIT)
        reader, self.writer = await asyncio.wait_for(opening, timeout)
        self.reader_task = asyncio.create_task(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        try:
            while line := await reader.readline():
                item = Received(_kind(line, not self.received), loop.time(), line)
                self.received.append(item)
                (self.events if item.kind == "event" else self.replies).append(item)
                self.run.notify()
        except (OSError, ValueError):
            pass  # reset, or a line over the limit: this client's stream ends here
        finally:
            self.eof = True
            self.run.notify()

    def answered(self, count: int) -> bool:
        """Whether ``count`` replies (the greeting included) came, or the stream ended."""
        return len(self.replies) >= count or self.eof

    async def send(self, data: bytes, timeout: float) -> bool:
        if self.writer is None or self.eof:
            return False
        try:
            self.writer.write(data)
            await asyncio.wait_for(self.writer.drain(), timeout)
        except (OSError, TimeoutError):
            return False
        return True

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        if self.reader_task is not None:
            self.reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.reader_task


class _Run:
    def __init__(self, recording: Recording, target: Address, options: ReplayOptions) -> None:
        self.recording = recording
        self.target = target
        self.options = options
        self.loop = asyncio.get_running_loop()
        self.start = self.loop.time()
        self.sent: dict[ChunkRef, float] = {}
        self.finished_sending: set[int] = set()
        self.closed: set[int] = set()
        self.connected_once = False
        self.notes: list[str] = []
        self._tick = asyncio.Event()

    def notify(self) -> None:
        self._tick.set()
        self._tick = asyncio.Event()

    async def until(self, condition: Callable[[], bool], deadline: float) -> bool:
        """Wait until ``condition()`` holds (True) or ``deadline`` passes (False)."""
        while not condition():
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._tick.wait(), remaining)
        return True

    async def sleep_until(self, when: float) -> None:
        delay = when - self.loop.time()
        if delay > 0:
            await asyncio.sleep(delay)

    def _windows_closed(self, me: int, line: int) -> bool:
        return all(
            other.number in self.closed
            for other in self.recording.clients
            if other.number != me and 0 <= other.end_line <= line
        )

    async def client(self, script: ClientScript) -> list[Received]:
        connection = _Connection(self)
        try:
            return await self._client(script, connection)
        finally:
            self.finished_sending.add(script.number)
            await connection.close()
            self.closed.add(script.number)
            self.notify()

    async def _client(self, script: ClientScript, connection: _Connection) -> list[Received]:
        timeout = self.options.timeout
        number = script.number
        await self.until(
            lambda: self._windows_closed(number, script.first_line), self.loop.time() + timeout
        )
        await self.sleep_until(self.start + script.start - self.recording.start)
        try:
            await connection.open(self.target, timeout)
        except (OSError, TimeoutError) as error:
            if not self.connected_once:
                raise ReplayError(f"{self.target}: {error.strerror or error}") from None
            self.notes.append(f"client {number}: cannot connect to {self.target}: {error}")
            return []
        self.connected_once = True
        await self._send_all(script, connection)
        self.finished_sending.add(number)
        self.notify()
        await self._listen(script, connection)
        return connection.received

    async def _send_all(self, script: ClientScript, connection: _Connection) -> None:
        timeout = self.options.timeout
        replies = script.replies
        previous_sent, previous_time = self.loop.time(), script.start
        for index, chunk in enumerate(script.chunks):
            await self.until(
                partial(self._windows_closed, script.number, chunk.line),
                self.loop.time() + timeout,
            )
            answered = await self.until(
                partial(connection.answered, chunk.gate),
                self.loop.time() + timeout,
            )
            if len(connection.replies) < chunk.gate:
                step = replies[len(connection.replies)].step
                why = "the connection closed" if answered else f"nothing in {timeout:g} s"
                self.notes.append(
                    f"client {script.number}: stopped before its send #{index + 1}: "
                    f"waiting for step {step}, {why}"
                )
                return
            when = previous_sent + (chunk.time - previous_time)
            if chunk.gate:
                recorded, got = replies[chunk.gate - 1], connection.replies[chunk.gate - 1]
                when = max(when, got.time + (chunk.time - recorded.time))
            await self.sleep_until(when)
            if not await connection.send(chunk.data, timeout):
                self.notes.append(f"client {script.number}: cannot send #{index + 1}")
                return
            previous_sent, previous_time = self.loop.time(), chunk.time
            self.sent[(script.number, index)] = previous_sent
            self.notify()

    async def _listen(self, script: ClientScript, connection: _Connection) -> None:
        options = self.options
        wanted = len(script.replies)
        await self.until(
            lambda: len(connection.replies) >= wanted or connection.eof,
            self.loop.time() + options.timeout,
        )
        events = [item for item in script.expected if item.kind == "event"]
        anchors = {item.anchor for item in events if item.anchor is not None}
        await self.until(
            lambda: all(a in self.sent or a[0] in self.finished_sending for a in anchors),
            self.loop.time() + options.timeout,
        )
        deadline = max((self._deadline(item) for item in events), default=0.0)
        want = Counter(event_key(item.data) for item in events)

        def all_in() -> bool:
            return connection.eof or not want - Counter(
                event_key(e.data) for e in connection.events
            )

        await self.until(all_in, deadline)
        if not connection.eof:
            await asyncio.sleep(min(options.slack, 1.0))

    def _deadline(self, item: Expected) -> float:
        late = 2 * self.options.slack + 1.0
        if item.anchor is None or item.anchor not in self.sent:
            return self.loop.time() + late
        return self.sent[item.anchor] + item.delay + late


async def replay(
    recording: Recording, target: Address, options: ReplayOptions | None = None
) -> ReplayResult:
    """Replay every client of ``recording`` against ``target`` and compare.

    Raises :class:`ReplayError` when the target cannot be reached at all.
    """
    options = options or ReplayOptions()
    run = _Run(recording, target, options)
    tasks = [asyncio.create_task(run.client(script)) for script in recording.clients]
    try:
        received = await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    result = ReplayResult([], [*recording.notes, *run.notes])
    for script, lines in zip(recording.clients, received, strict=True):
        comparison = compare_client(
            script, lines, run.sent, slack=options.slack, strict=options.strict
        )
        result.clients.append(ClientResult(script, lines, comparison))
        result.notes.extend(comparison.notes)
    return result

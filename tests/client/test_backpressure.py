"""The default listener pushes back on the socket instead of dropping events."""

from __future__ import annotations

import asyncio
from pathlib import Path

from qmpevents.client import Dropped, connect
from qmpevents.schema.events import MigrationPass
from qmpevents.server import QMPServer

COUNT = 20_000
MAXSIZE = 100
BOUND = 60.0  # seconds for the whole exchange; far more than it takes


async def _burst_server(path: str) -> QMPServer:
    # QEMU buffers output for a slow reader without limit; so does this server here.
    server = QMPServer(output_limit=1 << 30)
    await server.listen_unix(path)
    return server


async def test_a_slow_consumer_of_the_default_listener_loses_nothing(tmp_path: Path) -> None:
    path = str(tmp_path / "vm.sock")
    server = await _burst_server(path)
    try:
        async with connect(path) as qmp:
            events = qmp.events("MIGRATION_PASS", maxsize=MAXSIZE)
            for n in range(1, COUNT + 1):
                server.emit("MIGRATION_PASS", {"pass": n})
            got: list[int] = []
            longest = 0
            async with asyncio.timeout(BOUND):
                async for item in events:
                    assert not isinstance(item, Dropped)
                    assert isinstance(item, MigrationPass)
                    longest = max(longest, len(events._queue))
                    await asyncio.sleep(0)  # a consumer that awaits something per event
                    got.append(item.data.pass_)
                    if len(got) == COUNT:
                        break
            assert got == list(range(1, COUNT + 1))
            assert events.dropped == 0
            # Reading paused: the queue held at most a read's worth past maxsize.
            assert longest < COUNT // 4
    finally:
        await server.close()


async def test_execute_inside_the_loop_of_a_full_listener_does_not_deadlock(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "vm.sock")
    server = await _burst_server(path)
    try:
        async with connect(path) as qmp:
            # The reply queues behind every event already sent: the listener grows
            # past maxsize while it is awaited, within its hard limit.
            events = qmp.events("MIGRATION_PASS", maxsize=10, hard_limit=5000)
            for n in range(1, 2001):
                server.emit("MIGRATION_PASS", {"pass": n})
            seen = 0
            async with asyncio.timeout(BOUND):
                async for item in events:
                    assert not isinstance(item, Dropped)
                    seen += 1
                    if seen % 500 == 1:
                        # The listener is full and reading is paused: the reply
                        # must still come through.
                        status = await qmp.execute("query-status")
                        assert status["status"] == "running"
                    if seen == 2000:
                        break
            assert events.dropped == 0
    finally:
        await server.close()


async def test_past_the_hard_limit_the_loss_is_counted_and_marked(tmp_path: Path) -> None:
    path = str(tmp_path / "vm.sock")
    server = await _burst_server(path)
    try:
        async with connect(path) as qmp:
            events = qmp.events("MIGRATION_PASS", maxsize=10, hard_limit=100)
            for n in range(1, 2001):
                server.emit("MIGRATION_PASS", {"pass": n})
            async with asyncio.timeout(BOUND):
                await qmp.execute("query-status")  # reads everything before its reply
                first = await anext(events)
            assert isinstance(first, Dropped) and first.count == events.dropped > 0
            assert len(events._queue) <= 100
    finally:
        await server.close()

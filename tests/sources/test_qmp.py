"""QMPSource against our own QMP server: markers, reconnect, backoff and closing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from qmpevents.client import Gap, RunState
from qmpevents.client.backoff import Backoff
from qmpevents.errors import ConnectionLost, QMPConnectionError
from qmpevents.schema.events import Event
from qmpevents.server import QMPServer
from qmpevents.sources import Connected, Disconnected, QMPSource, SourceItem, Unreachable

FAST = Backoff(0.01, 0.05)
STEP = 5.0  # bound on every wait for the next item


async def start_server(path: str) -> QMPServer:
    server = QMPServer()
    await server.listen_unix(path, multi_client=True)
    return server


async def next_item(items: AsyncIterator[SourceItem]) -> SourceItem:
    return await asyncio.wait_for(anext(items), STEP)


async def wait_connected(server: QMPServer) -> None:
    async with asyncio.timeout(STEP):
        while server.connections == 0:
            await asyncio.sleep(0.01)


def test_backoff_doubles_to_its_maximum_and_checks_itself() -> None:
    delays = Backoff(0.1, 0.5).delays()
    assert [next(delays) for _ in range(5)] == [0.1, 0.2, 0.4, 0.5, 0.5]
    with pytest.raises(ValueError, match="initial <= maximum"):
        Backoff(1.0, 0.5)
    with pytest.raises(ValueError, match="give_up_after > 0"):
        Backoff(give_up_after=0)


async def test_without_reconnect_an_unreachable_target_raises(tmp_path: Path) -> None:
    source = QMPSource("vm", str(tmp_path / "none.sock"), reconnect=False)
    with pytest.raises(QMPConnectionError, match=r"none\.sock"):
        await next_item(aiter(source))
    await source.aclose()


async def test_markers_events_gap_and_close(tmp_path: Path) -> None:
    path = str(tmp_path / "vm.sock")
    source = QMPSource("vm", path, backoff=FAST)
    items = aiter(source)
    # Nothing listens yet: one Unreachable for this reason, then retries quietly.
    first = await next_item(items)
    assert isinstance(first, Unreachable) and "vm.sock" in first.reason
    server = await start_server(path)
    try:
        connected = await next_item(items)
        assert isinstance(connected, Connected) and source.connected
        await wait_connected(server)
        server.emit("MIGRATION_PASS", {"pass": 1})
        event = await next_item(items)
        assert isinstance(event, Event) and event.name == "MIGRATION_PASS"
    finally:
        await server.close()
    lost = await next_item(items)
    assert isinstance(lost, Disconnected) and not source.connected
    server = await start_server(path)
    try:
        again = await next_item(items)
        gap = await next_item(items)
        assert isinstance(again, Connected)
        assert isinstance(gap, Gap) and gap.started == lost.at and gap.ended == again.at
        await wait_connected(server)
        server.emit("MIGRATION_PASS", {"pass": 2})
        event = await next_item(items)
        assert isinstance(event, Event) and event.data.pass_ == 2  # type: ignore[attr-defined]
        await source.aclose()
        with pytest.raises(StopAsyncIteration):
            await next_item(items)
    finally:
        await server.close()


async def test_closing_keeps_what_was_received(tmp_path: Path) -> None:
    path = str(tmp_path / "vm.sock")
    server = await start_server(path)
    try:
        source = QMPSource("vm", path, reconnect=False)
        items = aiter(source)
        assert isinstance(await next_item(items), Connected)
        await wait_connected(server)
        for n in range(1, 4):
            server.emit("MIGRATION_PASS", {"pass": n})
        first = await next_item(items)
        await source.aclose()
        rest = [item async for item in items]
        passes = [e.data.pass_ for e in (first, *rest) if isinstance(e, Event)]  # type: ignore[attr-defined]
        assert passes == [1, 2, 3]
    finally:
        await server.close()


async def test_without_reconnect_a_loss_raises(tmp_path: Path) -> None:
    path = str(tmp_path / "vm.sock")
    server = await start_server(path)
    source = QMPSource("vm", path, reconnect=False)
    items = aiter(source)
    assert isinstance(await next_item(items), Connected)
    await server.close()
    with pytest.raises(ConnectionLost):
        await next_item(items)
    await source.aclose()


async def test_giving_up_raises_connection_lost(tmp_path: Path) -> None:
    source = QMPSource("vm", str(tmp_path / "none.sock"), backoff=Backoff(0.01, 0.02, 0.1))
    items = aiter(source)
    assert isinstance(await next_item(items), Unreachable)
    with pytest.raises(ConnectionLost, match=r"no connection for 0\.1 s"):
        await next_item(items)
    await source.aclose()


async def test_a_source_marks_a_run_state_changed_while_it_was_away(tmp_path: Path) -> None:
    path = str(tmp_path / "vm.sock")
    server = await start_server(path)
    source = QMPSource("vm", path, backoff=FAST)
    items = aiter(source)
    try:
        assert isinstance(await next_item(items), Connected)
        await server.close()
        assert isinstance(await next_item(items), Disconnected)
        server = QMPServer(start_paused=True)
        await server.listen_unix(path, multi_client=True)
        assert isinstance(await next_item(items), Connected)
        assert isinstance(await next_item(items), Gap)
        marker = await next_item(items)
        assert isinstance(marker, RunState) and not marker.running and marker.was_running
    finally:
        await source.aclose()
        await server.close()

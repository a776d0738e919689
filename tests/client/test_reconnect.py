"""Reconnect paths end every waiter, mark the gap after the handshake, and tell
when the VM's run state changed while nobody listened."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from qmpevents.client import Gap, QMPClient, RunState
from qmpevents.errors import CommandError
from qmpevents.schema.events import Event
from qmpevents.server import QMPServer

BOUND = 10.0


async def serve(path: str, **options: object) -> QMPServer:
    server = QMPServer(**options)  # type: ignore[arg-type]
    await server.listen_unix(path)
    return server


async def test_a_vm_stopped_while_nobody_listened_is_marked(tmp_path: Path) -> None:
    path = str(tmp_path / "vm.sock")
    server = await serve(path)
    qmp = QMPClient(path, reconnect=True, backoff=0.01, max_backoff=0.05)
    try:
        events = qmp.events()
        await qmp.connect()
        await server.close()
        server = await serve(path, start_paused=True)  # came back stopped
        async with asyncio.timeout(BOUND):
            gap = await anext(events)
            marker = await anext(events)
        assert isinstance(gap, Gap)
        assert isinstance(marker, RunState)
        assert (marker.running, marker.was_running, marker.previous) == (False, True, "running")
        assert marker.status == (await qmp.execute("query-status"))["status"]
    finally:
        await qmp.close()
        await server.close()


async def test_a_stop_seen_before_the_loss_is_not_reported_again(tmp_path: Path) -> None:
    path = str(tmp_path / "vm.sock")
    server = await serve(path)
    qmp = QMPClient(path, reconnect=True, backoff=0.01, max_backoff=0.05)
    try:
        events = qmp.events()
        await qmp.connect()
        await qmp.execute("stop")
        async with asyncio.timeout(BOUND):
            stop = await anext(events)
        assert isinstance(stop, Event) and stop.name == "STOP"
        await server.close()
        server = await serve(path, start_paused=True)
        async with asyncio.timeout(BOUND):
            gap = await anext(events)
            await qmp.execute("cont")  # the next item is RESUME: no RunState between
            resume = await anext(events)
        assert isinstance(gap, Gap)
        assert isinstance(resume, Event) and resume.name == "RESUME"
    finally:
        await qmp.close()
        await server.close()


async def test_a_reconnect_that_fails_for_good_ends_every_waiter(tmp_path: Path) -> None:
    """validate=True, and the server that comes back refuses query-qmp-schema."""
    path = str(tmp_path / "vm.sock")
    server = await serve(path)
    qmp = QMPClient(path, reconnect=True, validate=True, backoff=0.01, max_backoff=0.05)
    try:
        events = qmp.events()
        await qmp.connect()
        await server.close()
        server = QMPServer()
        server.commands.remove("query-qmp-schema")
        await server.listen_unix(path)
        async with asyncio.timeout(BOUND):
            with pytest.raises(CommandError, match="query-qmp-schema"):
                async for _ in events:
                    pass
            with pytest.raises(Exception, match="gave up reconnecting"):
                await qmp.execute("query-status")
    finally:
        await qmp.close()
        await server.close()

"""QEMU's own client library, qemu.qmp 0.0.6, against our server."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from qemu.qmp import QMPClient
from qemu.qmp.legacy import QEMUMonitorProtocol

from qmpevents.server.server import QMPServer


async def test_async_client_commands_and_events(tmp_path: Path) -> None:
    server = QMPServer(start_paused=True)
    path = await server.listen_unix(str(tmp_path / "q.sock"))
    qmp = QMPClient("interop")
    try:
        await qmp.connect(path)
        assert await qmp.execute("query-status") == {
            "status": "prelaunch",
            "singlestep": False,
            "running": False,
        }
        version = await qmp.execute("query-version")
        assert isinstance(version, dict)
        assert version["qemu"] == {"major": 7, "minor": 2, "micro": 22}
        assert version["package"].startswith("qmpevents ")
        assert await qmp.execute("cont") == {}
        assert await qmp.execute("stop") == {}
        resume = await asyncio.wait_for(qmp.events.get(), 5)
        stop = await asyncio.wait_for(qmp.events.get(), 5)
        assert (resume["event"], stop["event"]) == ("RESUME", "STOP")
        assert "data" not in resume and isinstance(resume["timestamp"]["seconds"], int)
        assert await qmp.execute("query-status") == {
            "status": "paused",
            "singlestep": False,
            "running": False,
        }
    finally:
        await qmp.disconnect()
        await server.close()


async def test_async_client_quit_ends_the_server(tmp_path: Path) -> None:
    server = QMPServer()
    path = await server.listen_unix(str(tmp_path / "q.sock"))
    qmp = QMPClient("interop")
    try:
        await qmp.connect(path)
        assert await qmp.execute("quit") == {}
        shutdown = await asyncio.wait_for(qmp.events.get(), 5)
        assert shutdown["event"] == "SHUTDOWN"
        assert shutdown["data"] == {"guest": False, "reason": "host-qmp-quit"}
        assert await asyncio.wait_for(server.wait_closed(), 5) == 0
    finally:
        # qemu.qmp reports the server's EOF after quit from disconnect(), as it
        # does with QEMU itself.
        with contextlib.suppress(EOFError):
            await qmp.disconnect()
        await server.close()
    assert not Path(path).exists()


def _legacy_session(path: str) -> list[object]:
    qmp = QEMUMonitorProtocol(path)
    try:
        qmp.connect(negotiate=True)
        status = qmp.cmd("query-status")
        stopped = qmp.cmd("stop")
        event = qmp.pull_event(wait=5.0)
        return [status, stopped, event]
    finally:
        qmp.close()


async def test_legacy_sync_client(tmp_path: Path) -> None:
    server = QMPServer()
    path = await server.listen_unix(str(tmp_path / "q.sock"))
    try:
        status, stopped, event = await asyncio.to_thread(_legacy_session, path)
        assert status == {"status": "running", "singlestep": False, "running": True}
        assert stopped == {}
        assert isinstance(event, dict) and event["event"] == "STOP"
    finally:
        await server.close()

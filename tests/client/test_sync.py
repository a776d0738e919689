"""The blocking wrapper: one background loop, the asyncio client's errors."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qmpevents.client.sync import SyncClient
from qmpevents.errors import CommandError, ConfigError, QMPConnectionError, QMPTimeoutError
from qmpevents.schema.events import DumpCompleted
from tests.client.test_connection import Peer, event, fake_qemu_in_thread


async def _dump(peer: Peer, request: dict[str, Any]) -> None:
    done = {"result": {"status": "completed", "completed": 8, "total": 8}}
    await peer.reply(request, None, event("DUMP_COMPLETED", done))


async def _fail(peer: Peer, request: dict[str, Any]) -> None:
    await peer.error(request, "GenericError", "no")


async def _script(peer: Peer) -> None:
    await peer.greet()
    await peer.serve({"dump-guest-memory": _dump, "query-name": {"name": "vm"}, "bad": _fail})


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Path]:
    """A FakeQEMU running in its own thread's loop, as a real QEMU would run apart."""
    with fake_qemu_in_thread(tmp_path / "qmp.sock", _script) as path:
        yield path


def test_execute_and_wait_for(server: Path) -> None:
    with SyncClient(server) as qmp:
        assert qmp.greeting is not None and qmp.greeting.version == "7.2.22"
        assert qmp.execute("query-name") == {"name": "vm"}
        with pytest.raises(CommandError, match="GenericError: no"):
            qmp.execute("bad")
        waiter = qmp.expect("DUMP_COMPLETED", timeout=5)
        qmp.execute("dump-guest-memory")
        done = waiter.wait()
        with pytest.raises(QMPTimeoutError):
            qmp.wait_for("DUMP_COMPLETED", timeout=0.01)
        assert qmp.protocol_errors == 0
    assert isinstance(done, DumpCompleted)
    qmp.close()  # idempotent


def test_connection_errors_stop_the_background_loop(tmp_path: Path) -> None:
    before = threading.active_count()
    with pytest.raises(QMPConnectionError):
        SyncClient(tmp_path / "missing.sock")
    assert threading.active_count() == before


def test_a_bad_target_raises_and_leaves_no_thread_behind() -> None:
    before = threading.active_count()
    with pytest.raises(ConfigError, match="1-65535"):
        SyncClient("localhost:0")
    assert threading.active_count() == before

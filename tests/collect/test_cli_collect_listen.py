"""``qmpevents collect --listen``: options, the configuration key, and the command with QEMU."""

from __future__ import annotations

import asyncio
import signal
import socket
from pathlib import Path

import pytest

from qmpevents.collect.config import CollectorConfig, load_config
from qmpevents.errors import ConfigError
from tests.collect.listen_qemu import Fleet, require_qemu
from tests.collect.sources import stored
from tests.collect.test_cli_collect import CollectorProcess, run_cli

WAIT = 30.0


def test_listen_is_enough_to_collect_and_a_live_socket_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "qmp.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        status, lines = run_cli("--listen", str(path), "--db", str(tmp_path / "e.db"))
    assert status == 2
    assert lines[-1].endswith(f"{path}: something is already listening on this socket"), lines
    assert path.exists()  # not ours: left alone


def test_the_listen_key_of_the_configuration_file(tmp_path: Path) -> None:
    config = tmp_path / "collect.toml"
    config.write_text('[collector]\nlisten = "qmp.sock"\n')
    assert load_config(config).listen == (tmp_path / "qmp.sock",)
    config.write_text('[collector]\nlisten = ["/run/a.sock", "b.sock"]\n')
    assert load_config(config).listen == (Path("/run/a.sock"), tmp_path / "b.sock")
    config.write_text("[collector]\nlisten = [1]\n")
    with pytest.raises(ConfigError, match=r"\[collector\] listen: expected a socket path"):
        load_config(config)
    with pytest.raises(ConfigError, match="given twice"):
        CollectorConfig(listen=(Path("a.sock"), Path("a.sock")))


@pytest.mark.qemu
async def test_collect_listen_records_a_qemu_that_connects(tmp_path: Path) -> None:
    fleet = Fleet(require_qemu(), tmp_path, tmp_path / "qmp.sock")
    db = tmp_path / "events.db"
    collector = CollectorProcess("--listen", str(fleet.listen), "--db", str(db))
    await collector.start()
    try:
        async with asyncio.timeout(WAIT):
            while not fleet.listen.exists():
                await asyncio.sleep(0.02)
            guest = await fleet.boot("guest=web1")
            while not any(line.startswith("web1: QEMU pid ") for line in collector.lines):
                await asyncio.sleep(0.02)
            await fleet.run(guest, "cont", "stop")
            while len(stored(db)[0]["web1"]) < 2:
                await asyncio.sleep(0.05)
        assert await collector.stop(signal.SIGTERM) == 0, collector.lines
    finally:
        fleet.close()
        if collector.process is not None and collector.process.returncode is None:
            collector.process.kill()
            await collector.process.wait()
    connected = next(line for line in collector.lines if line.startswith("web1: "))
    assert f"connected to {fleet.listen}" in connected
    assert [e.name for e in stored(db)[0]["web1"]] == ["RESUME", "STOP"]
    assert not fleet.listen.exists()

"""QMP on a non-loopback TCP address: refused by default, allowed with a warning like QEMU.

QEMU listens wherever ``-qmp tcp:HOST:PORT`` says; qmpevents-qemu does too, but
says on stderr what that exposes. A machine built in code refuses unless its
config sets ``tcp_public``. No test here listens on a non-loopback address: the
command lines fail on a missing drive image before any socket is opened.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from qmpevents.errors import ConfigError
from qmpevents.sim.cmdline import parse_command_line
from qmpevents.sim.config import MachineConfig, MonitorEndpoint
from qmpevents.sim.machine import Machine
from tests.sim.programs import SIM

WARNING = (
    "qmpevents-qemu: warning: QMP on tcp:{host}:0 is not a loopback address and QMP has no "
    "authentication: any peer that reaches it can run every command, including ones that "
    "write files on this host (dump-guest-memory, blockdev-add)\n"
)


def start_failing(host: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """qmpevents-qemu with a TCP monitor on ``host`` and a drive that fails to open."""
    missing = tmp_path / "missing.img"
    argv = [
        *SIM, "-qmp", f"tcp:{host}:0,server=on,wait=off",
        "-blockdev", f"driver=file,node-name=f0,filename={missing}",
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.1"])
def test_qemu_command_line_warns_about_a_public_address(host: str, tmp_path: Path) -> None:
    result = start_failing(host, tmp_path)
    assert result.returncode == 1
    warning, error = result.stderr.splitlines(keepends=True)
    assert warning == WARNING.format(host=host)
    assert "Could not open" in error


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
def test_no_warning_for_loopback(host: str, tmp_path: Path) -> None:
    result = start_failing(host, tmp_path)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1
    assert ": warning:" not in result.stderr


def test_qemu_command_line_opts_in() -> None:
    assert parse_command_line(["-qmp", "tcp:0.0.0.0:4444,server=on"]).tcp_public


async def test_machine_refuses_a_public_address_by_default() -> None:
    config = MachineConfig(monitors=[MonitorEndpoint("tcp", host="0.0.0.0", port=0)])
    machine = Machine(config)
    try:
        with pytest.raises(ConfigError, match="not a loopback address"):
            await machine.start()
        assert machine.server.connections == 0
    finally:
        await machine.server.close()

"""SIGTERM, SIGINT and SIGHUP end real QEMU and qmpevents-qemu alike.

Each case starts the program with two QMP sockets, negotiates on one and only
reads the greeting on the other, signals it from this process, and checks what
QEMU 7.2 does: SHUTDOWN ``host-signal`` to the negotiated monitor only,
``NAME: terminating on signal N from pid P (ARGV0)`` on stderr, exit status 0.
"""

from __future__ import annotations

import asyncio
import io
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from qmpevents.sim.config import MachineConfig, MonitorEndpoint
from qmpevents.sim.machine import Machine
from qmpevents.sim.signals import HostSignals, kill_report, sender_command
from tests.qemu.conftest import BASE_ARGS
from tests.sim.programs import PROGRAMS, own_command, program

WAIT = 10.0
SHUTDOWN = re.compile(
    rb'\{"timestamp": \{"seconds": \d+, "microseconds": \d+\}, "event": "SHUTDOWN", '
    rb'"data": \{"guest": false, "reason": "host-signal"\}\}\r\n'
)
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{6})?Z "


@dataclass
class Ended:
    """What a signalled program left: each client's bytes after the signal, stderr, status."""

    negotiated: bytes
    idle: bytes
    stderr: str
    status: int


def _wait_for(path: Path, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + WAIT
    while not path.exists():
        if process.poll() is not None:
            assert process.stderr is not None
            pytest.fail(f"exited with {process.returncode}: {process.stderr.read().decode()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear within {WAIT} s")
        time.sleep(0.02)


def _connect(path: Path) -> tuple[socket.socket, io.BufferedReader]:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(WAIT)
    sock.connect(str(path))
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b'{"QMP": ')
    return sock, reader


def signal_program(command: tuple[str, ...], tmp_path: Path, signum: int, *extra: str) -> Ended:
    """Start ``command`` with QEMU's arguments, negotiate, send ``signum``, collect the end."""
    busy, idle = tmp_path / "busy.sock", tmp_path / "idle.sock"
    argv = [*command, *BASE_ARGS, *extra]
    for path in (busy, idle):
        argv += ["-qmp", f"unix:{path},server=on,wait=off"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(busy, process)
        _wait_for(idle, process)
        busy_sock, busy_reader = _connect(busy)
        idle_sock, idle_reader = _connect(idle)
        with busy_sock, idle_sock, busy_reader, idle_reader:
            # No newline: QEMU reads a byte at a time while a command runs, and a byte
            # it never read when it exits makes the kernel reset the connection.
            busy_sock.sendall(b'{"execute": "qmp_capabilities"}')
            assert busy_reader.readline() == b'{"return": {}}\r\n'
            os.kill(process.pid, signum)
            negotiated, idle_rest = busy_reader.read(), idle_reader.read()
        _, stderr = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
    return Ended(negotiated, idle_rest, stderr.decode(), process.returncode)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
@pytest.mark.parametrize("which", PROGRAMS)
def test_signal_sends_shutdown_reports_and_exits_0(which: str, signum: int, tmp_path: Path) -> None:
    command, name = program(which)
    ended = signal_program(command, tmp_path, signum)
    assert SHUTDOWN.fullmatch(ended.negotiated), ended.negotiated
    assert ended.idle == b""
    report = f"terminating on signal {signum} from pid {os.getpid()} ({own_command()})"
    assert ended.stderr == f"{name}: {report}\n"
    assert ended.status == 0


@pytest.mark.parametrize("which", PROGRAMS)
def test_signal_overrides_no_shutdown(which: str, tmp_path: Path) -> None:
    command, _ = program(which)
    ended = signal_program(command, tmp_path, signal.SIGTERM, "-no-shutdown")
    assert SHUTDOWN.fullmatch(ended.negotiated), ended.negotiated
    assert ended.status == 0


@pytest.mark.parametrize("which", PROGRAMS)
def test_signal_report_is_timestamped_with_msg_timestamp(which: str, tmp_path: Path) -> None:
    command, name = program(which)
    ended = signal_program(command, tmp_path, signal.SIGTERM, "-msg", "timestamp=on")
    pattern = f"{STAMP}{re.escape(name)}: terminating on signal 15 from pid {os.getpid()} "
    assert re.fullmatch(pattern + r"\(.*\)\n", ended.stderr), ended.stderr
    assert ended.status == 0


def test_kill_report_forms() -> None:
    # qemu_kill_report(): no pid for a kernel-sent signal; a gone sender; a zombie.
    assert kill_report(2, 0, None) == "terminating on signal 2"
    assert kill_report(15, 42, None) == "terminating on signal 15 from pid 42 (<unknown process>)"
    assert kill_report(15, 42, "") == "terminating on signal 15 from pid 42 ()"
    assert kill_report(1, 7, "/bin/sh") == "terminating on signal 1 from pid 7 (/bin/sh)"


def test_sender_command_is_argv0_or_none() -> None:
    assert sender_command(os.getpid()) == own_command()
    child = subprocess.Popen(["sleep", "0"])
    child.wait(WAIT)  # reaped: gone
    assert sender_command(child.pid) is None


async def test_first_signal_only_and_mask_restored(tmp_path: Path) -> None:
    # The loop side of a signal, without sending one (this process hosts other threads).
    before = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    stderr = io.StringIO()
    sock = tmp_path / "vm.sock"
    config = MachineConfig(monitors=[MonitorEndpoint("unix", path=str(sock))])
    machine = Machine(config, stderr=stderr, program="sim")
    await machine.start()
    signals = HostSignals(machine)
    signals.install()
    try:
        reader, writer = await asyncio.open_unix_connection(str(sock))
        await asyncio.wait_for(reader.readline(), WAIT)
        writer.write(b'{"execute": "qmp_capabilities"}\n')
        assert await asyncio.wait_for(reader.readline(), WAIT) == b'{"return": {}}\r\n'
        signals.killed(signal.SIGTERM, 0, None)
        signals.killed(signal.SIGHUP, 1, "init")
        assert await asyncio.wait_for(machine.server.wait_closed(), WAIT) == 0
        assert SHUTDOWN.fullmatch(await asyncio.wait_for(reader.read(), WAIT))
        writer.close()
    finally:
        signals.close()
        await machine.server.close()
    assert stderr.getvalue() == "sim: terminating on signal 15\n"
    assert signal.pthread_sigmask(signal.SIG_BLOCK, []) == before

"""libvirt's domain on real QEMU 7.2 and on the simulator: the same command line, the same answers.

Each test starts the program with libvirt 9.0's command line (monitor and
guest agent channel passed as listening sockets, ``fd=N``) and talks to it as
libvirt does (:mod:`tests.sim.libvirt_domain`), without libvirt. Run against
``qemu`` the tests check the recorded expectations still hold; against
``sim`` that the simulator meets them.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path

import pytest

from qmpevents.client.connection import QMPClient
from tests.sim.libvirt_domain import Domain, Monitor, connect, expected_start, start_domain
from tests.sim.programs import PROGRAMS

pytestmark = [pytest.mark.timeout(120), pytest.mark.parametrize("which", PROGRAMS)]

STAMP = re.compile(r'"seconds": \d+, "microseconds": \d+')
ELF_MAGIC = b"\x7fELF"


def stamped(line: str) -> str:
    """``line`` with its event timestamp replaced by the placeholders of the data file."""
    return STAMP.sub('"seconds": {seconds}, "microseconds": {microseconds}', line)


def start_sequence(domain: Domain, monitor: Monitor) -> None:
    """Replay libvirt's start sequence and compare every line with QEMU 7.2's."""
    for index, (command, arguments, expected) in enumerate(expected_start(domain), start=2):
        received = [stamped(line) for line in monitor.execute(command, arguments)]
        expected = [line.replace("{id}", f"libvirt-{index}") for line in expected]
        if command == "query-cpus-fast":
            tid = json.loads(received[-1])["return"][0]["thread-id"]
            # A real vCPU thread of the program, named as QEMU names it (debug-threads=on).
            comm = Path(f"/proc/{domain.process.pid}/task/{tid}/comm").read_text()
            assert comm == "CPU 0/TCG\n"
            expected = [line.replace("{thread_id}", str(tid)) for line in expected]
        assert received == expected, command


def power_off(monitor: Monitor) -> list[str]:
    """Press the power button until the guest acts; the lines from the last press on.

    A real guest listens only once the firmware has run its boot sector; the
    simulated one acts on the first press.
    """
    deadline = time.monotonic() + 30
    while True:
        lines = monitor.execute("system_powerdown")
        assert stamped(lines[0]).endswith('"event": "POWERDOWN"}')
        monitor.sock.settimeout(2.0)
        try:
            return lines + monitor.events_until("SHUTDOWN", timeout=2.0)
        except TimeoutError:
            assert time.monotonic() < deadline, "the guest never shut down"
        finally:
            monitor.sock.settimeout(30)


def test_start_sequence_answers_as_qemu(which: str, tmp_path: Path) -> None:
    with start_domain(which, tmp_path) as domain:
        monitor = connect(domain)
        assert json.loads(monitor.greeting)["QMP"]["version"]["qemu"] == {
            "micro": 22, "minor": 2, "major": 7,
        }  # fmt: skip
        start_sequence(domain, monitor)
        status = monitor.execute("query-status")
        assert json.loads(status[-1])["return"]["status"] == "running"
        # The monitor's socket is passed, so libvirt owns the paths: the program
        # listens where the descriptor was bound, and nowhere else.
        assert sorted(p.name for p in tmp_path.iterdir() if p.is_socket()) == [
            "chan.sock", "monitor.sock",
        ]  # fmt: skip


def test_our_client_on_the_passed_monitor_socket(which: str, tmp_path: Path) -> None:
    async def talk(path: Path) -> str:
        async with QMPClient(path) as qmp:
            await qmp.execute("cont")
            status = await qmp.execute("query-status")
            return str(status["status"])

    with start_domain(which, tmp_path) as domain:
        connect(domain).close()
        assert asyncio.run(talk(domain.monitor_path)) == "running"


def test_suspend_and_resume(which: str, tmp_path: Path) -> None:
    with start_domain(which, tmp_path) as domain:
        monitor = connect(domain)
        assert monitor.execute("cont")[0].endswith('"event": "RESUME"}')
        stop = monitor.execute("stop")
        assert '"event": "STOP"' in stop[0] and stop[1] == '{"return": {}, "id": "libvirt-3"}'
        resume = monitor.execute("cont")
        assert '"event": "RESUME"' in resume[0] and len(resume) == 2


def test_getfd_and_dump_to_the_named_descriptor(which: str, tmp_path: Path) -> None:
    dump = tmp_path / "dump.elf"
    with start_domain(which, tmp_path) as domain:
        monitor = connect(domain)
        monitor.execute("cont")
        assert monitor.execute("getfd", {"fdname": "dump"})[-1] == (
            '{"id": "libvirt-3", "error": {"class": "GenericError", '
            '"desc": "No file descriptor supplied via SCM_RIGHTS"}}'
        )
        # libvirt's virsh dump --memory-only: stop, getfd, detached dump to fd:dump, cont.
        assert '"event": "STOP"' in monitor.execute("stop")[0]
        fd = os.open(dump, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            assert monitor.execute("getfd", {"fdname": "dump"}, fds=[fd]) == [
                '{"return": {}, "id": "libvirt-5"}'
            ]
        finally:
            os.close(fd)
        arguments = {"paging": False, "protocol": "fd:dump", "detach": True}
        assert monitor.execute("dump-guest-memory", arguments) == [
            '{"return": {}, "id": "libvirt-6"}'
        ]
        completed = monitor.events_until("DUMP_COMPLETED")[-1]
        total = 168034304  # 160 MiB of RAM and DIMM, and the 256 KiB BIOS
        assert json.loads(completed)["data"] == {
            "result": {"total": total, "status": "completed", "completed": total}
        }
        # The descriptor was used up, as QEMU's monitor_get_fd() does.
        assert "has not been found" in monitor.execute("dump-guest-memory", arguments)[-1]
        assert monitor.execute("closefd", {"fdname": "dump"})[-1].endswith(
            '"desc": "File descriptor named \'dump\' not found"}}'
        )
        assert '"event": "RESUME"' in monitor.execute("cont")[0]
    with dump.open("rb") as f:
        assert f.read(4) == ELF_MAGIC
    assert dump.stat().st_size > total


def test_named_descriptors_belong_to_the_monitor(which: str, tmp_path: Path) -> None:
    with start_domain(which, tmp_path) as domain:
        first = connect(domain)
        with (tmp_path / "kept").open("wb") as kept:
            assert first.execute("getfd", {"fdname": "kept"}, fds=[kept.fileno()])[-1] == (
                '{"return": {}, "id": "libvirt-2"}'
            )
            digit = first.execute("getfd", {"fdname": "1x"}, fds=[kept.fileno()])[-1]
        assert "expects a name not starting with a digit" in digit
        first.close()
        second = connect(domain)
        assert second.execute("closefd", {"fdname": "kept"}) == [
            '{"return": {}, "id": "libvirt-2"}'
        ]


def test_power_button_and_reboot(which: str, tmp_path: Path) -> None:
    """virsh reboot: POWERDOWN, the guest shuts down, QEMU stops (-no-shutdown), libvirt
    resets and continues it."""
    with start_domain(which, tmp_path) as domain:
        monitor = connect(domain)
        monitor.execute("cont")
        lines = power_off(monitor)
        assert [stamped(line) for line in lines[:2]] == [
            '{"timestamp": {"seconds": {seconds}, "microseconds": {microseconds}}, '
            '"event": "POWERDOWN"}',
            f'{{"return": {{}}, "id": "libvirt-{monitor.count}"}}',
        ]
        assert json.loads(lines[2])["data"] == {"guest": True, "reason": "guest-shutdown"}
        assert len(lines) == 3
        assert '"event": "STOP"' in monitor.line()
        status = monitor.execute("query-status")[-1]
        assert json.loads(status)["return"] == {
            "status": "shutdown", "singlestep": False, "running": False,
        }  # fmt: skip
        refused = monitor.execute("cont")[-1]
        assert "Resetting the Virtual Machine is required" in refused
        reset = monitor.execute("system_reset")
        assert json.loads(reset[0])["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
        status = monitor.execute("query-status")[-1]
        assert json.loads(status)["return"]["status"] == "prelaunch"
        assert '"event": "RESUME"' in monitor.execute("cont")[0]
        assert domain.process.poll() is None


def test_guest_shutdown_without_no_shutdown_exits(which: str, tmp_path: Path) -> None:
    with start_domain(which, tmp_path, drop=("-no-shutdown",)) as domain:
        monitor = connect(domain)
        monitor.execute("cont")
        shutdown = power_off(monitor)[-1]
        assert json.loads(shutdown)["data"] == {"guest": True, "reason": "guest-shutdown"}
        with pytest.raises(EOFError):
            monitor.line()
        assert domain.process.wait(30) == 0

"""-daemonize and -pidfile: real QEMU 7.2 and qmpevents-qemu, real processes, same checks.

libvirt relies on this contract: the command returns once the QMP socket
listens, its status says whether the program started, and the pidfile names
the daemon. Every case runs on both programs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sim.programs import PROGRAMS, SIM, SIM_NAME, program

WAIT = 20.0
BASE = ("-display", "none", "-nodefaults", "-S", "-machine", "none,accel=tcg")


@pytest.fixture
def daemons() -> Iterator[list[int]]:
    """Pids of daemons a test started: each is killed at the end if still alive."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start(command: tuple[str, ...], *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *BASE, *argv], capture_output=True, text=True, timeout=WAIT, check=False
    )


def quit_over(path: Path) -> None:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(WAIT)
        sock.connect(str(path))
        reader = sock.makefile("rb")
        reader.readline()
        for command in ("qmp_capabilities", "quit"):
            sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
            while "event" in json.loads(reader.readline()):
                pass


def gone(pid: int) -> bool:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        # A zombie still answers signal 0: it is gone all the same.
        if Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z"):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("which", PROGRAMS)
def test_daemon_is_ready_when_the_command_returns(
    which: str, tmp_path: Path, daemons: list[int]
) -> None:
    command, _ = program(which)
    sock, pidfile = tmp_path / "qmp.sock", tmp_path / "vm.pid"
    old_umask = os.umask(0o022)
    try:
        done = start(
            command,
            *("-qmp", f"unix:{sock},server=on,wait=off", "-pidfile", str(pidfile), "-daemonize"),
        )
    finally:
        os.umask(old_umask)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    # Listening already: no wait.
    assert sock.exists()
    text = pidfile.read_text()
    pid = int(text)
    daemons.append(pid)
    assert text == f"{pid}\n"
    assert stat.S_IMODE(pidfile.stat().st_mode) == 0o600
    status = Path(f"/proc/{pid}/status").read_text()
    assert "Umask:\t0027" in status
    assert os.getsid(pid) != pid, "the daemon must not be a session leader"
    assert os.readlink(f"/proc/{pid}/cwd") == "/"
    for fd in (0, 1, 2):
        assert os.readlink(f"/proc/{pid}/fd/{fd}") == "/dev/null"
    locks = Path("/proc/locks").read_text()
    assert any(f"POSIX  ADVISORY  WRITE {pid} " in line for line in locks.splitlines())

    second = start(
        command,
        *("-qmp", f"unix:{tmp_path}/other.sock,server=on,wait=off"),
        *("-pidfile", str(pidfile), "-daemonize"),
    )
    assert second.returncode == 1
    assert second.stderr.endswith(
        ": cannot create PID file: Cannot lock pid file: Resource temporarily unavailable\n"
    )

    quit_over(sock)
    assert gone(pid)
    assert not pidfile.exists()


@pytest.mark.parametrize("which", PROGRAMS)
def test_pidfile_without_daemonize(which: str, tmp_path: Path) -> None:
    command, _ = program(which)
    sock, pidfile = tmp_path / "qmp.sock", tmp_path / "vm.pid"
    process = subprocess.Popen(
        [*command, *BASE, "-qmp", f"unix:{sock},server=on,wait=off", "-pidfile", str(pidfile)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + WAIT
        while not sock.exists():
            assert process.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        assert pidfile.read_text() == f"{process.pid}\n"
        quit_over(sock)
        assert process.wait(WAIT) == 0
        assert not pidfile.exists()
    finally:
        process.kill()
        process.wait(WAIT)


# (extra arguments, the end of stderr): each fails, so the command reports status 1.
FAILURES = [
    (("-foo",), "NAME: -foo: invalid option\n"),
    (("-pidfile", "{tmp}/no/dir/vm.pid"),
     "NAME: cannot create PID file: Could not create '{tmp}/no/dir/vm.pid': "
     "No such file or directory\n"),
    (("-nographic", "-machine", "pc"), "NAME: -nographic cannot be used with -daemonize\n"),
]  # fmt: skip


@pytest.mark.parametrize("which", PROGRAMS)
@pytest.mark.parametrize(("argv", "stderr"), FAILURES)
def test_a_failed_start_is_status_1(
    which: str, argv: tuple[str, ...], stderr: str, tmp_path: Path
) -> None:
    command, name = program(which)
    base = [a for a in BASE if a != "-nodefaults"] if "-nographic" in argv else list(BASE)
    done = subprocess.run(
        [*command, *base, *(a.format(tmp=tmp_path) for a in argv), "-daemonize",
         "-qmp", f"unix:{tmp_path}/qmp.sock,server=on,wait=off"],
        capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == stderr.format(tmp=tmp_path).replace("NAME", name)


def test_a_daemon_that_fails_later_removes_its_pidfile(tmp_path: Path) -> None:
    # QEMU 7.2 without /dev/kvm (measured) prints the same and leaves no pidfile.
    pidfile = tmp_path / "vm.pid"
    done = subprocess.run(
        [*SIM, "-display", "none", "-nodefaults", "-S", "-machine", "none,accel=kvm",
         "-qmp", f"unix:{tmp_path}/qmp.sock,server=on,wait=off",
         "-pidfile", str(pidfile), "-daemonize"],
        capture_output=True, text=True, timeout=WAIT, check=False,
        env={**os.environ, "QMPEVENTS_SIM_KVM_DEVICE": "/nonexistent/kvm"},  # a host without KVM
    )  # fmt: skip
    assert done.returncode == 1
    failed = f"{SIM_NAME}: failed to initialize kvm: No such file or directory\n"
    assert done.stderr.endswith(failed)
    assert not pidfile.exists()


@pytest.mark.parametrize("which", PROGRAMS)
def test_nographic_daemon_of_machine_none(which: str, tmp_path: Path, daemons: list[int]) -> None:
    """Machine none has no serial or parallel port, and -qmp replaces the HMP monitor."""
    command, _ = program(which)
    sock, pidfile = tmp_path / "qmp.sock", tmp_path / "vm.pid"
    done = subprocess.run(
        [*command, "-display", "none", "-S", "-machine", "none,accel=tcg", "-nographic",
         "-qmp", f"unix:{sock},server=on,wait=off", "-pidfile", str(pidfile), "-daemonize"],
        capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip
    assert (done.returncode, done.stderr) == (0, "")
    daemons.append(int(pidfile.read_text()))
    quit_over(sock)
    assert gone(daemons[0])


def test_nographic_needs_nodefaults_in_the_simulator(tmp_path: Path) -> None:
    done = subprocess.run(
        [*SIM, "-display", "none", "-S", "-nographic",
         "-qmp", f"unix:{tmp_path}/qmp.sock,server=on,wait=off"],
        capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == (
        f"{SIM_NAME}: -nographic: qmpevents-qemu has no serial port for stdio: add -nodefaults\n"
    )

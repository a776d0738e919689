"""Accelerator lists: real QEMU 7.2 and qmpevents-qemu alike, and the simulator without KVM.

The cases without kvm run the same command line on both programs and compare
what they print and whether they start. KVM cannot be compared that way on a
host that has it, so the kvm cases hold the lines QEMU 7.2 printed with
``/dev/kvm`` hidden (a mount namespace whose ``/dev`` has no kvm), which is how
the simulator behaves: it has no KVM.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from qmpevents.sim.accel import AccelError, configure_accelerators
from tests.sim.programs import PROGRAMS, SIM, SIM_NAME, program

WAIT = 20.0
BASE = ("-display", "none", "-nodefaults", "-S")


@dataclass
class Run:
    """How a program ended: status, stdout, stderr, and query-kvm if it started."""

    status: int
    stdout: str
    stderr: str
    kvm: dict[str, bool] | None = None


# The simulator plays a host whose /dev/kvm cannot be opened, as QEMU was measured.
NO_KVM_HOST = {**os.environ, "QMPEVENTS_SIM_KVM_DEVICE": "/nonexistent/kvm"}


def run(command: tuple[str, ...], tmp_path: Path, *argv: str) -> Run:
    """Run ``command`` with ``argv``; if it starts, ask query-kvm and quit."""
    path = tmp_path / "qmp.sock"
    process = subprocess.Popen(
        [*command, *BASE, *argv, "-qmp", f"unix:{path},server=on,wait=off"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=NO_KVM_HOST,
    )
    kvm = None
    try:
        deadline = time.monotonic() + WAIT
        while process.poll() is None and not path.exists():
            assert time.monotonic() < deadline, "neither a socket nor an exit"
            time.sleep(0.02)
        # QEMU listens before it tries the accelerators: a failing one may close on us.
        with contextlib.suppress(OSError, ValueError):
            kvm = _query_kvm_and_quit(path)
        stdout, stderr = process.communicate(timeout=WAIT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(WAIT)
    return Run(process.returncode, stdout, stderr, kvm)


def _query_kvm_and_quit(path: Path) -> dict[str, bool]:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(WAIT)
        sock.connect(str(path))
        reader = sock.makefile("rb")
        reader.readline()
        replies = []
        for command in ("qmp_capabilities", "query-kvm", "quit"):
            sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
            while "event" in (reply := json.loads(reader.readline())):
                pass
            replies.append(reply)
        kvm: dict[str, bool] = replies[1]["return"]
        return kvm


FALLBACK = "NAME: falling back to tcg\n"
MACHINE = "-machine"


def invalid(name: str, where: str = "") -> str:
    return f"NAME: {where}invalid accelerator {name}\n"


def fatal(option: str, message: str) -> str:
    return f"NAME: -accel {option}: {message}\n"


# (command line, QEMU's stderr with NAME for the program, whether it starts)
BOTH = [
    ((MACHINE, "none,accel=tcg"), "", True),
    ((MACHINE, "none,accel=tcg:kvm"), "", True),
    ((MACHINE, "none,accel=foo:tcg"), invalid("foo") + FALLBACK, True),
    ((MACHINE, "none,accel=foo"), invalid("foo"), False),
    ((MACHINE, "none,accel=hvf"), invalid("hvf"), False),
    ((MACHINE, "none,accel=xen"), invalid("xen"), False),
    ((MACHINE, "none,accel=qtest"), invalid("qtest"), False),
    ((MACHINE, "none,accel="), "NAME: no accelerator found\n", False),
    ((MACHINE, "none,accel=tcg:"), invalid("") + FALLBACK, True),
    ((MACHINE, "none,accel=kvm,accel=tcg"), "", True),
    (("-accel", "foo", "-accel", "tcg"), invalid("foo", "-accel foo: ") + FALLBACK, True),
    (("-accel", "tcg", "-accel", "tcg"), "", True),
    (("-accel", "tcg,thread=multi"), "", True),
    (("-accel", "kvm:tcg"), invalid("kvm:tcg", "-accel kvm:tcg: "), False),
    (("-accel", "tcg", MACHINE, "none,accel=tcg"),
     'NAME: The -accel and "-machine accel=" options are incompatible\n', False),
    (("-accel", "tcg,foo=bar"), fatal("tcg,foo=bar", "Property 'tcg-accel.foo' not found"), False),
    (("-accel", "kvm,foo=1", "-accel", "tcg"),
     fatal("kvm,foo=1", "Property 'kvm-accel.foo' not found"), False),
    (("-accel", "tcg,thread=foo"), fatal("tcg,thread=foo", "Invalid 'thread' setting foo"), False),
    (("-accel", "tcg,tb-size=x"),
     fatal("tcg,tb-size=x", "Parameter 'tb-size' expects uint64"), False),
    (("-accel", "tcg,split-wx=maybe"),
     fatal("tcg,split-wx=maybe", "Parameter 'split-wx' expects 'on' or 'off'"), False),
]  # fmt: skip


@pytest.mark.parametrize("which", PROGRAMS)
@pytest.mark.parametrize(("argv", "stderr", "starts"), BOTH)
def test_accelerators_as_qemu(
    which: str, argv: tuple[str, ...], stderr: str, starts: bool, tmp_path: Path
) -> None:
    command, name = program(which)
    ended = run(command, tmp_path, *argv)
    assert ended.stderr == stderr.replace("NAME", name)
    assert ended.status == (0 if starts else 1)
    if starts and which == "sim":
        assert ended.kvm == {"enabled": False, "present": True}


NO_KVM = "Could not access KVM kernel module: No such file or directory\n"
KVM_FAILS = f"{NO_KVM}NAME: failed to initialize kvm: No such file or directory\n"
KVM_OPTION_FAILS = (
    f"{NO_KVM}NAME: -accel kvm: failed to initialize kvm: No such file or directory\n"
)

# QEMU 7.2 with /dev/kvm hidden, measured; the simulator never has KVM.
WITHOUT_KVM = [
    ((MACHINE, "none,accel=kvm"), KVM_FAILS, False),
    ((MACHINE, "none,accel=kvm:tcg"), KVM_FAILS + FALLBACK, True),
    ((MACHINE, "none,accel=kvm:kvm"), KVM_FAILS * 2, False),
    (("-accel", "kvm"), KVM_OPTION_FAILS, False),
    (("-accel", "kvm", "-accel", "tcg"), KVM_OPTION_FAILS + FALLBACK, True),
]


@pytest.mark.parametrize(("argv", "stderr", "starts"), WITHOUT_KVM)
def test_the_simulator_has_no_kvm(
    argv: tuple[str, ...], stderr: str, starts: bool, tmp_path: Path
) -> None:
    ended = run(SIM, tmp_path, *argv)
    assert ended.stderr == stderr.replace("NAME", SIM_NAME)
    assert ended.status == (0 if starts else 1)
    if starts:
        assert ended.kvm == {"enabled": False, "present": True}


def test_timestamps_go_on_error_report_lines_only(tmp_path: Path) -> None:
    ended = run(SIM, tmp_path, "-msg", "timestamp=on", "-machine", "none,accel=kvm:tcg")
    lines = ended.stderr.splitlines()
    assert lines[0] == NO_KVM.strip()
    assert all(line.endswith(f"Z {SIM_NAME}: " + line.split(": ", 1)[1]) for line in lines[1:])
    assert len(lines) == 3


@pytest.mark.parametrize("which", PROGRAMS)
@pytest.mark.parametrize("argv", [("-accel", "help"), ("-accel", "thread=single")])
def test_accel_help_lists_tcg_and_kvm(which: str, argv: tuple[str, ...]) -> None:
    command, _ = program(which)
    done = subprocess.run(
        [*command, *BASE, *argv], capture_output=True, text=True, timeout=WAIT, check=False
    )
    listing = "Accelerators supported in QEMU binary:\ntcg\nkvm\n"
    assert (done.returncode, done.stdout) == (0, listing)


def test_the_outcome_reports_lines_in_order() -> None:
    outcome = configure_accelerators("kvm:foo:tcg", [], kvm=False)
    assert outcome.name == "tcg"
    assert outcome.lines == [
        ("invalid accelerator foo", True),
        (NO_KVM.strip(), False),
        ("failed to initialize kvm: No such file or directory", True),
        ("falling back to tcg", True),
    ]
    assert configure_accelerators(None, [], kvm=False).name == "tcg"
    assert configure_accelerators(None, [], kvm=True).name == "tcg"  # QEMU's default: tcg:kvm


def test_kvm_starts_where_the_host_has_it() -> None:
    outcome = configure_accelerators("kvm:tcg", [], kvm=True)
    assert (outcome.name, outcome.lines) == ("kvm", [])


def test_a_fatal_property_keeps_what_was_printed_before() -> None:
    with pytest.raises(AccelError) as error:
        configure_accelerators(None, ["kvm", "tcg,foo=1"], kvm=False)
    assert str(error.value) == "-accel tcg,foo=1: Property 'tcg-accel.foo' not found"
    assert [line for line, _ in error.value.outcome.lines] == [
        NO_KVM.strip(),
        "-accel kvm: failed to initialize kvm: No such file or directory",
    ]

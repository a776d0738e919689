"""The two programs that take a QEMU command line: real QEMU and ``qmpevents-qemu``.

Tests parametrized over ``"qemu"`` and ``"sim"`` run the same assertions against
both; without QEMU the ``"qemu"`` case is skipped (or fails, under
``QMPEVENTS_REQUIRE_QEMU=1``, as in tests/qemu).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

from tests.qemu.conftest import QEMU, _require

SIM_NAME: Final = "qmpevents-qemu"
# The simulator's main() under its installed name, whatever this checkout's scripts are.
SIM: Final = (
    sys.executable,
    "-c",
    "import sys; from qmpevents.sim.main import main; "
    f"sys.exit(main([{SIM_NAME!r}, *sys.argv[1:]]))",
)
PROGRAMS: Final = ("qemu", "sim")
PPC64_QEMU: Final = "qemu-system-ppc64"
"""The oracle of ``qmpevents-qemu-ppc64`` (``.ci/run`` installs it)."""


PPC64_SIM_NAME: Final = "qmpevents-qemu-ppc64"
PPC64_SIM: Final = (
    sys.executable,
    "-c",
    "import sys; from qmpevents.sim.main import main; "
    f"sys.exit(main([{PPC64_SIM_NAME!r}, *sys.argv[1:]]))",
)


def program(which: str) -> tuple[tuple[str, ...], str]:
    """``(command, name)``: how to start ``which`` and the name it prefixes messages with.

    ``qemu`` and ``sim`` stand for qemu-system-x86_64; ``qemu-ppc64`` and
    ``sim-ppc64`` for qemu-system-ppc64.
    """
    if which in ("qemu", "qemu-ppc64"):
        path = _require(QEMU if which == "qemu" else PPC64_QEMU)
        return (path,), os.path.basename(path)
    if which == "sim-ppc64":
        return PPC64_SIM, PPC64_SIM_NAME
    return SIM, SIM_NAME


def own_command() -> str:
    """How QEMU names this process as a signal sender: argv[0] from /proc/self/cmdline."""
    with open("/proc/self/cmdline", "rb") as f:
        return f.read().split(b"\0", 1)[0].decode()


@contextlib.contextmanager
def simulated_vm(path: Path) -> Iterator[str]:
    """A ``qmpevents-qemu`` process with its QMP socket at ``path``, killed on exit."""
    process = subprocess.Popen(
        [*SIM, "-display", "none", "-m", "64", "-qmp", f"unix:{path},server=on,wait=off"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not path.exists():
            assert process.poll() is None and time.monotonic() < deadline, "no socket"
            time.sleep(0.02)
        yield str(path)
    finally:
        process.kill()
        process.wait(10)

"""The two programs that take a QEMU command line: real QEMU and ``qmpevents-qemu``.

Tests parametrized over ``"qemu"`` and ``"sim"`` run the same assertions against
both; without QEMU the ``"qemu"`` case is skipped (or fails, under
``QMPEVENTS_REQUIRE_QEMU=1``, as in tests/qemu).
"""

from __future__ import annotations

import os
import sys
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


def program(which: str) -> tuple[tuple[str, ...], str]:
    """``(command, name)``: how to start ``which`` and the name it prefixes messages with."""
    if which == "qemu":
        path = _require(QEMU)
        return (path,), os.path.basename(path)
    return SIM, SIM_NAME


def own_command() -> str:
    """How QEMU names this process as a signal sender: argv[0] from /proc/self/cmdline."""
    with open("/proc/self/cmdline", "rb") as f:
        return f.read().split(b"\0", 1)[0].decode()

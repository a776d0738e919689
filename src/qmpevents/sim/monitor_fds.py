"""``getfd`` and ``closefd``: naming the descriptors a client passed, as QEMU 7.2 does.

A client on a unix monitor socket sends a descriptor with its ``getfd``
command (SCM_RIGHTS, received by :mod:`qmpevents.server.fdpass`); ``getfd``
names it, ``closefd`` closes it, and a command that takes ``fd:NAME``
(``dump-guest-memory``) uses it up. The names belong to the monitor. Errors
are QEMU's (monitor/misc.c, measured): no descriptor came with the command,
"No file descriptor supplied via SCM_RIGHTS"; a name starting with a digit
(the descriptor is closed), "Parameter 'fdname' expects a name not starting
with a digit"; ``closefd`` of an unknown name, "File descriptor named 'N' not
found". Commands run by a scenario have no monitor, hence no descriptors.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from qmpevents.server.commands import CommandContext
from qmpevents.server.server import QMPServer
from qmpevents.sim.errors import fail

__all__ = ["install", "take_named"]


class FdnameArguments(msgspec.Struct):
    """``getfd``/``closefd`` arguments."""

    fdname: str


def _getfd(args: FdnameArguments, ctx: CommandContext) -> dict[str, Any]:
    fd = ctx.fds.take_received() if ctx.fds is not None else None
    if fd is None:
        fail("No file descriptor supplied via SCM_RIGHTS")
    if args.fdname[:1] and args.fdname[0] in "0123456789":  # qemu_isdigit(): ASCII only
        os.close(fd)
        fail("Parameter 'fdname' expects a name not starting with a digit")
    assert ctx.fds is not None
    ctx.fds.set_named(args.fdname, fd)
    return {}


def _closefd(args: FdnameArguments, ctx: CommandContext) -> dict[str, Any]:
    if ctx.fds is None or not ctx.fds.close_named(args.fdname):
        fail(f"File descriptor named '{args.fdname}' not found")
    return {}


def take_named(ctx: CommandContext, name: str) -> int:
    """Use up the descriptor named ``name`` on the monitor of ``ctx`` (``fd:NAME``)."""
    fd = ctx.fds.take_named(name) if ctx.fds is not None else None
    if fd is None:
        fail(f"File descriptor named '{name}' has not been found")
    return fd


def install(server: QMPServer) -> None:
    """Register ``getfd`` and ``closefd``."""
    server.register("getfd", _getfd, FdnameArguments)
    server.register("closefd", _closefd, FdnameArguments)

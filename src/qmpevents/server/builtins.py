"""The commands and events every QMP server has, answering as QEMU 7.2 does.

Commands: ``qmp_capabilities`` (answered by the session), ``query-status``,
``query-version``, ``query-commands``, ``quit``, ``query-qmp-schema``,
``system_reset``, ``stop`` and ``cont``. They are registered in QEMU's relative
order, so that ``query-commands`` lists them as QEMU does.

Observed on QEMU 7.2 and reproduced here: ``stop`` on a VM that is not running
and ``cont`` on a running one reply ``{}`` and send no event; ``system_reset``
sends RESET before its reply and moves a stopped VM to ``prelaunch``; ``quit``
sends SHUTDOWN to every negotiated monitor, then its reply, then the server closes.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from qmpevents.protocol.introspection import CommandInfo, build_qmp_schema
from qmpevents.protocol.requests import GENERIC_ERROR
from qmpevents.protocol.server_session import CapabilitiesArguments
from qmpevents.server.commands import CommandContext, CommandSpec, QMPCommandFailure
from qmpevents.server.vmstate import NEEDS_RESET

if TYPE_CHECKING:
    from qmpevents.server.server import QMPServer

__all__ = [
    "BUILTIN_EVENTS",
    "CommandNameInfo",
    "StatusInfo",
    "VersionInfo",
    "VersionTriple",
    "install_builtin_commands",
]

BUILTIN_EVENTS: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "SHUTDOWN": (),
        "RESET": (),
        "STOP": (),
        "RESUME": (),
        "DUMP_COMPLETED": (),
        "GUEST_PANICKED": (),
        "MEM_UNPLUG_ERROR": ("deprecated",),
        "QUORUM_FAILURE": (),
        "QUORUM_REPORT_BAD": (),
        "MIGRATION_PASS": (),
        "VSERPORT_CHANGE": (),
    }
)
"""Events every server declares (name -> QAPI features): run-state and seed events."""

RunState = Literal[
    "debug",
    "inmigrate",
    "internal-error",
    "io-error",
    "paused",
    "postmigrate",
    "prelaunch",
    "finish-migrate",
    "restore-vm",
    "running",
    "save-vm",
    "shutdown",
    "suspended",
    "watchdog",
    "guest-panicked",
    "colo",
]


class VersionTriple(msgspec.Struct, frozen=True):
    """QAPI VersionTriple."""

    major: int
    minor: int
    micro: int


class VersionInfo(msgspec.Struct, frozen=True):
    """QAPI VersionInfo: the ``query-version`` return value."""

    qemu: VersionTriple
    package: str


class StatusInfo(msgspec.Struct, frozen=True):
    """QAPI StatusInfo (QEMU 7.2 members): the ``query-status`` return value."""

    running: bool
    singlestep: bool
    status: RunState


class CommandNameInfo(msgspec.Struct, frozen=True):
    """QAPI CommandInfo: one entry of the ``query-commands`` return value."""

    name: str


def _query_status(_: object, ctx: CommandContext) -> StatusInfo:
    vm = ctx.server.vm
    return StatusInfo(running=vm.running, singlestep=False, status=vm.status)  # type: ignore[arg-type]


def _query_version(_: object, ctx: CommandContext) -> VersionInfo:
    greeting = ctx.server.greeting
    triple = VersionTriple(greeting.major, greeting.minor, greeting.micro)
    return VersionInfo(triple, greeting.package)


def _query_commands(_: object, ctx: CommandContext) -> list[dict[str, str]]:
    return ctx.server.commands.query_commands()


def _query_qmp_schema(_: object, ctx: CommandContext) -> list[dict[str, Any]]:
    server = ctx.server
    commands = [
        CommandInfo(spec.name, spec.args, spec.returns, spec.allow_oob) for spec in server.commands
    ]
    return build_qmp_schema(commands, server.events.values())


def _quit(_: object, ctx: CommandContext) -> dict[str, Any]:
    server = ctx.server
    server.emit("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
    ctx.after_reply(server.request_close)
    return {}


def _system_reset(_: object, ctx: CommandContext) -> dict[str, Any]:
    server = ctx.server
    server.emit("RESET", {"guest": False, "reason": "host-qmp-system-reset"})
    server.vm.reset()
    return {}


def _stop(_: object, ctx: CommandContext) -> dict[str, Any]:
    ctx.server.vm.stop()
    return {}


def _cont(_: object, ctx: CommandContext) -> dict[str, Any]:
    vm = ctx.server.vm
    if vm.status in NEEDS_RESET:
        raise QMPCommandFailure(GENERIC_ERROR, "Resetting the Virtual Machine is required")
    vm.start()
    return {}


def install_builtin_commands(server: QMPServer) -> None:
    """Register the built-in commands on ``server``, in QEMU's registration order."""
    for spec in (
        CommandSpec("query-status", _query_status, returns=StatusInfo),
        CommandSpec("qmp_capabilities", None, CapabilitiesArguments),
        CommandSpec("query-version", _query_version, returns=VersionInfo),
        CommandSpec("query-commands", _query_commands, returns=list[CommandNameInfo]),
        CommandSpec("quit", _quit),
        CommandSpec("query-qmp-schema", _query_qmp_schema, returns=list[dict[str, Any]]),
        CommandSpec("system_reset", _system_reset),
        CommandSpec("stop", _stop),
        CommandSpec("cont", _cont),
    ):
        server.commands.add(spec)

"""The command registry of a QMP server: what is registered, and how a request runs.

A command is a name, a handler, a msgspec ``Struct`` declaring its arguments in
QAPI schema order, an optional return type (for ``query-qmp-schema``) and whether
it may run out of band. :meth:`CommandRegistry.dispatch` checks a request as
QEMU's ``qmp_dispatch()`` does (unknown command, OOB not allowed, then the
arguments) and runs the handler; every failure comes out as a
:class:`QMPCommandFailure` carrying the error class and QEMU's wording.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from qmpevents.errors import ConfigError, QMPEventsError
from qmpevents.protocol.arguments import ArgumentError, NoArguments, convert_arguments
from qmpevents.protocol.requests import COMMAND_NOT_FOUND, GENERIC_ERROR, Request

if TYPE_CHECKING:
    from qmpevents.server.fdpass import MonitorFds
    from qmpevents.server.server import QMPServer

__all__ = [
    "CommandContext",
    "CommandHandler",
    "CommandRegistry",
    "CommandSpec",
    "QMPCommandFailure",
]

log = logging.getLogger("qmpevents.server")

A = TypeVar("A", bound=msgspec.Struct)

CommandHandler = Callable[[A, "CommandContext"], Awaitable[Any] | Any]
"""``handler(args, ctx)``: sync or async, returns the ``return`` value of the reply."""


class QMPCommandFailure(QMPEventsError):
    """Raised by a command handler to answer with ``{"error": {"class": ..., "desc": ...}}``.

    ``error_class`` is a QAPI ErrorClass name (``GenericError``, ``DeviceNotFound``,
    ``CommandNotFound``, ...); ``desc`` is sent unchanged.
    """

    def __init__(self, error_class: str, desc: str) -> None:
        super().__init__(f"{error_class}: {desc}")
        self.error_class = error_class
        self.desc = desc


@dataclass(slots=True)
class CommandContext:
    """What a handler may know about the request it serves.

    ``server`` is the server running the command (to emit events, change the VM
    state, ...); ``peer`` names the client connection for logs; ``oob`` tells an
    ``exec-oob`` request from an ``execute`` one; ``fds`` holds the descriptors
    the client passed and named (None when no monitor connection sent it).
    """

    server: QMPServer
    peer: str
    oob: bool = False
    fds: MonitorFds | None = None
    _after_reply: list[Callable[[], object]] = field(default_factory=list)

    def after_reply(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` once the reply has been written (or dropped, if the client left).

        ``quit`` uses it to close the server only after its reply went out.
        """
        self._after_reply.append(callback)

    def run_after_reply(self) -> None:
        """Run the callbacks registered with :meth:`after_reply`, in order (server internal)."""
        callbacks, self._after_reply = self._after_reply, []
        for callback in callbacks:
            callback()


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """One registered command.

    ``handler`` is ``None`` for a command the protocol session answers itself
    (``qmp_capabilities``): it is listed by ``query-commands`` and described by
    ``query-qmp-schema`` but never dispatched here.
    """

    name: str
    handler: CommandHandler[Any] | None
    args: type[msgspec.Struct] = NoArguments
    returns: Any = None
    allow_oob: bool = False


class CommandRegistry:
    """The commands of one server, in registration order."""

    def __init__(self) -> None:
        self._commands: dict[str, CommandSpec] = {}

    def add(self, spec: CommandSpec) -> None:
        """Register ``spec``; a name can be registered once (``ConfigError`` otherwise)."""
        if spec.name in self._commands:
            raise ConfigError(f"command {spec.name!r} is already registered")
        if not (isinstance(spec.args, type) and issubclass(spec.args, msgspec.Struct)):
            raise ConfigError(f"arguments of {spec.name!r} must be a msgspec.Struct type")
        self._commands[spec.name] = spec

    def replace(self, spec: CommandSpec) -> None:
        """Give registered command ``spec.name`` another implementation, in the same place.

        For a machine whose behaviour differs from the built-in one (``system_reset``
        under a firmware); ``ConfigError`` when the name is not registered.
        """
        if spec.name not in self._commands:
            raise ConfigError(f"command {spec.name!r} is not registered")
        if not (isinstance(spec.args, type) and issubclass(spec.args, msgspec.Struct)):
            raise ConfigError(f"arguments of {spec.name!r} must be a msgspec.Struct type")
        self._commands[spec.name] = spec

    def remove(self, name: str) -> None:
        """Take ``name`` out: QEMU built without it answers CommandNotFound.

        Raises ``KeyError`` when ``name`` is not registered.
        """
        del self._commands[name]

    def __iter__(self) -> Iterator[CommandSpec]:
        return iter(self._commands.values())

    def __contains__(self, name: object) -> bool:
        return name in self._commands

    def query_commands(self) -> list[dict[str, str]]:
        """The ``query-commands`` return value.

        QEMU builds the list with QAPI_LIST_PREPEND over its registration-ordered
        command list, so the most recently registered command comes first.
        """
        return [{"name": name} for name in reversed(self._commands)]

    async def dispatch(self, request: Request, ctx: CommandContext) -> Any:
        """Run ``request`` and return its ``return`` value.

        Raises :class:`QMPCommandFailure` for every error reply: an unknown
        command, ``exec-oob`` of a command without ``allow_oob``, bad arguments,
        a handler's own failure, and an unexpected exception in the handler
        (logged with its traceback, answered with a GenericError).
        """
        name = request.command
        spec = self._commands.get(name)
        if spec is None or spec.handler is None:
            raise QMPCommandFailure(COMMAND_NOT_FOUND, f"The command {name} has not been found")
        if request.oob and not spec.allow_oob:
            raise QMPCommandFailure(GENERIC_ERROR, f"The command {name} does not support OOB")
        try:
            args = convert_arguments(spec.args, request.arguments)
        except ArgumentError as error:
            raise QMPCommandFailure(GENERIC_ERROR, error.desc) from None
        except msgspec.ValidationError as error:
            # A constraint the QEMU-style check does not model (a Meta pattern, ...).
            raise QMPCommandFailure(GENERIC_ERROR, str(error)) from None
        try:
            result = spec.handler(args, ctx)
            if inspect.isawaitable(result):
                result = await result
        except QMPCommandFailure:
            raise
        except Exception as error:
            log.exception("command %s from %s failed", name, ctx.peer)
            raise QMPCommandFailure(
                GENERIC_ERROR, f"Command {name} failed: internal error ({type(error).__name__})"
            ) from None
        return result

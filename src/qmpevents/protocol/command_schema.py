"""Check a command's arguments against a running QEMU's ``query-qmp-schema``.

:class:`~qmpevents.schema.live.LiveSchema` knows the events one QEMU declares;
:class:`CommandSchema` knows its commands. Arguments are checked as QEMU's
generated visitors check them: every member name, every required member, JSON
types and enum values, and no member the command does not declare (QEMU refuses
those with "Parameter 'x' is unexpected"). Problems are worded like event
problems: ``arguments.device: missing required member``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from qmpevents.errors import SchemaError

# The type compiler is LiveSchema's own, so commands and events are checked by the
# same rules and worded the same way.
from qmpevents.schema.live import SchemaCompiler
from qmpevents.schema.problems import UNEXPECTED, at

__all__ = ["CommandSchema"]

_Validator = Callable[[Any, str, list[str], bool], None]

# Commands QEMU declares with 'gen': false: their declared members are checked, but
# any other argument is accepted (device_add passes it on as a device property).
_OPEN_ARGUMENTS = frozenset({"device_add"})


class CommandSchema:
    """The commands one QEMU declares and validators for their arguments."""

    def __init__(self, commands: Mapping[str, _Validator | None]) -> None:
        """Use :meth:`from_query`; ``commands`` maps a name to its argument validator."""
        self._commands = dict(commands)

    @classmethod
    def from_query(cls, entries: Iterable[Mapping[str, Any]]) -> CommandSchema:
        """Compile the return value of ``query-qmp-schema`` (the decoded JSON list).

        Raises :class:`~qmpevents.errors.SchemaError` when the schema is inconsistent.
        """
        by_name: dict[str, Mapping[str, Any]] = {}
        arg_types: dict[str, str | None] = {}
        for entry in entries:
            if not isinstance(entry, Mapping) or "name" not in entry or "meta-type" not in entry:
                raise SchemaError(f"not a SchemaInfo entry: {entry!r:.200}")
            by_name[entry["name"]] = entry
            if entry["meta-type"] == "command":
                arg_types[entry["name"]] = entry.get("arg-type")
        compiler = SchemaCompiler(by_name)
        return cls(
            {
                name: None if arg_type is None else compiler.validator(arg_type)
                for name, arg_type in arg_types.items()
            }
        )

    def command_names(self) -> frozenset[str]:
        """Every command name this QEMU declares."""
        return frozenset(self._commands)

    def validate_arguments(
        self, name: str, arguments: Mapping[str, Any], *, member: str = "execute"
    ) -> list[str]:
        """Problems of ``arguments`` (``{}`` when absent) for command ``name``; empty when valid.

        A command this QEMU does not declare is one problem, at ``member`` (the
        request's ``execute`` or ``exec-oob``).
        """
        if name not in self._commands:
            return [at(member, f"unknown command {name!r}")]
        validate = self._commands[name]
        problems: list[str] = []
        if validate is None:
            problems.extend(at(f"arguments.{key}", UNEXPECTED) for key in arguments)
        else:
            validate(dict(arguments), "arguments", problems, name not in _OPEN_ARGUMENTS)
        return problems

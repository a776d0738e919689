"""QEMU's own declarations of the commands the simulator answers from a recording.

A command answered from a recording (:mod:`qmpevents.sim.recorded`) must be
registered like any other: with a msgspec ``Struct`` for its arguments, which
checks them with QEMU's wording, and a return type, which ``query-qmp-schema``
describes. Writing those by hand would let them drift from what QEMU declared;
instead :class:`RecordedSchema` builds them from the ``query-qmp-schema`` that
the same recording holds, so the simulator's schema says of each recorded
command exactly what QEMU 7.2 said (apart from QEMU's type numbering, which
our schema builder redoes).

QAPI introspection maps back as :mod:`qmpevents.protocol.introspection` maps
forward: builtins to ``str``/``int``/``float``/``bool``/``None``/``Any``, enums
to ``Literal``, arrays to ``list``, objects to Structs (an optional member is
``T | None = None``, wire names kept with ``rename``), alternates to unions.
Flat unions (objects with ``variants``) have no Struct form here: a return value
of that type is described as ``any``, and a command taking one is refused
(:class:`RecordedSchemaError`), never guessed.
"""

from __future__ import annotations

import keyword
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Union

import msgspec

from qmpevents.errors import ConfigError

__all__ = ["RecordedCommand", "RecordedSchema", "RecordedSchemaError"]

_BUILTINS: dict[str, Any] = {
    "string": str,
    "int": int,
    "number": float,
    "boolean": bool,
    "null": type(None),
    "value": Any,
}


class RecordedSchemaError(ConfigError):
    """A recorded schema that does not describe a command in a form we can declare."""


@dataclass(frozen=True, slots=True)
class RecordedCommand:
    """A command as QEMU declared it: its arguments Struct, return type and OOB flag."""

    name: str
    args: type[msgspec.Struct]
    returns: Any
    allow_oob: bool = False


class RecordedSchema:
    """The types of a recorded ``query-qmp-schema`` return value, as msgspec types."""

    def __init__(self, entries: Iterable[Mapping[str, Any]]) -> None:
        self._entries = {str(entry["name"]): entry for entry in entries}
        self._made: dict[tuple[str, bool], Any] = {}

    def command(self, name: str) -> RecordedCommand:
        """The declaration of command ``name`` (RecordedSchemaError if QEMU had none)."""
        entry = self._entries.get(name)
        if entry is None or entry.get("meta-type") != "command":
            raise RecordedSchemaError(f"the recorded schema declares no command {name!r}")
        args = self._type(str(entry["arg-type"]), arguments=True)
        if not (isinstance(args, type) and issubclass(args, msgspec.Struct)):
            raise RecordedSchemaError(f"the arguments of {name!r} are not an object")
        returns = self._type(str(entry["ret-type"]), arguments=False)
        return RecordedCommand(name, args, returns, bool(entry.get("allow-oob", False)))

    def _type(self, name: str, *, arguments: bool) -> Any:
        key = (name, arguments)
        if key not in self._made:
            self._made[key] = self._make(name, arguments=arguments)
        return self._made[key]

    def _make(self, name: str, *, arguments: bool) -> Any:
        entry = self._entries.get(name)
        if entry is None:
            raise RecordedSchemaError(f"the recorded schema has no type {name!r}")
        meta = entry.get("meta-type")
        if meta == "builtin":
            return _BUILTINS[str(entry["json-type"])]
        if meta == "enum":
            return Literal[tuple(str(value) for value in entry["values"])]
        if meta == "array":
            return list[self._type(str(entry["element-type"]), arguments=arguments)]  # type: ignore[misc]
        if meta == "alternate":
            arms = tuple(self._type(str(m["type"]), arguments=arguments) for m in entry["members"])
            return Union[arms]  # noqa: UP007 - a runtime-built union needs the subscript form
        if meta == "object":
            if entry.get("variants"):
                if arguments:
                    raise RecordedSchemaError(f"type {name!r} is a flat union")
                return Any
            return self._struct(name, entry["members"], arguments=arguments)
        raise RecordedSchemaError(f"type {name!r} has meta-type {meta!r}")

    def _struct(
        self, name: str, members: list[Mapping[str, Any]], *, arguments: bool
    ) -> type[msgspec.Struct]:
        fields: list[tuple[str, Any, Any] | tuple[str, Any]] = []
        rename: dict[str, str] = {}
        for member in members:
            wire = str(member["name"])
            attribute = _attribute(wire, rename)
            rename[attribute] = wire
            annotation = self._type(str(member["type"]), arguments=arguments)
            if "default" in member:
                fields.append((attribute, annotation | None, None))
            else:
                fields.append((attribute, annotation))
        # Arguments refuse unknown members (QEMU: "Parameter 'x' is unexpected").
        return msgspec.defstruct(
            f"QAPI{name}" if name.isdigit() else name,
            fields,
            kw_only=True,
            omit_defaults=True,
            forbid_unknown_fields=arguments,
            rename=rename,
        )


def _attribute(wire: str, taken: Mapping[str, str]) -> str:
    """A Python attribute name for member ``wire`` (QAPI names have dashes)."""
    attribute = wire.replace("-", "_").replace(".", "_")
    if not attribute.isidentifier() or keyword.iskeyword(attribute):
        attribute = f"m_{attribute}" if attribute.isidentifier() else f"m{len(taken)}"
    while attribute in taken:
        attribute += "_"
    return attribute

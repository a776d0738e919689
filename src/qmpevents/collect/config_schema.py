"""The collector's configuration file as msgspec Structs, and what a refused file did wrong.

:func:`~.config.load_config` reads the TOML, spells the keys of ``[collector]`` and
``[[vm]]`` in kebab-case (``batch_size`` is an alias of ``batch-size``) and
converts the document with ``msgspec.convert(document, ConfigFile)``, as scenarios
are (:mod:`qmpevents.sim.scenario_format`): a wrong type or an unknown key is a
``msgspec.ValidationError``. The value checks that also apply to the command line
(minimums, ``HOST:PORT``, names used twice) stay in :class:`~.config.CollectorConfig`.

:func:`explain` turns that error into ``(key path, problem)``. It takes only the
path from msgspec's message (``- at `$.vm[2].target```) and says the rest itself,
from the Structs (``msgspec.inspect``) and the value at that path: ``expected int,
got str 'x'``, ``unknown key (known: ...)``. A key whose whole value is one thing
(``listen``: a path or a list of them) carries a ``description`` that names it.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Any, Final

import msgspec
import msgspec.inspect as mi

__all__ = [
    "COLLECTOR_KEYS",
    "CollectorTable",
    "ConfigFile",
    "PathPart",
    "VMTable",
    "explain",
    "toml_value",
]

PathPart = str | int

NonEmpty = Annotated[str, msgspec.Meta(min_length=1, description="a non-empty string")]
SocketPath = Annotated[str, msgspec.Meta(min_length=1)]  # named by the description of listen
LibvirtURI = Annotated[str, msgspec.Meta(min_length=1)]  # checked by CollectorConfig
Number = int | float  # a TOML integer is fine where seconds are asked for


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename="kebab"):
    """A TOML table: unknown keys are errors, keys are kebab-case."""


class CollectorTable(_Table):
    """The ``[collector]`` table; a key left out is ``UNSET`` (``CollectorConfig``'s default).

    Each field is named as the :class:`~.config.CollectorConfig` field it sets.
    """

    db: str | msgspec.UnsetType = msgspec.UNSET
    watch_dir: str | msgspec.UnsetType = msgspec.UNSET
    watch_interval: Number | msgspec.UnsetType = msgspec.UNSET
    listen: (
        Annotated[
            SocketPath | list[SocketPath],
            msgspec.Meta(description="a socket path or a list of them"),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    libvirt: (
        Annotated[
            LibvirtURI | list[LibvirtURI],
            msgspec.Meta(description="a libvirt URI or a list of them"),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    nats: str | msgspec.UnsetType = msgspec.UNSET
    host: str | msgspec.UnsetType = msgspec.UNSET
    replicas: int | msgspec.UnsetType = msgspec.UNSET
    durable: str | msgspec.UnsetType = msgspec.UNSET
    metrics: (
        Annotated[str | int, msgspec.Meta(description="a string HOST:PORT or a port number")]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    metrics_public: bool | msgspec.UnsetType = msgspec.UNSET
    batch_size: int | msgspec.UnsetType = msgspec.UNSET
    batch_interval: Number | msgspec.UnsetType = msgspec.UNSET
    db_buffer: int | msgspec.UnsetType = msgspec.UNSET
    nats_buffer: int | msgspec.UnsetType = msgspec.UNSET
    queue_size: int | msgspec.UnsetType = msgspec.UNSET
    backoff: Number | msgspec.UnsetType = msgspec.UNSET
    max_backoff: Number | msgspec.UnsetType = msgspec.UNSET


class VMTable(_Table):
    """One ``[[vm]]`` table: the VM's ``name`` and its QMP ``target``."""

    name: NonEmpty
    target: NonEmpty


class ConfigFile(_Table):
    """The whole file: ``[collector]``, ``[[vm]]`` and ``[[action]]``.

    An action is a plain table here; :func:`~.actions.rules.parse_rules` checks it.
    """

    collector: Annotated[CollectorTable, msgspec.Meta(description="a table [collector]")] = (
        msgspec.field(default_factory=CollectorTable)
    )
    vm: Annotated[list[VMTable], msgspec.Meta(description="an array of tables [[vm]]")] = (
        msgspec.field(default_factory=list)
    )
    action: Annotated[
        list[Annotated[dict[str, Any], msgspec.Meta(description="a table")]],
        msgspec.Meta(description="an array of tables [[action]]"),
    ] = msgspec.field(default_factory=list)


COLLECTOR_KEYS: Final = tuple(field.encode_name for field in msgspec.structs.fields(CollectorTable))
"""Every ``[collector]`` key, kebab-case, in the order the README documents them."""

_PATH_PART: Final = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]")
_ABSENT: Final = object()


def explain(
    error: msgspec.ValidationError, document: Any, root: type[msgspec.Struct] = ConfigFile
) -> tuple[list[PathPart], str]:
    """``(path, problem)`` of the ``error`` of ``msgspec.convert(document, root)``.

    The path has the keys of ``document`` (``["vm", 2, "target"]``); a problem this
    cannot read is msgspec's own text.
    """
    text, sep, where = str(error).rpartition(" - at `$")
    if not sep:
        text, where = str(error), "`"
    path: list[PathPart] = [
        int(index) if index else name for name, index in _PATH_PART.findall(where[:-1])
    ]
    fallback = text[:1].lower() + text[1:]
    infos: list[mi.Type] = [mi.type_info(root)]
    values: list[Any] = [document]
    for part in path:
        info, value = _member(infos[-1], part), _item(values[-1], part)
        if info is None or value is _ABSENT:
            return path, fallback
        infos.append(info)
        values.append(value)
    table = _bare(infos[-1])
    if isinstance(table, mi.StructType) and isinstance(values[-1], dict):
        return _table_problem(table, values[-1], path) or (path, fallback)
    # Name the key whose description covers the value (listen, not listen[0]).
    for depth in range(len(path), -1, -1):
        tabular = isinstance(_bare(infos[depth]), mi.StructType | mi.DictType)
        if tabular and depth < len(path):
            break  # a table the value is in, not the value
        description = _description(infos[depth])
        if description is not None:
            return path[:depth], f"expected {description}, got {toml_value(values[depth])}"
        if tabular:
            break
    return path, f"expected {_expected(infos[-1])}, got {toml_value(values[-1])}"


def toml_value(value: Any) -> str:
    """``str 'x'``, ``int 5``, ``bool true``, ``array [1]``: a value as TOML types it."""
    if isinstance(value, bool):
        return f"bool {str(value).lower()}"
    names = {str: "str", int: "int", float: "float", list: "array", dict: "table"}
    dated = isinstance(value, datetime.date | datetime.time)
    shown = value.isoformat() if dated else repr(value)
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{names.get(type(value), type(value).__name__)} {shown}"


def _table_problem(
    info: mi.StructType, table: dict[str, Any], path: list[PathPart]
) -> tuple[list[PathPart], str] | None:
    known = [field.encode_name for field in info.fields]
    for key in table:
        if key in known:
            continue
        if not path:
            headers = ", ".join(_header(field) for field in info.fields)
            return [], f"unknown table or key {key!r} (expected {headers})"
        return [*path, key], f"unknown key (known: {', '.join(sorted(known))})"
    for field in info.fields:
        if field.required and field.encode_name not in table:
            return [*path, field.encode_name], f"expected {_expected(field.type)}; it is missing"
    return None


def _header(field: mi.Field) -> str:
    name = field.encode_name
    return f"[[{name}]]" if isinstance(_bare(field.type), mi.ListType) else f"[{name}]"


def _bare(info: mi.Type) -> mi.Type:
    return info.type if isinstance(info, mi.Metadata) else info


def _description(info: mi.Type) -> str | None:
    if isinstance(info, mi.Metadata) and info.extra_json_schema:
        description = info.extra_json_schema.get("description")
        return description if isinstance(description, str) else None
    return None


def _expected(info: mi.Type) -> str:
    """What a value of ``info`` is, in words: ``int``, ``str or int``, ``a table``."""
    description = _description(info)
    if description is not None:
        return description
    info = _bare(info)
    if isinstance(info, mi.UnionType):
        return " or ".join(_expected(choice) for choice in info.types)
    names = {
        mi.IntType: "int",
        mi.FloatType: "float",
        mi.BoolType: "bool",
        mi.StrType: "str",
        mi.ListType: "array",
        mi.StructType: "a table",
        mi.DictType: "a table",
    }
    return names.get(type(info), type(info).__name__)


def _member(info: mi.Type, part: PathPart) -> mi.Type | None:
    """The type of member ``part`` (a key, or an index) of a value of type ``info``."""
    info = _bare(info)
    if isinstance(info, mi.UnionType):
        found = (_member(choice, part) for choice in info.types)
        return next((member for member in found if member is not None), None)
    if isinstance(part, int):
        return info.item_type if isinstance(info, mi.ListType) else None
    if isinstance(info, mi.StructType):
        return next((f.type for f in info.fields if f.encode_name == part), None)
    return info.value_type if isinstance(info, mi.DictType) else None


def _item(value: Any, part: PathPart) -> Any:
    if isinstance(part, int):
        return value[part] if isinstance(value, list) and part < len(value) else _ABSENT
    return value.get(part, _ABSENT) if isinstance(value, dict) else _ABSENT

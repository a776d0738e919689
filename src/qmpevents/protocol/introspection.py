"""Build the ``query-qmp-schema`` answer from our command and event declarations.

The result is a list of SchemaInfo entries as QEMU 7.2 produces them
(scripts/qapi/introspect.py, compiled into qapi/qapi-introspect.c):

* Commands and events come first, in the order given, then every type they
  reach, each once, in the order of QEMU's work queue: a type joins the queue
  when first referenced, and entries are emitted by walking the queue while it
  grows (breadth first). An array joins the queue just before its element.
* With ``mask=True`` (what QEMU ships) every type name except builtins and
  arrays becomes a decimal string numbered by first reference: the first
  command's ``arg-type`` gets ``"0"``. QEMU's schema starts with
  ``query-status``, so its empty object ``q_empty`` is ``"0"``; ours is too
  whenever the first command takes no arguments. Arrays are named ``[E]`` after
  their element's (masked) name.
* Every integer type is introspected as the builtin ``int``, as QEMU does.
* Each dict is filled in QEMU's insertion order (meta-type specific members,
  then ``name``, ``meta-type`` and ``features``), so that
  :func:`qmpevents.protocol.encoding.encode` prints QEMU's bytes.

How Python declarations map onto QAPI types:

* ``str``, ``int`` (any ``Annotated`` width), ``bool``, ``float``, ``None``,
  ``Any`` and ``dict[...]`` -> builtins ``str``, ``int``, ``bool``,
  ``number``, ``null``, ``any`` (QAPI has no free-form dict member but ``any``).
* ``Literal["a", "b"]`` and ``enum.Enum`` with ``str`` values -> enum, values
  in declaration order. Two ``Literal`` types with the same values are one type.
* ``list[T]`` -> array. ``msgspec.Struct`` -> object; a Struct without fields
  (``NoArguments``, an empty return) is QEMU's ``q_empty``, as are absent
  ``arg-type``/``ret-type`` and events without data.
* An optional member (a field with a default, typed ``T | None = None``) is
  ``"default": null`` on type ``T``. A union of Structs tagged on the same
  ``tag_field`` -> an object with that tag member, ``tag`` and ``variants``.
  Any other union (``str | None`` without a default) -> an alternate.

Where this differs from QEMU, because our declarations carry less:

* Commands and events are separate inputs, so all commands precede all events;
  QEMU interleaves them in schema source order, which shifts the numbering.
* Declared empty structs are all ``q_empty`` (QEMU uses it for its implicit
  empty types only); ``Literal`` enums with equal values are merged.
* A union's tag enum lists exactly its variants' tags, in variant order, and
  members shared by every variant stay in the variants instead of the base.
* Type and member features (``deprecated``, ``unstable``) cannot be declared;
  only commands and events carry features.
* With ``mask=False`` type names are Python class names, ``Owner-member`` for
  a ``Literal`` (after its first use), the variants' common name prefix for a
  union (a lone tagged Struct is a one-variant union ``<Name>Union``) and that
  plus the tag name for its tag enum; QEMU's ``q_obj_*`` names are not reproduced.
"""

from __future__ import annotations

import enum
import types
import typing
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import msgspec

from qmpevents.schema.events import KnownEvent

__all__ = ["CommandInfo", "EventInfo", "build_qmp_schema"]


@dataclass(frozen=True, slots=True)
class CommandInfo:
    """A command as ``query-qmp-schema`` describes it.

    ``arg_type`` is the arguments Struct (``NoArguments`` for none). ``ret_type``
    is a type annotation: ``None`` or a Struct without fields for QEMU's ``{}``
    return, otherwise a Struct, ``list[...]``, ``str``, ``int``, ``bool``,
    ``dict[str, Any]`` (introspected as ``any``) and so on.
    """

    name: str
    arg_type: type[msgspec.Struct]
    ret_type: Any = None
    allow_oob: bool = False
    features: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class EventInfo:
    """An event as ``query-qmp-schema`` describes it; ``data_type`` None: no members."""

    name: str
    data_type: type[msgspec.Struct] | None
    features: tuple[str, ...] = ()

    @classmethod
    def from_model(cls, model: type[KnownEvent], features: tuple[str, ...] = ()) -> EventInfo:
        """The description of a modeled event (a value of ``EVENT_TYPES``).

        The data type is the annotation of the model's ``data`` field; a model
        without one describes an event without members.
        """
        annotations = {f.name: f.type for f in msgspec.structs.fields(model)}
        data = annotations.get("data")
        if data is not None and not _is_struct(data):
            raise TypeError(f"{model.__name__}.data is not a msgspec Struct: {data!r}")
        return cls(str(model.__struct_config__.tag), data, features)


def build_qmp_schema(
    commands: Iterable[CommandInfo], events: Iterable[EventInfo], *, mask: bool = True
) -> list[dict[str, Any]]:
    """Return the ``query-qmp-schema`` value for ``commands`` and ``events``.

    Entries and their members are in QEMU's order (see the module docstring).
    ``mask=False`` keeps type names readable, like QEMU's ``-u`` generator option.
    Raises ``ValueError`` for two commands or events of the same name (or, with
    ``mask=False``, two different types of the same name) and ``TypeError`` for
    an annotation that has no QAPI counterpart.
    """
    builder = _Builder(mask)
    for command in commands:
        builder.command(command)
    for event in events:
        builder.event(event)
    return builder.finish()


# --- the types, as introspect.py sees them ------------------------------------------

# One callback for all bodies: reference a type, get the name the entry shows.
_Use = Callable[["_Type"], str]

_JSON_TYPES = {
    "str": "string",
    "int": "int",
    "bool": "boolean",
    "number": "number",
    "any": "value",
    "null": "null",
}


@dataclass(frozen=True, slots=True)
class _Builtin:
    name: str
    meta_type = "builtin"

    @property
    def key(self) -> Hashable:
        return ("builtin", self.name)

    def body(self, use: _Use) -> dict[str, Any]:
        return {"json-type": _JSON_TYPES[self.name]}


@dataclass(frozen=True, slots=True)
class _Enum:
    key: Hashable
    name: str
    values: tuple[str, ...]
    meta_type = "enum"

    def body(self, use: _Use) -> dict[str, Any]:
        return {"members": [{"name": value} for value in self.values], "values": list(self.values)}


@dataclass(frozen=True, slots=True)
class _Array:
    element: _Type
    meta_type = "array"

    @property
    def key(self) -> Hashable:
        return ("array", self.element.key)

    def body(self, use: _Use) -> dict[str, Any]:
        return {"element-type": use(self.element)}


@dataclass(frozen=True, slots=True)
class _Object:
    """A Struct with fields, or ``q_empty`` when ``struct`` is None."""

    struct: type[msgspec.Struct] | None
    meta_type = "object"

    @property
    def key(self) -> Hashable:
        return ("object", self.struct)

    @property
    def name(self) -> str:
        return "q_empty" if self.struct is None else self.struct.__name__

    def body(self, use: _Use) -> dict[str, Any]:
        if self.struct is None:
            return {"members": []}
        return {
            "members": [_member(f, self.name, use) for f in msgspec.structs.fields(self.struct)]
        }


@dataclass(frozen=True, slots=True)
class _Union:
    """Structs tagged on one ``tag_field``: a QAPI union with an implicit tag enum."""

    variants: tuple[type[msgspec.Struct], ...]
    tag_field: str
    tags: tuple[str, ...]
    meta_type = "object"

    @property
    def key(self) -> Hashable:
        return ("union", self.variants)

    @property
    def name(self) -> str:
        names = [variant.__name__ for variant in self.variants]
        # A lone tagged Struct is a one-variant union: keep its name for the variant.
        prefix = _common_prefix(names) if len(names) > 1 else ""
        return prefix or "Or".join(names) + "Union"

    def body(self, use: _Use) -> dict[str, Any]:
        tag_name = self.name + self.tag_field[:1].upper() + self.tag_field[1:]
        tag_enum = _Enum(("enum", self.tags), tag_name, self.tags)
        return {
            "members": [{"name": self.tag_field, "type": use(tag_enum)}],
            "tag": self.tag_field,
            "variants": [
                {"case": tag, "type": use(_plain_object(variant))}
                for tag, variant in zip(self.tags, self.variants, strict=True)
            ],
        }


@dataclass(frozen=True, slots=True)
class _Alternate:
    key: Hashable
    name: str
    alternatives: tuple[_Type, ...]
    meta_type = "alternate"

    def body(self, use: _Use) -> dict[str, Any]:
        return {"members": [{"type": use(alternative)} for alternative in self.alternatives]}


_Type = _Builtin | _Enum | _Array | _Object | _Union | _Alternate

_EMPTY = _Object(None)
_SIMPLE: dict[Any, _Builtin] = {
    str: _Builtin("str"),
    int: _Builtin("int"),
    bool: _Builtin("bool"),
    float: _Builtin("number"),
    type(None): _Builtin("null"),
    Any: _Builtin("any"),
    dict: _Builtin("any"),
}


def _is_struct(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)


def _member(field: msgspec.structs.FieldInfo, owner: str, use: _Use) -> dict[str, Any]:
    context = f"{owner}-{field.encode_name}"
    annotation = field.type
    if field.required:
        member_type = _describe(annotation, context)
    else:
        arms = _union_args(annotation)
        if msgspec.UnsetType in arms:
            # ``T | None | UnsetType = UNSET``: absent is UNSET, and None is a real
            # null alternative (QAPI's StrOrNull).
            member_type = _describe_union(
                tuple(a for a in arms if a is not msgspec.UnsetType), context
            )
        else:
            # The ``None`` of ``T | None = None`` stands for "absent", which QAPI
            # says with "default": null rather than with a null alternative.
            member_type = _describe_union(tuple(a for a in arms if a is not type(None)), context)
    member: dict[str, Any] = {"name": field.encode_name, "type": use(member_type)}
    if not field.required:
        member["default"] = None
    return member


def _union_args(annotation: Any) -> tuple[Any, ...]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _describe(annotation: Any, context: str) -> _Type:
    """The type of ``annotation``; ``context`` names it if it has no name of its own."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _describe(typing.get_args(annotation)[0], context)
    if origin in (typing.Union, types.UnionType):
        return _describe_union(typing.get_args(annotation), context)
    if origin is Literal:
        # typing keeps Literal values in declaration order (msgspec.inspect sorts them).
        values = typing.get_args(annotation)
        return _Enum(("enum", values), context, _str_values(values, annotation))
    if origin is list:
        return _Array(_describe(typing.get_args(annotation)[0], context))
    if origin is dict:
        return _SIMPLE[dict]
    if isinstance(annotation, Hashable) and annotation in _SIMPLE:
        return _SIMPLE[annotation]
    if _is_struct(annotation):
        if annotation.__struct_config__.tag_field is not None:
            # A lone tagged Struct still carries its tag on the wire.
            return _describe_union((annotation,), context)
        return _plain_object(annotation)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = tuple(member.value for member in annotation)
        return _Enum(("enum", annotation), annotation.__name__, _str_values(values, annotation))
    raise TypeError(f"{annotation!r} has no query-qmp-schema type")


def _describe_union(arms: tuple[Any, ...], context: str) -> _Type:
    tag_field = _tag_field(arms[0]) if arms else None
    if tag_field is not None and all(_tag_field(arm) == tag_field for arm in arms):
        tags = tuple(arm.__struct_config__.tag for arm in arms)
        return _Union(arms, tag_field, _str_values(tags, arms))
    if len(arms) == 1:
        return _describe(arms[0], context)
    alternatives = tuple(_describe(arm, context) for arm in arms)
    return _Alternate(("alternate", tuple(a.key for a in alternatives)), context, alternatives)


def _tag_field(annotation: Any) -> str | None:
    """The tag member of a tagged Struct; None for anything else."""
    if _is_struct(annotation):
        tag_field: str | None = annotation.__struct_config__.tag_field
        return tag_field
    return None


def _plain_object(struct: type[msgspec.Struct]) -> _Object:
    return _Object(struct) if msgspec.structs.fields(struct) else _EMPTY


def _common_prefix(names: list[str]) -> str:
    # The lexicographically first and last names differ earliest of all pairs.
    first, last = min(names), max(names)
    length = 0
    while length < min(len(first), len(last)) and first[length] == last[length]:
        length += 1
    return first[:length]


def _str_values(values: Sequence[Any], source: object) -> tuple[str, ...]:
    if not all(isinstance(value, str) for value in values):
        raise TypeError(f"QAPI enum values and union tags are strings: {source!r}")
    return tuple(values)


# --- the walk ---------------------------------------------------------------------


class _Builder:
    """QEMU's QAPISchemaGenIntrospectVisitor: entity entries, then the type queue."""

    def __init__(self, mask: bool) -> None:
        self._mask = mask
        self._entries: list[dict[str, Any]] = []
        self._entity_names: set[str] = set()
        self._queue: list[_Type] = []
        self._queued: set[Hashable] = set()
        self._names: dict[Hashable, str] = {}
        self._named: dict[str, Hashable] = {}

    def command(self, command: CommandInfo) -> None:
        self._claim(command.name)
        ret = _EMPTY if command.ret_type is None else _describe(command.ret_type, command.name)
        entry: dict[str, Any] = {
            "arg-type": self._use(_describe(command.arg_type, command.name)),
            "ret-type": self._use(ret),
        }
        if command.allow_oob:
            entry["allow-oob"] = True
        self._add(entry, command.name, "command", command.features)

    def event(self, event: EventInfo) -> None:
        self._claim(event.name)
        data = _EMPTY if event.data_type is None else _describe(event.data_type, event.name)
        self._add({"arg-type": self._use(data)}, event.name, "event", event.features)

    def finish(self) -> list[dict[str, Any]]:
        # A plain index loop: emitting a type may append to the queue being walked.
        index = 0
        while index < len(self._queue):
            schema_type = self._queue[index]
            body = schema_type.body(self._use)
            self._add(body, self._use(schema_type), schema_type.meta_type, ())
            index += 1
        return self._entries

    def _claim(self, name: str) -> None:
        if name in self._entity_names:
            raise ValueError(f"{name!r} is declared twice")
        self._entity_names.add(name)

    def _add(
        self, entry: dict[str, Any], name: str, meta_type: str, features: tuple[str, ...]
    ) -> None:
        entry["name"] = name
        entry["meta-type"] = meta_type
        if features:
            entry["features"] = list(features)
        self._entries.append(entry)

    def _use(self, schema_type: _Type) -> str:
        """Queue ``schema_type`` if new and return the name references show (``_use_type``)."""
        if schema_type.key not in self._queued:
            self._queued.add(schema_type.key)
            self._queue.append(schema_type)
        if isinstance(schema_type, _Builtin):
            return schema_type.name
        if isinstance(schema_type, _Array):
            return "[" + self._use(schema_type.element) + "]"
        return self._name(schema_type)

    def _name(self, schema_type: _Enum | _Object | _Union | _Alternate) -> str:
        name = self._names.get(schema_type.key)
        if name is None:
            name = str(len(self._names)) if self._mask else schema_type.name
            owner = self._named.setdefault(name, schema_type.key)
            if owner != schema_type.key:
                raise ValueError(f"two different types are named {name!r}")
            self._names[schema_type.key] = name
        return name

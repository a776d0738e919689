"""Command arguments checked the way QEMU's QAPI input visitor checks them.

A command's arguments are declared once, as a msgspec ``Struct`` whose fields
are in QAPI schema order (wire names through ``msgspec.field(name=...)``).
:func:`convert_arguments` walks that declaration as QEMU's generated marshaller
walks ``qobject-input-visitor.c``: members in schema order, the first problem
wins, and leftover members are reported last. The messages are QEMU's own:

* ``Parameter 'x' is missing``
* ``Invalid parameter type for 'x', expected: string`` (integer, number,
  boolean, object, array, null)
* ``Parameter 'x' expects uint64`` (unsigned integers of the wrong type) and
  ``Parameter 'x' expects uint8_t`` (out of a narrow integer's range)
* ``Parameter 'x' does not accept value 'v'`` (enums; ``'null'`` for list items,
  as QEMU prints it)
* ``Parameter 'x' is unexpected``

Nested members are named ``outer.inner`` and list items ``name[i]``.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Mapping
from typing import Annotated, Any, Final, TypeVar

import msgspec
from msgspec import inspect as mi

from qmpevents.errors import QMPEventsError

S = TypeVar("S", bound=msgspec.Struct)


class ArgumentError(QMPEventsError):
    """Arguments QEMU would refuse; ``desc`` is QEMU's GenericError text."""

    def __init__(self, desc: str) -> None:
        super().__init__(desc)
        self.desc = desc


class NoArguments(msgspec.Struct, forbid_unknown_fields=True):
    """The arguments of a command that takes none."""


@functools.cache
def _struct_info(struct_type: type[msgspec.Struct]) -> mi.StructType:
    info = mi.type_info(struct_type)
    assert isinstance(info, mi.StructType)
    return info


def convert_arguments(struct_type: type[S], arguments: Mapping[str, Any]) -> S:
    """Check ``arguments`` against ``struct_type`` as QEMU would and build it.

    Raises :class:`ArgumentError` with QEMU's wording for the first problem.
    """
    _check_struct(_struct_info(struct_type), arguments, None)
    return msgspec.convert(arguments, struct_type, str_keys=True)


def _full_name(prefix: str | None, name: str) -> str:
    return name if prefix is None else f"{prefix}.{name}"


def _check_struct(info: mi.StructType, value: Mapping[str, Any], prefix: str | None) -> None:
    for field in info.fields:
        name = field.encode_name
        if name not in value:
            if field.required:
                raise ArgumentError(f"Parameter '{_full_name(prefix, name)}' is missing")
            continue
        if _is_alternate_with_null(field):
            _check_alternate(field.type, value[name], _full_name(prefix, name))
            continue
        _check_value(field.type, value[name], _full_name(prefix, name), name)
    known = {field.encode_name for field in info.fields}
    for name in value:
        if name not in known:
            raise ArgumentError(f"Parameter '{_full_name(prefix, name)}' is unexpected")


def _is_alternate_with_null(field: mi.Field) -> bool:
    """A member declared ``str | None | UnsetType = UNSET``: QAPI's ``StrOrNull``.

    Absent is UNSET, an explicit JSON null is None (msgspec.inspect shows such a
    member as optional with no default).
    """
    return (
        not field.required
        and field.default is msgspec.NODEFAULT
        and field.default_factory is msgspec.NODEFAULT
        and isinstance(field.type, mi.UnionType)
        and any(isinstance(m, mi.NoneType) for m in field.type.types)
    )


def _check_alternate(t: mi.Type, value: Any, full_name: str) -> None:
    if value is None:
        return
    assert isinstance(t, mi.UnionType)
    if any(isinstance(m, mi.StrType) for m in t.types) and not isinstance(value, str):
        raise _type_error(full_name, "StrOrNull")


def _type_error(full_name: str, expected: str) -> ArgumentError:
    return ArgumentError(f"Invalid parameter type for '{full_name}', expected: {expected}")


def _check_value(t: mi.Type, value: Any, full_name: str, enum_name: str | None) -> None:
    """Check one value; ``enum_name`` is what QEMU prints for enum errors (None: 'null')."""
    if isinstance(t, mi.AnyType):
        return
    if isinstance(t, mi.UnionType):
        # Optional members are declared ``T | None = None``; QAPI has no null there.
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        if len(members) == 1:
            _check_value(members[0], value, full_name, enum_name)
            return
        for member in members:
            try:
                _check_value(member, value, full_name, enum_name)
            except ArgumentError:
                continue
            return
        raise ArgumentError(f"Invalid parameter type for '{full_name}', expected: value")
    if isinstance(t, mi.StrType):
        if not isinstance(value, str):
            raise _type_error(full_name, "string")
    elif isinstance(t, mi.BoolType):
        if not isinstance(value, bool):
            raise _type_error(full_name, "boolean")
    elif isinstance(t, mi.IntType):
        _check_int(t, value, full_name)
    elif isinstance(t, mi.FloatType):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _type_error(full_name, "number")
    elif isinstance(t, mi.NoneType):
        if value is not None:
            raise _type_error(full_name, "null")
    elif isinstance(t, mi.EnumType | mi.LiteralType):
        if not isinstance(value, str):
            raise _type_error(full_name, "string")
        allowed = _enum_values(t)
        if value not in allowed:
            shown = enum_name if enum_name is not None else "null"
            raise ArgumentError(f"Parameter '{shown}' does not accept value '{value}'")
    elif isinstance(t, mi.ListType):
        if not isinstance(value, list):
            raise _type_error(full_name, "array")
        for i, item in enumerate(value):
            _check_value(t.item_type, item, f"{full_name}[{i}]", None)
    elif isinstance(t, mi.StructType):
        if not isinstance(value, dict):
            raise _type_error(full_name, "object")
        _check_struct(t, value, full_name)
    elif isinstance(t, mi.DictType):
        if not isinstance(value, dict):
            raise _type_error(full_name, "object")
    else:  # pragma: no cover - a declaration error, not an input error
        raise TypeError(f"unsupported argument type {t!r}")


# msgspec bounds must fit in int64, so uint64 is marked by this exact lower bound.
_UINT64_GE: Final = -(1 << 63)

UInt8 = Annotated[int, msgspec.Meta(ge=0, le=0xFF)]
"""QAPI ``uint8``: a negative number is out of range (QEMU wraps it first)."""
UInt32 = Annotated[int, msgspec.Meta(ge=0, le=0xFFFFFFFF)]
"""QAPI ``uint32``."""
UInt64 = Annotated[int, msgspec.Meta(ge=_UINT64_GE)]
"""QAPI ``uint64`` and ``size``: QEMU's input visitor also takes a negative number
(for compatibility) and the command sees it wrapped; so must the handler."""


def _check_int(t: mi.IntType, value: Any, full_name: str) -> None:
    unsigned = t.ge is not None and (t.ge >= 0 or t.ge == _UINT64_GE)
    if isinstance(value, bool) or not isinstance(value, int):
        if unsigned:
            raise ArgumentError(f"Parameter '{full_name}' expects uint64")
        raise _type_error(full_name, "integer")
    if (t.ge is not None and value < t.ge) or (t.le is not None and value > t.le):
        raise ArgumentError(f"Parameter '{full_name}' expects {_int_kind(t)}")


def _int_kind(t: mi.IntType) -> str:
    # QEMU's visit_type_uintN() names the C type: uint8_t, ...; 64 bits has no check.
    if t.ge is not None and (t.ge >= 0 or t.ge == _UINT64_GE):
        bits = (t.le or 0).bit_length()
        return f"uint{bits}_t" if bits in (8, 16, 32) else "uint64"
    bits = (t.le or 0).bit_length() + 1
    return f"int{bits}_t" if bits in (8, 16, 32) else "int64"


def _enum_values(t: mi.EnumType | mi.LiteralType) -> frozenset[Any]:
    if isinstance(t, mi.LiteralType):
        return frozenset(t.values)
    return frozenset(member.value for member in t.cls if isinstance(member, enum.Enum))

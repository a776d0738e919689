"""Why a message is not the typed event it names: the first problem, from the model itself.

The typed decoder only says yes or no quickly; when it says no, :func:`explain`
walks the event's declaration (``msgspec.inspect``) beside the decoded JSON and
names the first member that breaks it, in the shared vocabulary of
:mod:`.problems`. Nothing here depends on how msgspec words its own errors.
"""

from __future__ import annotations

from typing import Any

import msgspec
import msgspec.inspect as mi

from qmpevents.schema.problems import MISSING, invalid_enum, wrong_type

__all__ = ["explain"]

_Found = tuple[str, str] | None


def explain(struct_type: type[msgspec.Struct], value: Any) -> tuple[str, str]:
    """``(path, problem)`` of the first way ``value`` (decoded JSON) breaks ``struct_type``."""
    found = _check(mi.type_info(struct_type), value, "")
    return found if found is not None else ("", "does not match the event's model")


def _join(path: str, member: str) -> str:
    return f"{path}.{member}" if path else member


def _check(info: mi.Type, value: Any, path: str) -> _Found:
    if isinstance(info, mi.StructType):
        return _struct(info, value, path)
    if isinstance(info, mi.UnionType):
        return _union(info, value, path)
    if isinstance(info, mi.IntType):
        if isinstance(value, bool) or not isinstance(value, int):
            return path, wrong_type("int", value)
        return _bounds(info, value, path)
    if isinstance(info, mi.FloatType):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return path, wrong_type("float", value)
        return None
    if isinstance(info, mi.StrType):
        return None if isinstance(value, str) else (path, wrong_type("str", value))
    if isinstance(info, mi.BoolType):
        return None if isinstance(value, bool) else (path, wrong_type("bool", value))
    if isinstance(info, mi.NoneType):
        return None if value is None else (path, wrong_type("null", value))
    if isinstance(info, mi.LiteralType | mi.EnumType):
        allowed = (
            info.values
            if isinstance(info, mi.LiteralType)
            else tuple(member.value for member in info.cls)
        )
        if value in allowed:
            return None
        kinds = {type(a) for a in allowed}
        if type(value) not in kinds:
            return path, wrong_type("str" if str in kinds else "int", value)
        return path, invalid_enum(value)
    if isinstance(info, mi.ListType):
        if not isinstance(value, list):
            return path, wrong_type("array", value)
        for index, item in enumerate(value):
            if found := _check(info.item_type, item, f"{path}[{index}]"):
                return found
        return None
    if isinstance(info, mi.DictType):
        if not isinstance(value, dict):
            return path, wrong_type("object", value)
        for key, item in value.items():
            if found := _check(info.value_type, item, _join(path, str(key))):
                return found
        return None
    return None  # Any, Raw and the like accept anything


def _bounds(info: mi.IntType, value: int, path: str) -> _Found:
    if info.ge is not None and value < info.ge:
        return path, f"expected int >= {info.ge}"
    if info.le is not None and value > info.le:
        return path, f"expected int <= {info.le}"
    if info.gt is not None and value <= info.gt:
        return path, f"expected int > {info.gt}"
    if info.lt is not None and value >= info.lt:
        return path, f"expected int < {info.lt}"
    return None


def _struct(info: mi.StructType, value: Any, path: str) -> _Found:
    if not isinstance(value, dict):
        return path, wrong_type("object", value)
    for field in info.fields:
        name = field.encode_name
        if name not in value:
            if field.required:
                return _join(path, name), MISSING
            continue
        if found := _check(field.type, value[name], _join(path, name)):
            return found
    return None


def _union(info: mi.UnionType, value: Any, path: str) -> _Found:
    choices = [t for t in info.types if not isinstance(t, mi.NoneType)]
    if value is None and len(choices) < len(info.types):
        return None
    tagged = [t for t in choices if isinstance(t, mi.StructType) and t.tag_field]
    if tagged and len(tagged) == len(choices):
        if not isinstance(value, dict):
            return path, wrong_type("object", value)
        tag_field = tagged[0].tag_field
        assert tag_field is not None
        if tag_field not in value:
            return _join(path, tag_field), MISSING
        for struct in tagged:
            if struct.tag == value[tag_field]:
                return _struct(struct, value, path)
        return _join(path, tag_field), invalid_enum(value[tag_field])
    found: _Found = None
    for choice in choices:
        attempt = _check(choice, value, path)
        if attempt is None:
            return None
        found = found or attempt
    return found

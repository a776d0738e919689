"""Find the members of an event's ``data`` that its model does not declare.

Decoding ignores unknown members (newer QEMUs add them), so this walks the received
JSON against the model's fields after the fact. It runs only when asked for, which
keeps the decode hot path free of it.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Any

import msgspec

_Fields = dict[str, Any]  # wire name -> field annotation


@functools.cache
def _fields(struct_type: type[msgspec.Struct]) -> _Fields:
    return {f.encode_name: f.type for f in msgspec.structs.fields(struct_type)}


def _structs_in(annotation: Any) -> list[type[msgspec.Struct]]:
    """The Struct classes an annotation can hold (through Annotated, unions, Optional)."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _structs_in(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [s for arg in typing.get_args(annotation) for s in _structs_in(arg)]
    return []


def _pick(candidates: list[type[msgspec.Struct]], value: dict[str, Any]) -> Any:
    """The candidate a JSON object decodes to: by tag for tagged unions."""
    if len(candidates) == 1:
        return candidates[0]
    for candidate in candidates:
        config = candidate.__struct_config__
        if config.tag_field is not None and value.get(config.tag_field) == config.tag:
            return candidate
    return None


def _collect(
    value: dict[str, Any], struct_type: type[msgspec.Struct], prefix: str, out: dict[str, Any]
) -> None:
    fields = _fields(struct_type)
    tag_field = struct_type.__struct_config__.tag_field
    for key, member in value.items():
        if key == tag_field:
            continue
        if key not in fields:
            out[prefix + key] = member
        elif isinstance(member, dict):
            nested = _pick(_structs_in(fields[key]), member)
            if nested is not None:
                _collect(member, nested, f"{prefix}{key}.", out)


def unknown_members(raw: bytes, event_type: type[msgspec.Struct]) -> dict[str, Any]:
    """Members under ``data`` in ``raw`` that ``event_type``'s data model lacks.

    Keys are dotted paths relative to ``data``. An event type without a ``data``
    field reports every member of a received ``data`` object.
    """
    message = msgspec.json.decode(raw)
    data = message.get("data") if isinstance(message, dict) else None
    if not isinstance(data, dict):
        return {}
    out: dict[str, Any] = {}
    data_structs = _structs_in(_fields(event_type).get("data"))
    if data_structs:
        _collect(data, data_structs[0], "", out)
    else:
        out.update(data)
    return out

"""QEMU's option syntaxes: QemuOpts ``key=value`` lists, dotted keyval trees and sizes.

QEMU reads most options as ``key=value`` pairs separated by commas, where a
doubled comma (``,,``) stands for a literal comma and the first item may omit
its key (``-device pvpanic`` means ``driver=pvpanic``). ``-blockdev`` and
``-device`` also take dotted keys that build a tree (``children.0.driver=raw``;
numeric keys make a list) or a JSON object. :func:`coerce` then turns the
strings of such a tree into the integers and booleans a declared argument Struct
expects, as QEMU's keyval input visitor does.
"""

from __future__ import annotations

import json
import re
from typing import Any

import msgspec
from msgspec import inspect as mi

from qmpevents.errors import ConfigError

__all__ = ["OptionError", "coerce", "parse_bool", "parse_opts", "parse_size", "parse_tree"]


class OptionError(ConfigError):
    """A command-line option value QEMU would refuse; the message is QEMU's text."""


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKMGTPE]?)[bB]?\s*$")
_SUFFIXES = {"": 0, "k": 10, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}


def parse_size(text: str, default_suffix: str = "", *, name: str = "size") -> int:
    """A QEMU size (``64``, ``1G``, ``512k``); a bare number has ``default_suffix``.

    Raises :class:`OptionError` with QEMU's wording for anything else.
    """
    match = _SIZE.match(text)
    if match is None:
        raise OptionError(
            f"Parameter '{name}' expects a non-negative number below 2^64\n"
            "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
            "and exabytes, respectively."
        )
    number, suffix = match.groups()
    shift = _SUFFIXES[suffix or default_suffix]
    return int(float(number) * (1 << shift)) if "." in number else int(number) << shift


def parse_bool(text: str, name: str) -> bool:
    """QemuOpts booleans: ``on``/``off`` (and ``yes``/``no``, ``true``/``false``)."""
    if text in ("on", "yes", "true", "y"):
        return True
    if text in ("off", "no", "false", "n"):
        return False
    raise OptionError(f"Parameter '{name}' expects 'on' or 'off'")


def _split(text: str) -> list[str]:
    """Split at single commas; ``,,`` is an escaped comma."""
    items: list[str] = []
    current: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == ",":
            if text.startswith(",,", i):
                current.append(",")
                i += 2
                continue
            items.append("".join(current))
            current = []
        else:
            current.append(char)
        i += 1
    items.append("".join(current))
    return items


def parse_opts(text: str, implied: str | None = None) -> dict[str, str]:
    """``a=1,b=2`` as an ordered dict of strings; ``implied`` names a bare first item.

    A later repeat of a key wins, as in QemuOpts. A bare item other than the first
    is the boolean shorthand ``key`` = ``on``.
    """
    result: dict[str, str] = {}
    for index, item in enumerate(_split(text)):
        if not item and index == 0 and implied is not None:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            if index == 0 and implied is not None:
                result[implied] = key
                continue
            if not key:
                continue
            result[key] = "on"
            continue
        result[key] = value
    return result


def parse_tree(text: str, implied: str | None = None) -> dict[str, Any]:
    """A ``-blockdev``/``-device`` argument: a JSON object, or dotted keys built into a tree."""
    if text.lstrip().startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as error:
            raise OptionError(f"JSON parse error, {error}") from None
        if not isinstance(value, dict):
            raise OptionError("Invalid JSON: expected an object")
        return value
    tree: dict[str, Any] = {}
    for key, value in parse_opts(text, implied).items():
        node = tree
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise OptionError(f"Parameter '{key}' conflicts with '{part}'")
            node = child
        if isinstance(node.get(parts[-1]), dict):
            raise OptionError(f"Parameter '{key}' conflicts with an object")
        node[parts[-1]] = value
    result: dict[str, Any] = _lists(tree)
    return result


def _lists(node: Any) -> Any:
    """Objects whose keys are all 0..n-1 become lists, as in QEMU's keyval."""
    if not isinstance(node, dict):
        return node
    converted = {key: _lists(value) for key, value in node.items()}
    if converted and all(key.isdigit() for key in converted):
        indices = sorted(int(key) for key in converted)
        if indices == list(range(len(indices))):
            return [converted[str(i)] for i in indices]
    return converted


def coerce(struct_type: type[msgspec.Struct], tree: dict[str, Any]) -> dict[str, Any]:
    """Turn the strings of a keyval ``tree`` into what ``struct_type`` declares.

    Integers and booleans given as text (``vote-threshold=2``, ``once=on``) are
    converted where the declaration expects them; anything else is left for
    argument validation to judge.
    """
    info = mi.type_info(struct_type)
    assert isinstance(info, mi.StructType)
    return _coerce_struct(info, tree)


def _coerce_struct(info: mi.StructType, tree: dict[str, Any]) -> dict[str, Any]:
    fields = {field.encode_name: field.type for field in info.fields}
    return {
        key: _coerce(fields[key], value) if key in fields else value for key, value in tree.items()
    }


def _coerce(t: mi.Type, value: Any) -> Any:
    if isinstance(t, mi.UnionType):
        members = [m for m in t.types if not isinstance(m, mi.NoneType)]
        if len(members) == 1:
            return _coerce(members[0], value)
        if isinstance(value, dict):
            for member in members:
                if isinstance(member, mi.StructType):
                    return _coerce_struct(member, value)
        return value
    if not isinstance(value, str):
        if isinstance(t, mi.ListType) and isinstance(value, list):
            return [_coerce(t.item_type, item) for item in value]
        if isinstance(t, mi.StructType) and isinstance(value, dict):
            return _coerce_struct(t, value)
        return value
    if isinstance(t, mi.IntType):
        try:
            return int(value, 0)
        except ValueError:
            return value
    if isinstance(t, mi.BoolType):
        try:
            return parse_bool(value, "")
        except OptionError:
            return value
    return value

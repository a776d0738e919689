"""The shared vocabulary of validation problems.

Both the typed decoder and the live-schema validator describe a problem as
``path: problem`` with these words, so a caller sees the same text whichever
checked the message (``data.sector-num: expected int, got str``).
"""

from __future__ import annotations

from typing import Any

__all__ = ["MISSING", "UNEXPECTED", "at", "invalid_enum", "json_type_name", "wrong_type"]

MISSING = "missing required member"
UNEXPECTED = "unexpected member"


def json_type_name(value: Any) -> str:
    """The JSON type of a decoded value, named as msgspec names it (``str``, ``object``...)."""
    # bool first: it is a subclass of int.
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if value is None:
        return "null"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def wrong_type(expected: str, value: Any) -> str:
    """``expected int, got str``."""
    return f"expected {expected}, got {json_type_name(value)}"


def invalid_enum(value: Any) -> str:
    """``invalid enum value 'bogus'``."""
    return f"invalid enum value {value!r}"


def at(path: str, problem: str) -> str:
    """``path: problem``, or just ``problem`` at the top level."""
    return f"{path}: {problem}" if path else problem

"""Validators built from a running QEMU's ``query-qmp-schema``.

A :class:`LiveSchema` knows exactly the events one QEMU declares, including those
this library does not model, and checks event data against their declared types.
The SchemaInfo graph is compiled once into closures; recursive types are compiled
through a forwarding stub so that compilation terminates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from qmpevents.errors import SchemaError
from qmpevents.schema.problems import (
    MISSING,
    UNEXPECTED,
    at,
    invalid_enum,
    json_type_name,
    wrong_type,
)

__all__ = ["LiveSchema", "SchemaCompiler"]

# validator(value, path, problems, strict): appends "path: problem" strings.
_Validator = Callable[[Any, str, list[str], bool], None]
# members_check(obj, path, problems, strict) -> wire names it accounted for.
_MembersCheck = Callable[[dict[str, Any], str, list[str], bool], set[str]]

_MAX_MICROSECONDS = 999_999

# What each builtin json-type accepts, and how a problem names it.
_BUILTIN_KINDS: dict[str, tuple[frozenset[str], str]] = {
    "string": (frozenset({"str"}), "str"),
    "int": (frozenset({"int"}), "int"),
    "number": (frozenset({"int", "float"}), "number"),
    "boolean": (frozenset({"bool"}), "bool"),
    "null": (frozenset({"null"}), "null"),
    "object": (frozenset({"object"}), "object"),
    "value": (frozenset({"str", "int", "float", "bool", "null", "object", "array"}), "value"),
}


def _member_path(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


class SchemaCompiler:
    """Turns SchemaInfo entries into validators, each type compiled once."""

    def __init__(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        self._entries = entries
        self._validators: dict[str, _Validator] = {}
        self._member_checks: dict[str, _MembersCheck] = {}

    def entry(self, name: str) -> Mapping[str, Any]:
        try:
            return self._entries[name]
        except KeyError:
            raise SchemaError(f"query-qmp-schema refers to undeclared type {name!r}") from None

    def validator(self, name: str) -> _Validator:
        """The validator of type ``name``; recursion goes through a forwarding stub."""
        if name in self._validators:
            return self._validators[name]
        target: list[_Validator] = []

        def forward(value: Any, path: str, problems: list[str], strict: bool) -> None:
            target[0](value, path, problems, strict)

        self._validators[name] = forward
        compiled = self._build(self.entry(name))
        target.append(compiled)
        self._validators[name] = compiled
        return compiled

    def kinds(self, name: str) -> tuple[frozenset[str], str]:
        """The JSON kinds a type accepts and its name in problems (for alternates)."""
        entry = self.entry(name)
        meta = entry["meta-type"]
        if meta == "builtin":
            return _BUILTIN_KINDS[entry["json-type"]]
        if meta == "enum":
            return frozenset({"str"}), "str"
        if meta == "array":
            return frozenset({"array"}), "array"
        return frozenset({"object"}), "object"

    def _build(self, entry: Mapping[str, Any]) -> _Validator:
        meta = entry["meta-type"]
        if meta == "builtin":
            return self._builtin(entry["json-type"])
        if meta == "enum":
            return self._enum(entry)
        if meta == "array":
            return self._array(entry["element-type"])
        if meta == "object":
            return self._object(entry["name"])
        if meta == "alternate":
            return self._alternate([m["type"] for m in entry["members"]])
        raise SchemaError(f"type {entry['name']!r} has meta-type {meta!r}, not a data type")

    @staticmethod
    def _builtin(json_type: str) -> _Validator:
        try:
            kinds, label = _BUILTIN_KINDS[json_type]
        except KeyError:
            raise SchemaError(f"unknown builtin json-type {json_type!r}") from None

        def check(value: Any, path: str, problems: list[str], strict: bool) -> None:
            if json_type_name(value) not in kinds:
                problems.append(at(path, wrong_type(label, value)))

        return check

    @staticmethod
    def _enum(entry: Mapping[str, Any]) -> _Validator:
        # Newer QEMUs also describe values as "members" (with features); the plain
        # "values" list is present in both forms.
        values = entry.get("values")
        if values is None:
            values = [m["name"] for m in entry.get("members", [])]
        allowed = frozenset(values)

        def check(value: Any, path: str, problems: list[str], strict: bool) -> None:
            if not isinstance(value, str):
                problems.append(at(path, wrong_type("str", value)))
            elif value not in allowed:
                problems.append(at(path, invalid_enum(value)))

        return check

    def _array(self, element_type: str) -> _Validator:
        element = self.validator(element_type)

        def check(value: Any, path: str, problems: list[str], strict: bool) -> None:
            if not isinstance(value, list):
                problems.append(at(path, wrong_type("array", value)))
                return
            for index, item in enumerate(value):
                element(item, f"{path}[{index}]", problems, strict)

        return check

    def _object(self, name: str) -> _Validator:
        members_check = self.members_check(name)

        def check(value: Any, path: str, problems: list[str], strict: bool) -> None:
            if not isinstance(value, dict):
                problems.append(at(path, wrong_type("object", value)))
                return
            known = members_check(value, path, problems, strict)
            if strict:
                problems.extend(
                    at(_member_path(path, key), UNEXPECTED) for key in value if key not in known
                )

        return check

    def members_check(self, name: str) -> _MembersCheck:
        """Checks an object's members and union variants, without the unknown-member rule.

        Variants are checked against the same JSON object (QAPI flattens them), so the
        strict rule must run once, on the union of base and variant member names.
        """
        if name in self._member_checks:
            return self._member_checks[name]
        entry = self.entry(name)
        members = [
            (m["name"], "default" not in m, self.validator(m["type"]))
            for m in entry.get("members", [])
        ]
        names = frozenset(m[0] for m in members)
        tag = entry.get("tag")
        cases = {v["case"]: self.members_check(v["type"]) for v in entry.get("variants", [])}

        def check(value: dict[str, Any], path: str, problems: list[str], strict: bool) -> set[str]:
            known = set(names)
            for member, required, validate in members:
                if member in value:
                    validate(value[member], _member_path(path, member), problems, strict)
                elif required:
                    problems.append(at(_member_path(path, member), MISSING))
            # An enum case without a declared variant adds no members.
            variant = cases.get(value.get(tag)) if tag is not None else None
            if variant is not None:
                known |= variant(value, path, problems, strict)
            return known

        self._member_checks[name] = check
        return check

    def _alternate(self, alternatives: list[str]) -> _Validator:
        # QAPI dispatches an alternate on the JSON kind of the value, so only the
        # alternatives accepting that kind are tried; the first one's problems are
        # reported when none fits.
        options = [(self.kinds(t), self.validator(t)) for t in alternatives]
        expected = " or ".join(dict.fromkeys(label for (_, label), _ in options))

        def check(value: Any, path: str, problems: list[str], strict: bool) -> None:
            kind = json_type_name(value)
            candidates = [v for (kinds, _), v in options if kind in kinds]
            if not candidates:
                problems.append(at(path, wrong_type(expected, value)))
                return
            first: list[str] = []
            for index, validate in enumerate(candidates):
                attempt: list[str] = []
                validate(value, path, attempt, strict)
                if not attempt:
                    return
                if index == 0:
                    first = attempt
            problems.extend(first)

        return check


class LiveSchema:
    """The events one QEMU declares and validators for their data.

    Problems are strings ``path: problem`` (``data.sector-num: expected int, got
    str``), worded like the typed decoder's errors. Unknown members are accepted
    unless ``strict=True`` (newer QEMUs add members; clients must ignore them).
    """

    def __init__(self, events: Mapping[str, _Validator]) -> None:
        """Use :meth:`from_query`; ``events`` maps an event name to its data validator."""
        self._events = dict(events)

    @classmethod
    def from_query(cls, entries: Iterable[Mapping[str, Any]]) -> LiveSchema:
        """Compile the return value of ``query-qmp-schema`` (the decoded JSON list).

        Raises :class:`~qmpevents.errors.SchemaError` when the schema is inconsistent
        (a reference to an undeclared type, an unknown meta-type or json-type).
        """
        by_name: dict[str, Mapping[str, Any]] = {}
        event_args: dict[str, str | None] = {}
        for entry in entries:
            if not isinstance(entry, Mapping) or "name" not in entry or "meta-type" not in entry:
                raise SchemaError(f"not a SchemaInfo entry: {entry!r:.200}")
            by_name[entry["name"]] = entry
            if entry["meta-type"] == "event":
                event_args[entry["name"]] = entry.get("arg-type")
        compiler = SchemaCompiler(by_name)
        return cls(
            {
                name: _no_members if arg_type is None else compiler.validator(arg_type)
                for name, arg_type in event_args.items()
            }
        )

    def event_names(self) -> frozenset[str]:
        """Every event name this QEMU declares."""
        return frozenset(self._events)

    def validate_event(self, name: str, data: Any, *, strict: bool = False) -> list[str]:
        """Problems of ``data`` (the ``data`` member, ``{}`` when absent) for event ``name``.

        Empty when valid. An event this QEMU does not declare is one problem.
        """
        validate = self._events.get(name)
        if validate is None:
            return [at("event", f"unknown event {name!r}")]
        problems: list[str] = []
        validate(data, "data", problems, strict)
        return problems

    def validate_message(self, message: Any, *, strict: bool = False) -> list[str]:
        """Problems of a whole event message: ``timestamp``, ``event`` and ``data``.

        ``strict=True`` also reports unknown top-level members and unknown data members.
        """
        if not isinstance(message, dict):
            return [wrong_type("object", message)]
        problems = _timestamp_problems(message)
        name = message.get("event")
        if "event" not in message:
            problems.append(at("event", MISSING))
        elif not isinstance(name, str):
            problems.append(at("event", wrong_type("str", name)))
        else:
            problems.extend(self.validate_event(name, message.get("data", {}), strict=strict))
        if strict:
            problems.extend(
                at(key, UNEXPECTED) for key in message if key not in ("timestamp", "event", "data")
            )
        return problems


def _no_members(value: Any, path: str, problems: list[str], strict: bool) -> None:
    """The data validator of an event declared without ``arg-type``."""
    if not isinstance(value, dict):
        problems.append(at(path, wrong_type("object", value)))
    elif strict:
        problems.extend(at(_member_path(path, key), UNEXPECTED) for key in value)


def _timestamp_problems(message: dict[str, Any]) -> list[str]:
    if "timestamp" not in message:
        return [at("timestamp", MISSING)]
    timestamp = message["timestamp"]
    if not isinstance(timestamp, dict):
        return [at("timestamp", wrong_type("object", timestamp))]
    problems: list[str] = []
    for member, upper in (("seconds", None), ("microseconds", _MAX_MICROSECONDS)):
        path = f"timestamp.{member}"
        if member not in timestamp:
            problems.append(at(path, MISSING))
            continue
        value = timestamp[member]
        if json_type_name(value) != "int":
            problems.append(at(path, wrong_type("int", value)))
        elif value < 0:
            problems.append(at(path, "expected int >= 0"))
        elif upper is not None and value > upper:
            problems.append(at(path, f"expected int <= {upper}"))
    return problems

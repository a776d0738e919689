"""Action rules: what to do when an event matches, read from ``[[action]]`` tables.

A rule names the events it reacts to (``event`` glob, optional ``vm`` glob and
``where`` members, dotted for nested ones), its guards (``debounce``, ``rate``,
``max-runs`` per ``window``) and its ``steps``, run in order:

- ``{execute = "cmd", arguments = {...}, timeout = s}``: a QMP command on the same VM;
- ``{wait-for = "EVENT", timeout = s}``: an event of the VM that arrives after the
  previous step started (the run listens from its trigger on, so none is missed);
- ``{exec = ["prog", ...], timeout = s}``: a host program, the event in its
  environment and on stdin;
- ``{post = "http://...", timeout = s}``: the event JSON, POSTed.

Strings in ``arguments`` may hold ``{vm}``, ``{event}`` and ``{timestamp}``.
Every error is a :class:`~qmpevents.errors.ConfigError` naming the file, the rule
and the line of its ``[[action]]`` header.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmpevents.errors import ConfigError

__all__ = ["STEP_KINDS", "Rule", "Step", "parse_rules", "substitute"]

STEP_KINDS = ("execute", "wait-for", "exec", "post")
DEFAULT_TIMEOUT = 30.0
_RULE_KEYS = frozenset(
    {"name", "event", "vm", "where", "steps", "debounce", "rate", "max-runs", "window", "queue"}
)
_STEP_KEYS = {
    "execute": frozenset({"execute", "arguments", "timeout"}),
    "wait-for": frozenset({"wait-for", "timeout"}),
    "exec": frozenset({"exec", "timeout"}),
    "post": frozenset({"post", "timeout"}),
}
_GLOB = re.compile(r"^[A-Za-z0-9_.\-*?\[\]!]+$")
_HEADER = re.compile(r"^\s*\[\[\s*action\s*\]\]\s*(#.*)?$")


@dataclass(frozen=True)
class Step:
    """One step: ``kind``, its ``target`` (command, event, argv or URL), ``timeout``."""

    kind: str
    target: str | tuple[str, ...]
    arguments: Mapping[str, Any] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class Rule:
    """One ``[[action]]``; ``rate`` is runs per minute per VM (``None``: no limit)."""

    name: str
    event: str
    steps: tuple[Step, ...]
    vm: str = "*"
    where: Mapping[str, Any] = field(default_factory=dict)
    debounce: float = 0.0
    rate: float | None = None
    max_runs: int | None = None
    window: float = 600.0
    queue: int = 16
    line: int = 0

    def matches(self, vm: str, name: str) -> bool:
        """Whether an event ``name`` of ``vm`` is one for this rule (``where`` aside)."""
        return fnmatch.fnmatchcase(name, self.event) and fnmatch.fnmatchcase(vm, self.vm)

    def matches_data(self, data: Mapping[str, Any]) -> bool:
        """Whether the event's ``data`` has every ``where`` member (dotted: nested)."""
        for key, expected in self.where.items():
            value: Any = data
            for part in key.split("."):
                if not isinstance(value, Mapping) or part not in value:
                    return False
                value = value[part]
            if value != expected:
                return False
        return True


def substitute(value: Any, placeholders: Mapping[str, str]) -> Any:
    """``value`` with ``{vm}``, ``{event}``, ``{timestamp}`` replaced in every string."""
    if isinstance(value, str):
        for key, text in placeholders.items():
            value = value.replace("{" + key + "}", text)
        return value
    if isinstance(value, Mapping):
        return {k: substitute(v, placeholders) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, placeholders) for v in value]
    return value


def header_lines(text: str) -> list[int]:
    """The 1-based line of each ``[[action]]`` header in ``text``, in order."""
    return [n for n, line in enumerate(text.splitlines(), 1) if _HEADER.match(line)]


def parse_rules(path: Path, entries: Any, text: str) -> tuple[Rule, ...]:
    """The rules of the ``action`` array of the file at ``path`` (``text``: its contents)."""
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: action: expected an array of tables [[action]]")
    lines = header_lines(text)
    rules: list[Rule] = []
    for index, entry in enumerate(entries):
        line = lines[index] if index < len(lines) else 0
        label = entry.get("name") if isinstance(entry, dict) else None
        name = f"action {label!r}" if label else f"action[{index}]"
        where = f"{path}:{line}: {name}"
        try:
            rule = _rule(entry, line)
        except ConfigError as error:
            end = lines[index + 1] if index + 1 < len(lines) else None
            at = _key_line(text, str(error), line, end)
            raise ConfigError(f"{path}:{at}: {name}: {error}") from None
        if any(r.name == rule.name for r in rules):
            raise ConfigError(f"{where}: the name {rule.name!r} is used twice")
        rules.append(rule)
    return tuple(rules)


def _key_line(text: str, message: str, start: int, end: int | None) -> int:
    """The line of the key ``message`` is about, within the rule's lines (else ``start``)."""
    key = re.split(r"[.:\[]", message, maxsplit=1)[0].strip()
    pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=")
    lines = text.splitlines()[start : (end - 1) if end else None]
    for offset, line in enumerate(lines, start + 1):
        if pattern.match(line):
            return offset
    return start


def _rule(entry: Any, line: int) -> Rule:
    if not isinstance(entry, dict):
        raise ConfigError("expected a table")
    unknown = sorted(set(entry) - _RULE_KEYS)
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown key (known: {', '.join(sorted(_RULE_KEYS))})")
    name = _string(entry, "name")
    event = _glob(entry, "event")
    vm = _glob(entry, "vm") if "vm" in entry else "*"
    where = entry.get("where", {})
    if not isinstance(where, dict):
        raise ConfigError("where: expected a table of data member = value")
    steps = entry.get("steps")
    if not isinstance(steps, list) or not steps:
        raise ConfigError("steps: expected a non-empty array of tables")
    max_runs = _number(entry, "max-runs", integer=True)
    rate = _number(entry, "rate")
    return Rule(
        name=name,
        event=event,
        vm=vm,
        where=dict(where),
        steps=tuple(_step(i, step) for i, step in enumerate(steps)),
        debounce=_number(entry, "debounce") or 0.0,
        rate=rate,
        max_runs=int(max_runs) if max_runs is not None else None,
        window=_number(entry, "window") or 600.0,
        queue=int(_number(entry, "queue", integer=True) or 16),
        line=line,
    )


def _step(index: int, step: Any) -> Step:
    if not isinstance(step, dict):
        raise ConfigError(f"steps[{index}]: expected a table")
    kinds = [kind for kind in STEP_KINDS if kind in step]
    if len(kinds) != 1:
        raise ConfigError(
            f"steps[{index}]: expected exactly one of {', '.join(STEP_KINDS)}, got {sorted(step)}"
        )
    kind = kinds[0]
    unknown = sorted(set(step) - _STEP_KEYS[kind])
    if unknown:
        raise ConfigError(f"steps[{index}].{unknown[0]}: unknown key for a {kind} step")
    timeout = _number(step, "timeout", where=f"steps[{index}].")
    if timeout == 0:
        raise ConfigError(f"steps[{index}].timeout: must be above 0")
    target: str | tuple[str, ...]
    value = step[kind]
    if kind == "exec":
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"steps[{index}].exec: expected a non-empty array of strings")
        target = tuple(value)
    elif kind == "wait-for":
        target = _glob(step, kind, where=f"steps[{index}].")
    else:
        target = _string(step, kind, where=f"steps[{index}].")
    if kind == "post" and not str(target).startswith(("http://", "https://")):
        raise ConfigError(f"steps[{index}].post: expected an http:// or https:// URL")
    arguments = step.get("arguments", {})
    if not isinstance(arguments, dict):
        raise ConfigError(f"steps[{index}].arguments: expected a table")
    return Step(kind, target, dict(arguments), timeout or DEFAULT_TIMEOUT)


def _string(table: dict[str, Any], key: str, where: str = "") -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}{key}: expected a non-empty string, got {value!r}")
    return value


def _glob(table: dict[str, Any], key: str, where: str = "") -> str:
    value = _string(table, key, where)
    if not _GLOB.match(value) or value.count("[") != value.count("]"):
        raise ConfigError(f"{where}{key}: not a valid glob: {value!r}")
    return value


def _number(
    table: dict[str, Any], key: str, *, integer: bool = False, where: str = ""
) -> float | None:
    if key not in table:
        return None
    value: Any = table[key]
    wrong = not isinstance(value, int) if integer else not isinstance(value, int | float)
    if isinstance(value, bool) or wrong:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}{key}: expected {kind}, got {value!r}")
    number = float(value)
    if number < 0 or (integer and number == 0):
        raise ConfigError(f"{where}{key}: must be {'at least 1' if integer else '>= 0'}")
    return number

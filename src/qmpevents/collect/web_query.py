"""The query parameters of the web API, checked: anything unexpected is a :class:`BadRequest`.

Every endpoint names the parameters it takes; an unknown or repeated one is refused, as
is a value that cannot be what it claims (a ``since`` that is no time, a ``limit`` above
:data:`MAX_LIMIT`). Values are only ever bound as SQL parameters, never spliced into
SQL; a VM pattern that looks like SQL (quotes, ``;``, ``--``, comments, ``UNION
SELECT``) is refused anyway, with a message that says so, because it is no VM name.

Times are seconds since the epoch (``1780000000.5``), ISO-8601 (``2026-11-27T10:00``,
UTC unless an offset is given), ``now``, or relative to now (``90s``, ``10m``, ``2h``,
``1d``, ``1w``).
"""

from __future__ import annotations

import base64
import binascii
import datetime
import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = [
    "MAX_LIMIT",
    "MAX_WIDTH",
    "BadRequest",
    "Filters",
    "check_known",
    "decode_cursor",
    "encode_cursor",
    "event_patterns",
    "int_param",
    "parse_time",
    "vm_pattern",
]

MAX_LIMIT = 1000
"""The most events one page of ``/api/events`` holds."""
MAX_WIDTH = 10_000
"""The widest timeline (pixels) the API aggregates for."""
_MAX_TIME = 1e11  # the year 5138: anything later is a mistake, not a time
_RELATIVE = re.compile(r"^(?P<amount>\d+(?:\.\d+)?)(?P<unit>[smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_EVENT = re.compile(r"^[A-Za-z0-9_*?\-]{1,64}$")
_SQLISH = re.compile(
    r"""['";]|--|/\*|\*/|\b(?:union|select|insert|update|delete|drop|alter|pragma|attach)\s""",
    re.IGNORECASE,
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadRequest(ValueError):
    """A request the API refuses (HTTP 400); the message says which parameter and why."""


@dataclass(frozen=True)
class Filters:
    """What a view selects: VM glob, event names or globs, and a time range."""

    vm: str | None = None
    events: tuple[str, ...] = ()
    since: float | None = None
    until: float | None = None

    def events_sql(self) -> tuple[str, list[object]]:
        """SQL conditions (``AND``-joined, may be ``""``) and parameters on ``events``."""
        conditions: list[str] = []
        params: list[object] = []
        if self.vm is not None:
            conditions.append("vm GLOB ?")
            params.append(self.vm)
        if self.events:
            conditions.append("(" + " OR ".join("name GLOB ?" for _ in self.events) + ")")
            params.extend(self.events)
        if self.since is not None:
            conditions.append("qemu_ts >= ?")
            params.append(self.since)
        if self.until is not None:
            conditions.append("qemu_ts <= ?")
            params.append(self.until)
        return " AND ".join(conditions), params

    @classmethod
    def from_query(cls, query: Mapping[str, str], now: float | None = None) -> Filters:
        """The filters in ``query`` (``vm``, ``event``, ``since``, ``until``), checked."""
        now = time.time() if now is None else now
        since = parse_time("since", query["since"], now) if "since" in query else None
        until = parse_time("until", query["until"], now) if "until" in query else None
        if since is not None and until is not None and since > until:
            raise BadRequest(f"since ({since}) is after until ({until})")
        return cls(
            vm=vm_pattern(query["vm"]) if query.get("vm") else None,
            events=event_patterns(query["event"]) if query.get("event") else (),
            since=since,
            until=until,
        )


def check_known(query: Iterable[tuple[str, str]], known: Iterable[str]) -> dict[str, str]:
    """The parameters as a dict; :class:`BadRequest` for an unknown or repeated one."""
    allowed = set(known)
    found: dict[str, str] = {}
    for key, value in query:
        if key not in allowed:
            names = ", ".join(sorted(allowed)) or "none"
            raise BadRequest(f"unknown parameter {key!r} (this endpoint takes: {names})")
        if key in found:
            raise BadRequest(f"parameter {key!r} is given twice")
        found[key] = value
    return found


def parse_time(key: str, text: str, now: float) -> float:
    """Seconds since the epoch for ``text`` (see the module); :class:`BadRequest` otherwise."""
    value = text.strip()
    if value == "now":
        return now
    if match := _RELATIVE.match(value):
        return now - float(match["amount"]) * _UNIT_SECONDS[match["unit"]]
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = datetime.datetime.fromisoformat(value)
        except ValueError:
            raise BadRequest(
                f"{key}: {text[:80]!r} is not a time: give seconds since the epoch, "
                "ISO-8601 (2026-11-27T10:00Z), now, or a relative time (10m, 2h, 1d)"
            ) from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        seconds = when.timestamp()
    if not math.isfinite(seconds) or not 0 <= seconds <= _MAX_TIME:
        raise BadRequest(f"{key}: {text[:80]!r} is out of range (0 to {_MAX_TIME:.0f} seconds)")
    return seconds


def int_param(query: Mapping[str, str], key: str, default: int, lo: int, hi: int) -> int:
    """Integer ``key`` of ``query`` in ``[lo, hi]`` (``default`` if absent)."""
    text = query.get(key)
    if text is None:
        return default
    if not re.fullmatch(r"\d{1,12}", text.strip()):
        raise BadRequest(f"{key}: expected a whole number from {lo} to {hi}, got {text[:80]!r}")
    value = int(text)
    if not lo <= value <= hi:
        raise BadRequest(f"{key}: must be from {lo} to {hi}, got {value}")
    return value


def vm_pattern(text: str) -> str:
    """A VM name or glob (``web*``, ``db?``), matched as a glob and never read as SQL."""
    if len(text) > 256:
        raise BadRequest("vm: a VM name pattern is at most 256 characters")
    if _CONTROL.search(text):
        raise BadRequest("vm: control characters are not part of a VM name pattern")
    if _SQLISH.search(text):
        raise BadRequest(
            f"vm: {text[:80]!r} looks like SQL (quotes, ';', '--', comments, SQL keywords); "
            "vm is a VM name or a glob such as web-*"
        )
    return text


def event_patterns(text: str) -> tuple[str, ...]:
    """Comma-separated event names or globs (``VSERPORT_CHANGE,QUORUM_*``)."""
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if len(items) > 50:
        raise BadRequest("event: at most 50 event names")
    for item in items:
        if not _EVENT.match(item):
            raise BadRequest(
                f"event: {item[:80]!r} is not an event name or glob "
                "(letters, digits, '_', '-', '*', '?'; several separated by commas)"
            )
    return items


def encode_cursor(qemu_ts: float, row_id: int) -> str:
    """The opaque cursor after the event ``(qemu_ts, row_id)``."""
    return base64.urlsafe_b64encode(f"{qemu_ts!r}:{row_id}".encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[float, int]:
    """``(qemu_ts, row_id)`` of a cursor from :func:`encode_cursor`; :class:`BadRequest` else."""
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode("ascii")
        ts, row_id = raw.split(":")
        value = float(ts), int(row_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise BadRequest("cursor: not a cursor from this API (use next_cursor as given)") from None
    if not math.isfinite(value[0]):
        raise BadRequest("cursor: not a cursor from this API (use next_cursor as given)")
    return value

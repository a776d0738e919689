"""What the web API answers, read from the SQLite history: plain data, no HTTP here.

:func:`timeline` is the page's view: one lane per VM, events as marks, gaps as
intervals. A lane with more events in range than the view has buckets (``width``
pixels over ``bucket`` pixels each) is aggregated by SQLite into buckets (count, most
frequent kind, how many were rate-limited), so 500 VMs and 100k events load as at most
lanes x buckets cells. :func:`event_detail` is one event exactly as QEMU sent it, with
the members its typed model decoded.

An event's time is QEMU's timestamp; for the events QEMU rate-limits
(:data:`~qmpevents.throttle.QEMU_RULES`) ``held`` is how long it was held back before
the collector received it (received time minus QEMU's timestamp, seconds).
"""

from __future__ import annotations

import re
import sqlite3
import time
import typing
from collections import defaultdict
from typing import Any

import msgspec

from qmpevents.collect.web_query import Filters, decode_cursor, encode_cursor
from qmpevents.errors import QMPEventsError
from qmpevents.schema.decode import decode_event
from qmpevents.throttle import QEMU_RULES

__all__ = ["event_detail", "events_page", "stats", "timeline", "vms"]

_CHUNK = 500  # SQL parameters per IN (...) list


def held_back(name: str, qemu_ts: float, received_at: float) -> float | None:
    """Seconds a rate-limited event waited in QEMU's limiter (``None``: not rate-limited)."""
    if name not in QEMU_RULES:
        return None
    return round(max(0.0, received_at - qemu_ts), 3)


def _where(filters: Filters, extra: str = "") -> tuple[str, list[object]]:
    sql, params = filters.events_sql()
    parts = [part for part in (sql, extra) if part]
    return (" WHERE " + " AND ".join(parts)) if parts else "", params


def events_page(
    conn: sqlite3.Connection, filters: Filters, limit: int, cursor: str | None
) -> dict[str, Any]:
    """Events oldest first, ``limit`` at most, after ``cursor``; ``next_cursor`` if more."""
    extra = ""
    params_after: list[object] = []
    if cursor is not None:
        ts, row_id = decode_cursor(cursor)
        extra = "(qemu_ts > ? OR (qemu_ts = ? AND id > ?))"
        params_after = [ts, ts, row_id]
    where, params = _where(filters, extra)
    rows = conn.execute(
        "SELECT id, vm, name, qemu_ts, received_at, raw FROM events"
        f"{where} ORDER BY qemu_ts, id LIMIT ?",
        [*params, *params_after, limit + 1],
    ).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    items = [
        {
            "id": row_id,
            "vm": vm,
            "event": name,
            "timestamp": ts,
            "received_at": received,
            "held": held_back(name, ts, received),
            "message": msgspec.Raw(raw),
        }
        for row_id, vm, name, ts, received, raw in rows
    ]
    next_cursor = encode_cursor(rows[-1][3], rows[-1][0]) if more and rows else None
    return {"events": items, "next_cursor": next_cursor}


def _type_name(annotation: object) -> str:
    """``str``, ``Literal['pause', 'reset']``, ``GuestPanicInformationHyperV | None``."""
    name = getattr(annotation, "__name__", None)
    if name is not None and not typing.get_args(annotation):
        return str(name)
    return re.sub(r"\b(?:[A-Za-z_]\w*\.)+(?=[A-Za-z_])", "", str(annotation))


def typed_fields(raw: bytes) -> tuple[str | None, list[dict[str, Any]], str | None]:
    """(model name, [{name, type, value}], problem) of the event in ``raw``."""
    try:
        event = decode_event(raw)
    except QMPEventsError as error:
        return None, [], str(error)
    data = getattr(event, "data", None)
    model = type(event).__name__
    if model == "GenericEvent" or not isinstance(data, msgspec.Struct):
        values = data if isinstance(data, dict) else {}
        fields = [{"name": k, "type": "any", "value": v} for k, v in values.items()]
        return None, fields, None
    fields = []
    for field in msgspec.structs.fields(type(data)):
        value = getattr(data, field.name)
        if value is msgspec.UNSET:
            continue
        fields.append(
            {
                "name": field.encode_name,
                "type": _type_name(field.type),
                "value": msgspec.to_builtins(value),
            }
        )
    return model, fields, None


def event_detail(conn: sqlite3.Connection, row_id: int) -> dict[str, Any] | None:
    """One event: ``raw`` exactly as QEMU sent it, its typed ``fields``; ``None`` if absent."""
    row = conn.execute(
        "SELECT id, vm, name, qemu_ts, received_at, raw FROM events WHERE id = ?", (row_id,)
    ).fetchone()
    if row is None:
        return None
    return detail_of(*row)


def detail_of(
    row_id: int, vm: str, name: str, ts: float, received: float, raw: bytes
) -> dict[str, Any]:
    """The detail object of one stored event (see :func:`event_detail`)."""
    model, fields, problem = typed_fields(raw)
    rule = QEMU_RULES.get(name)
    return {
        "id": row_id,
        "vm": vm,
        "event": name,
        "timestamp": ts,
        "received_at": received,
        "held": held_back(name, ts, received),
        "rate_limited": None if rule is None else {"key": rule.key_member},
        "raw": raw.decode("utf-8", "replace"),
        "model": model,
        "fields": fields,
        "problem": problem,
    }


def vms(conn: sqlite3.Connection, filters: Filters) -> list[dict[str, Any]]:
    """Each VM with events or gaps: event count and range, and whether a gap is open now."""
    where, params = _where(Filters(vm=filters.vm))
    found: dict[str, dict[str, Any]] = {}
    for vm, count, first, last in conn.execute(
        f"SELECT vm, COUNT(*), MIN(qemu_ts), MAX(qemu_ts) FROM events{where} GROUP BY vm", params
    ):
        found[vm] = {"vm": vm, "events": count, "first": first, "last": last, "gap_open": False}
    gap_where = " WHERE vm GLOB ?" if filters.vm is not None else ""
    for vm, open_gaps in conn.execute(
        f"SELECT vm, SUM(ended IS NULL) FROM gaps{gap_where} GROUP BY vm",
        [filters.vm] if filters.vm is not None else [],
    ):
        entry = found.setdefault(
            vm, {"vm": vm, "events": 0, "first": None, "last": None, "gap_open": False}
        )
        entry["gap_open"] = bool(open_gaps)
    return [found[vm] for vm in sorted(found)]


def stats(conn: sqlite3.Connection, filters: Filters) -> dict[str, Any]:
    """Event counts per kind and per (VM, kind) for ``filters``."""
    where, params = _where(filters)
    per_vm = [
        {"vm": vm, "event": name, "count": count}
        for vm, name, count in conn.execute(
            f"SELECT vm, name, COUNT(*) FROM events{where} GROUP BY vm, name ORDER BY vm, name",
            params,
        )
    ]
    kinds: dict[str, int] = defaultdict(int)
    for entry in per_vm:
        kinds[entry["event"]] += entry["count"]
    return {"events": dict(sorted(kinds.items())), "per_vm": per_vm, "total": sum(kinds.values())}


def _lane_names(conn: sqlite3.Connection, filters: Filters) -> list[str]:
    params: list[object] = []
    where = ""
    if filters.vm is not None:
        where, params = " WHERE vm GLOB ?", [filters.vm]
    rows = conn.execute(
        f"SELECT DISTINCT vm FROM events{where} UNION SELECT DISTINCT vm FROM gaps{where}",
        params * 2,
    )
    return sorted(vm for (vm,) in rows)


def _chunks(items: list[str]) -> list[list[str]]:
    return [items[i : i + _CHUNK] for i in range(0, len(items), _CHUNK)]


def timeline(
    conn: sqlite3.Connection,
    filters: Filters,
    width: int,
    bucket: int,
    now: float | None = None,
) -> dict[str, Any]:
    """The page's view of ``[since, until]`` at ``width`` pixels (see the module).

    Marks are ``[id, kind, timestamp, held]``, buckets ``[index, count, kind, limited]``
    (``kind`` indexes ``kinds``; bucket ``i`` starts at ``since + i * bucket_seconds``),
    gaps ``[started, ended or None, reason]``.
    """
    now = time.time() if now is None else now
    until = filters.until if filters.until is not None else now
    since = filters.since if filters.since is not None else until - 3600
    filters = Filters(vm=filters.vm, events=filters.events, since=since, until=until)
    slots = max(1, width // bucket)
    seconds = max((until - since) / slots, 1e-6)
    where, params = _where(filters)

    per_vm = dict(
        conn.execute(f"SELECT vm, COUNT(*) FROM events{where} GROUP BY vm", params).fetchall()
    )
    kinds: list[str] = []
    kind_index: dict[str, int] = {}

    def kind(name: str) -> int:
        if name not in kind_index:
            kind_index[name] = len(kinds)
            kinds.append(name)
        return kind_index[name]

    lanes: dict[str, dict[str, Any]] = {
        vm: {"vm": vm, "count": per_vm.get(vm, 0), "marks": [], "buckets": [], "gaps": []}
        for vm in _lane_names(conn, filters)
    }
    detailed = [vm for vm, count in per_vm.items() if count <= slots]
    aggregated = [vm for vm, count in per_vm.items() if count > slots]
    for chunk in _chunks(detailed):
        marks = " AND vm IN (" + ",".join("?" * len(chunk)) + ")"
        for row_id, vm, name, ts, received in conn.execute(
            f"SELECT id, vm, name, qemu_ts, received_at FROM events{where}{marks}"
            " ORDER BY qemu_ts, id",
            [*params, *chunk],
        ):
            lanes[vm]["marks"].append([row_id, kind(name), ts, held_back(name, ts, received)])
    for chunk in _chunks(aggregated):
        cells: dict[tuple[str, int], list[Any]] = {}
        in_chunk = " AND vm IN (" + ",".join("?" * len(chunk)) + ")"
        for vm, index, name, count in conn.execute(
            f"SELECT vm, CAST((qemu_ts - ?) / ? AS INTEGER) AS b, name, COUNT(*)"
            f" FROM events{where}{in_chunk} GROUP BY vm, b, name",
            [since, seconds, *params, *chunk],
        ):
            index = min(index, slots - 1)
            cell = cells.setdefault((vm, index), [index, 0, None, 0, 0])
            cell[1] += count
            if count > cell[4]:
                cell[2], cell[4] = kind(name), count
            if name in QEMU_RULES:
                cell[3] += count
        for (vm, _), cell in sorted(cells.items(), key=lambda item: item[0]):
            lanes[vm]["buckets"].append(cell[:4])
    gap_where = " WHERE (ended IS NULL OR ended >= ?) AND started <= ?"
    gap_params: list[object] = [since, until]
    if filters.vm is not None:
        gap_where += " AND vm GLOB ?"
        gap_params.append(filters.vm)
    for vm, started, ended, reason in conn.execute(
        f"SELECT vm, started, ended, reason FROM gaps{gap_where} ORDER BY started", gap_params
    ):
        if vm in lanes:
            lanes[vm]["gaps"].append([started, ended, reason])
    counts: dict[str, int] = dict(
        conn.execute(f"SELECT name, COUNT(*) FROM events{where} GROUP BY name", params).fetchall()
    )
    for name in sorted(counts):
        kind(name)
    return {
        "since": since,
        "until": until,
        "now": now,
        "width": width,
        "bucket_seconds": seconds,
        "kinds": kinds,
        "rate_limited": sorted(QEMU_RULES),
        "counts": counts,
        "total": sum(counts.values()),
        "lanes": list(lanes.values()),
    }

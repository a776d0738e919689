"""LiveSchema built from QEMU 7.2's query-qmp-schema, and from hand-made schemas."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qmpevents.errors import SchemaError
from qmpevents.schema.live import LiveSchema
from tests.helpers import REFERENCE
from tests.schema._vectors import recorded_events

with (REFERENCE / "qmp_schema_full.json").open() as _f:
    FULL: list[dict[str, Any]] = json.load(_f)

SCHEMA = LiveSchema.from_query(FULL)
TS = {"seconds": 1795799056, "microseconds": 709675}


def msg(event: str, data: Any = None) -> dict[str, Any]:
    message: dict[str, Any] = {"timestamp": TS, "event": event}
    if data is not None:
        message["data"] = data
    return message


def test_knows_every_event_of_qemu_7_2() -> None:
    declared = {e["name"] for e in FULL if e["meta-type"] == "event"}
    # The x86_64 build declares 52 events (target-specific ones are compiled out).
    assert len(declared) == 52
    assert SCHEMA.event_names() == declared


@pytest.mark.parametrize(("transcript", "seq", "raw"), recorded_events(), ids=str)
def test_every_recorded_event_is_valid(transcript: str, seq: int, raw: bytes) -> None:
    assert SCHEMA.validate_message(json.loads(raw), strict=True) == []


QRB = {"node-name": "qM-c2", "sectors-count": 1, "sector-num": 0, "type": "read"}


@pytest.mark.parametrize(
    ("message", "problems"),
    [
        (
            msg("QUORUM_REPORT_BAD", {**QRB, "sector-num": "0"}),
            ["data.sector-num: expected int, got str"],
        ),
        (
            msg("QUORUM_REPORT_BAD", {k: v for k, v in QRB.items() if k != "node-name"}),
            ["data.node-name: missing required member"],
        ),
        (
            msg("QUORUM_REPORT_BAD", {**QRB, "type": "bogus"}),
            ["data.type: invalid enum value 'bogus'"],
        ),
        (msg("QUORUM_REPORT_BAD", {**QRB, "error": None}), ["data.error: expected str, got null"]),
        (
            msg("QUORUM_REPORT_BAD"),
            [
                f"data.{m}: missing required member"
                for m in ("type", "node-name", "sector-num", "sectors-count")
            ],
        ),
        (
            msg("DUMP_COMPLETED", {"result": {"status": "done", "completed": 0, "total": 0}}),
            ["data.result.status: invalid enum value 'done'"],
        ),
        (msg("DUMP_COMPLETED", {"result": []}), ["data.result: expected object, got array"]),
        (msg("VSERPORT_CHANGE", {"id": "vs0", "open": 1}), ["data.open: expected bool, got int"]),
        (msg("MIGRATION_PASS", {"pass": True}), ["data.pass: expected int, got bool"]),
        (
            msg("GUEST_PANICKED", {"action": "run", "info": {"type": "tdx"}}),
            ["data.info.type: invalid enum value 'tdx'"],
        ),
        (
            msg(
                "GUEST_PANICKED",
                {
                    "action": "run",
                    "info": {
                        "type": "s390",
                        "core": 0,
                        "psw-mask": 0,
                        "psw-addr": 0,
                        "reason": "nope",
                    },
                },
            ),
            ["data.info.reason: invalid enum value 'nope'"],
        ),
        (
            msg("GUEST_PANICKED", {"action": "run", "info": {"type": "hyper-v", "arg1": 1}}),
            [f"data.info.arg{i}: missing required member" for i in range(2, 6)],
        ),
        (msg("STOP", []), ["data: expected object, got array"]),
        (msg("NO_SUCH_EVENT"), ["event: unknown event 'NO_SUCH_EVENT'"]),
        (
            {"timestamp": {"seconds": -1, "microseconds": 10**6}, "event": "STOP"},
            [
                "timestamp.seconds: expected int >= 0",
                "timestamp.microseconds: expected int <= 999999",
            ],
        ),
        (
            {"timestamp": {"seconds": "1"}, "event": "STOP"},
            [
                "timestamp.seconds: expected int, got str",
                "timestamp.microseconds: missing required member",
            ],
        ),
        ({"event": "STOP"}, ["timestamp: missing required member"]),
        ({"timestamp": TS}, ["event: missing required member"]),
        ({"timestamp": TS, "event": None}, ["event: expected str, got null"]),
        ([], ["expected object, got array"]),
    ],
)
def test_precise_problems(message: Any, problems: list[str]) -> None:
    assert SCHEMA.validate_message(message) == problems


def test_unknown_members_are_reported_only_when_strict() -> None:
    message = msg(
        "DUMP_COMPLETED",
        {"result": {"status": "none", "completed": 0, "total": 0, "rate": 1}, "later": 2},
    )
    message["origin"] = "vm1"
    assert SCHEMA.validate_message(message) == []
    assert SCHEMA.validate_message(message, strict=True) == [
        "data.result.rate: unexpected member",
        "data.later: unexpected member",
        "origin: unexpected member",
    ]


def test_strict_knows_union_variant_members() -> None:
    data = {"action": "run", "info": {"type": "hyper-v", **{f"arg{i}": i for i in range(1, 6)}}}
    assert SCHEMA.validate_event("GUEST_PANICKED", data, strict=True) == []


def test_validate_event_takes_data_alone() -> None:
    assert SCHEMA.validate_event("MIGRATION", {"status": "setup"}) == []
    assert SCHEMA.validate_event("MIGRATION", {"status": 3}) == [
        "data.status: expected str, got int"
    ]


# --- hand-made schemas: shapes 7.2's events do not exercise ------------------------

BUILTINS = [
    {"name": n, "meta-type": "builtin", "json-type": j}
    for n, j in [
        ("str", "string"),
        ("int", "int"),
        ("number", "number"),
        ("bool", "boolean"),
        ("null", "null"),
        ("any", "value"),
    ]
]


def test_recursive_type_and_arrays() -> None:
    schema = LiveSchema.from_query(
        [
            *BUILTINS,
            {"name": "EV", "meta-type": "event", "arg-type": "node"},
            {
                "name": "node",
                "meta-type": "object",
                "members": [
                    {"name": "v", "type": "int"},
                    {"name": "kids", "type": "[node]", "default": None},
                ],
            },
            {"name": "[node]", "meta-type": "array", "element-type": "node"},
        ]
    )
    good = {"v": 1, "kids": [{"v": 2, "kids": [{"v": 3}]}]}
    assert schema.validate_event("EV", good) == []
    bad = {"v": 1, "kids": [{"v": 2}, {"v": 2, "kids": [{"v": "x"}]}, 5]}
    assert schema.validate_event("EV", bad) == [
        "data.kids[1].kids[0].v: expected int, got str",
        "data.kids[2]: expected object, got int",
    ]


def test_alternate_dispatches_on_json_kind() -> None:
    schema = LiveSchema.from_query(
        [
            *BUILTINS,
            {"name": "EV", "meta-type": "event", "arg-type": "args"},
            {"name": "args", "meta-type": "object", "members": [{"name": "x", "type": "alt"}]},
            {
                "name": "alt",
                "meta-type": "alternate",
                "members": [{"type": "str"}, {"type": "obj"}],
            },
            {"name": "obj", "meta-type": "object", "members": [{"name": "n", "type": "number"}]},
        ]
    )
    assert schema.validate_event("EV", {"x": "s"}) == []
    assert schema.validate_event("EV", {"x": {"n": 1.5}}) == []
    assert schema.validate_event("EV", {"x": {"n": "1"}}) == ["data.x.n: expected number, got str"]
    assert schema.validate_event("EV", {"x": 1}) == ["data.x: expected str or object, got int"]


def test_enum_members_form_of_newer_qemu_and_event_without_arg_type() -> None:
    schema = LiveSchema.from_query(
        [
            *BUILTINS,
            {"name": "EV", "meta-type": "event", "arg-type": "args"},
            {"name": "BARE", "meta-type": "event"},
            {"name": "args", "meta-type": "object", "members": [{"name": "e", "type": "en"}]},
            {"name": "en", "meta-type": "enum", "members": [{"name": "a"}, {"name": "b"}]},
        ]
    )
    assert schema.validate_event("EV", {"e": "b"}) == []
    assert schema.validate_event("EV", {"e": "c"}) == ["data.e: invalid enum value 'c'"]
    assert schema.validate_event("BARE", {}) == []
    assert schema.validate_event("BARE", {"x": 1}, strict=True) == ["data.x: unexpected member"]


@pytest.mark.parametrize(
    "entries",
    [
        [{"name": "EV", "meta-type": "event", "arg-type": "missing"}],
        [
            {"name": "EV", "meta-type": "event", "arg-type": "b"},
            {"name": "b", "meta-type": "builtin", "json-type": "weird"},
        ],
        [{"meta-type": "event"}],
    ],
)
def test_inconsistent_schema_is_a_schema_error(entries: list[dict[str, Any]]) -> None:
    with pytest.raises(SchemaError):
        LiveSchema.from_query(entries)

"""query-qmp-schema built from our declarations, checked against QEMU 7.2's own answer."""

from __future__ import annotations

import enum
import json
from collections.abc import Callable, Iterator
from typing import Any, Literal

import msgspec
import pytest

from qmpevents.protocol.arguments import NoArguments
from qmpevents.protocol.encoding import encode
from qmpevents.protocol.introspection import CommandInfo, EventInfo, build_qmp_schema
from qmpevents.schema.events import EVENT_TYPES, GuestPanicked, Stop
from qmpevents.schema.live import LiveSchema
from qmpevents.schema.types import DumpQueryResult, GuestPanicInformationHyperV
from qmpevents.server.builtins import RunState
from tests.helpers import REFERENCE, load_transcript

# --- declarations mirroring QEMU 7.2's ------------------------------------------------

DumpGuestMemoryFormat = Literal["elf", "kdump-zlib", "kdump-lzo", "kdump-snappy", "win-dmp"]


class StatusInfo(msgspec.Struct):
    running: bool
    singlestep: bool
    status: RunState


class VersionTriple(msgspec.Struct):
    major: int
    minor: int
    micro: int


class VersionInfo(msgspec.Struct):
    qemu: VersionTriple
    package: str


class DumpGuestMemoryArguments(msgspec.Struct, kw_only=True):
    paging: bool
    protocol: str
    detach: bool | None = None
    begin: int | None = None
    length: int | None = None
    format: DumpGuestMemoryFormat | None = None


class PRManagerInfo(msgspec.Struct):
    id: str
    connected: bool


COMMANDS = [
    CommandInfo("query-status", NoArguments, StatusInfo),
    CommandInfo("query-version", NoArguments, VersionInfo),
    CommandInfo("stop", NoArguments),
    CommandInfo("cont", NoArguments),
    CommandInfo("dump-guest-memory", DumpGuestMemoryArguments),
    CommandInfo("query-dump", NoArguments, DumpQueryResult),
    CommandInfo("query-pr-managers", NoArguments, list[PRManagerInfo]),
]
SEED_EVENTS = (
    "DUMP_COMPLETED",
    "GUEST_PANICKED",
    "MEM_UNPLUG_ERROR",
    "QUORUM_FAILURE",
    "QUORUM_REPORT_BAD",
    "MIGRATION_PASS",
    "VSERPORT_CHANGE",
)
EVENTS = [
    EventInfo.from_model(EVENT_TYPES[name], ("deprecated",) if name == "MEM_UNPLUG_ERROR" else ())
    for name in (*SEED_EVENTS, "STOP", "RESUME", "SHUTDOWN")
]
# Our GuestPanicInformation has the tdx variant (QEMU 10.1), which 7.2 lacks.
EXACT_EVENTS = [event for event in EVENTS if event.name != "GUEST_PANICKED"]


def load_reference() -> list[dict[str, Any]]:
    with (REFERENCE / "qmp_schema_full.json").open() as f:
        entries: list[dict[str, Any]] = json.load(f)
    return entries


def reference_reply() -> str:
    """The exact text of QEMU's query-qmp-schema reply (conn C, id c8)."""
    lines = load_transcript("protocol")["lines"]
    reply: str = next(
        line["raw"] for line in lines if line["dir"] == "recv" and '"meta-type"' in line["raw"]
    )
    return reply


# --- QEMU's walk, replayed over its own answer -----------------------------------------


def type_refs(entry: dict[str, Any]) -> Iterator[str]:
    """The type names an entry refers to, in the order introspect.py uses them."""
    for key in ("arg-type", "ret-type", "element-type"):
        if key in entry:
            yield entry[key]
    for member in entry.get("members", []):
        if "type" in member:
            yield member["type"]
    for variant in entry.get("variants", []):
        yield variant["type"]


def replace_refs(entry: dict[str, Any], rename: Callable[[str], str]) -> dict[str, Any]:
    out = dict(entry)
    for key in ("arg-type", "ret-type", "element-type"):
        if key in out:
            out[key] = rename(out[key])
    if "members" in out:
        out["members"] = [
            {**m, "type": rename(m["type"])} if "type" in m else m for m in out["members"]
        ]
    if "variants" in out:
        out["variants"] = [{**v, "type": rename(v["type"])} for v in out["variants"]]
    return out


def qemu_walk(
    reference: list[dict[str, Any]], entities: list[str], *, mask: bool = True
) -> list[dict[str, Any]]:
    """What QEMU would answer for a schema holding only ``entities`` (in that order).

    A re-implementation of introspect.py's walk over the SchemaInfo graph, with
    the reference's names kept when ``mask`` is false;
    test_qemu_walk_reproduces_qemu checks it against QEMU's complete answer.
    """
    by_name = {entry["name"]: entry for entry in reference}
    queue: list[str] = []
    masked: dict[str, str] = {}

    def use(ref: str) -> str:
        if ref not in queue:
            queue.append(ref)
        if ref.startswith("["):
            return "[" + use(ref[1:-1]) + "]"
        if by_name[ref]["meta-type"] == "builtin" or not mask:
            return ref
        return masked.setdefault(ref, str(len(masked)))

    out = [replace_refs(by_name[name], use) for name in entities]
    index = 0
    while index < len(queue):
        entry = replace_refs(by_name[queue[index]], use)
        entry["name"] = use(queue[index])
        out.append(entry)
        index += 1
    return out


def masked_number(ref: str) -> int | None:
    bare = ref.strip("[]")
    return int(bare) if bare.isdigit() else None


def test_qemu_walk_reproduces_qemu() -> None:
    """The replayed walk against QEMU's whole answer.

    QEMU numbers and queues the types of every target's schema and then compiles
    out the ``#if`` parts for this one. Its answer therefore has numbering gaps
    (211-214 first), two types referenced only from compiled-out members, and
    from CpuModelInfo ("483", first used by the s390-only
    query-cpu-model-comparison) on, types queued earlier than the remaining
    references explain. Apart from that, order, content and numbering are the walk's.
    """
    reference = load_reference()
    entities = [e["name"] for e in reference if e["meta-type"] in ("command", "event")]
    referenced = {ref for entry in reference for ref in type_refs(entry)}
    orphans = [
        e
        for e in reference
        if e["meta-type"] not in ("command", "event") and e["name"] not in referenced
    ]
    assert [e["name"] for e in orphans] == ["393", "484"]
    kept = [e for e in reference if e not in orphans]
    walked = qemu_walk(reference, entities, mask=False)
    early = next(index for index, entry in enumerate(kept) if entry["name"] == "483")
    assert walked[:early] == kept[:early]
    assert sorted(walked, key=lambda e: e["name"]) == sorted(kept, key=lambda e: e["name"])

    numbers = {masked_number(e["name"]) for e in reference} - {None}
    first_gap = min(set(range(len(numbers))) - numbers)
    exact = next(
        index
        for index, entry in enumerate(reference)
        if any((masked_number(ref) or 0) > first_gap for ref in type_refs(entry))
    )
    assert (first_gap, exact) == (211, 227)
    assert qemu_walk(reference, entities)[:exact] == reference[:exact]


def test_same_entries_names_and_order_as_qemu() -> None:
    ours = build_qmp_schema(COMMANDS, EXACT_EVENTS)
    entities = [c.name for c in COMMANDS] + [e.name for e in EXACT_EVENTS]
    assert ours == qemu_walk(load_reference(), entities)


# --- structure, independent of masked names ---------------------------------------------


def resolve(entries: list[dict[str, Any]], name: str) -> Any:
    """A nested, name-free form of type ``name`` (recursion cut at a repeated type)."""
    by_name = {entry["name"]: entry for entry in entries}

    def walk(ref: str, seen: tuple[str, ...]) -> Any:
        if ref in seen:
            return ("recursive",)
        entry = by_name[ref]
        meta = entry["meta-type"]
        inner = (*seen, ref)
        if meta == "builtin":
            return ("builtin", entry["json-type"])
        if meta == "enum":
            return ("enum", tuple(entry["values"]), tuple(m["name"] for m in entry["members"]))
        if meta == "array":
            return ("array", walk(entry["element-type"], inner))
        if meta == "alternate":
            return ("alternate", tuple(walk(m["type"], inner) for m in entry["members"]))
        members = tuple(
            (m["name"], "default" in m, walk(m["type"], inner)) for m in entry["members"]
        )
        variants = tuple((v["case"], walk(v["type"], inner)) for v in entry.get("variants", []))
        return ("object", members, entry.get("tag"), variants)

    entity = by_name[name]
    return (
        entity["meta-type"],
        tuple(walk(entity[key], ()) for key in ("arg-type", "ret-type") if key in entity),
        entity.get("allow-oob", False),
        tuple(entity.get("features", ())),
    )


def without_tdx(structure: Any) -> Any:
    """Our GUEST_PANICKED structure as QEMU 7.2 has it: no tdx variant nor tag value."""
    if not isinstance(structure, tuple):
        return structure
    return tuple(
        without_tdx(item)
        for item in structure
        if item != "tdx" and not (isinstance(item, tuple) and item[:1] == ("tdx",))
    )


@pytest.mark.parametrize("name", [c.name for c in COMMANDS] + [e.name for e in EVENTS])
def test_structure_equals_qemus(name: str) -> None:
    ours = build_qmp_schema(COMMANDS, EVENTS)
    expected = resolve(load_reference(), name)
    got = resolve(ours, name)
    if name == "GUEST_PANICKED":
        assert got != expected
        got = without_tdx(got)
    assert got == expected


def test_every_reference_resolves_and_each_type_is_emitted_once() -> None:
    for mask in (True, False):
        ours = build_qmp_schema(COMMANDS, EVENTS, mask=mask)
        names = [entry["name"] for entry in ours]
        assert len(names) == len(set(names))
        assert all(ref in names for entry in ours for ref in type_refs(entry))


def test_masked_names_count_up_in_first_use_order() -> None:
    ours = build_qmp_schema(COMMANDS, EVENTS)
    first_use: list[str] = []
    for entry in ours:
        for ref in type_refs(entry):
            bare = ref.strip("[]")
            if bare.isdigit() and bare not in first_use:
                first_use.append(bare)
    assert first_use == [str(n) for n in range(len(first_use))]
    # The empty object is "0" because the first command takes no arguments.
    assert ours[0] == {
        "arg-type": "0",
        "ret-type": "1",
        "name": "query-status",
        "meta-type": "command",
    }
    assert next(e for e in ours if e["name"] == "0")["members"] == []


def test_output_is_deterministic() -> None:
    assert build_qmp_schema(COMMANDS, EVENTS) == build_qmp_schema(COMMANDS, EVENTS)


# --- bytes on the wire --------------------------------------------------------------------


def renamed(entry: dict[str, Any], name: str) -> dict[str, Any]:
    """``entry`` under QEMU's masked name, insertion order kept."""
    return {key: name if key == "name" else value for key, value in entry.items()}


def test_entries_encode_to_qemus_bytes() -> None:
    reply = reference_reply()
    ours = {entry["name"]: entry for entry in build_qmp_schema(COMMANDS, EVENTS)}
    status = ours["query-status"]
    run_state = ours[
        next(m["type"] for m in ours[status["ret-type"]]["members"] if m["name"] == "status")
    ]
    array = ours[ours["query-pr-managers"]["ret-type"]]
    samples = [
        status,
        ours["STOP"],
        renamed(ours["MEM_UNPLUG_ERROR"], "MEM_UNPLUG_ERROR") | {"arg-type": "208"},
        renamed(run_state, "262"),
        renamed(array, "[10]") | {"element-type": "10"},
        ours["int"],
        ours["bool"],
        ours["str"],
    ]
    for entry in samples:
        line = encode(entry).decode()[:-2]
        assert line in reply, line
    assert (
        encode(status)
        == b'{"name": "query-status", "ret-type": "1", "meta-type": "command", "arg-type": "0"}\r\n'
    )


def test_whole_answer_encodes_like_qemu_for_the_same_schema() -> None:
    ours = build_qmp_schema(COMMANDS, EXACT_EVENTS)
    printed = [json.loads(encode(entry)) for entry in ours]
    # The reference keeps QEMU's printed member order at every level.
    entities = [c.name for c in COMMANDS] + [e.name for e in EXACT_EVENTS]
    expected = qemu_walk(load_reference(), entities)
    assert json.dumps(printed) == json.dumps(expected)


# --- mapping of Python declarations ----------------------------------------------------


class Colour(enum.Enum):
    RED = "red"
    GREEN = "green"


class Everything(msgspec.Struct, kw_only=True):
    ratio: float
    colour: Colour
    name_or_null: str | None
    blob: dict[str, Any]
    anything: Any
    numbers: list[int]
    count: int = 0


def test_other_builtins_enums_alternates_and_command_options() -> None:
    command = CommandInfo(
        "x-everything", Everything, ret_type=str, allow_oob=True, features=("unstable",)
    )
    ours = build_qmp_schema([command], [EventInfo("NOTHING", None)], mask=False)
    by_name = {entry["name"]: entry for entry in ours}
    assert ours[0] == {
        "arg-type": "Everything",
        "ret-type": "str",
        "allow-oob": True,
        "name": "x-everything",
        "meta-type": "command",
        "features": ["unstable"],
    }
    assert ours[1] == {"arg-type": "q_empty", "name": "NOTHING", "meta-type": "event"}
    assert by_name["Everything"]["members"] == [
        {"name": "ratio", "type": "number"},
        {"name": "colour", "type": "Colour"},
        {"name": "name_or_null", "type": "Everything-name_or_null"},
        {"name": "blob", "type": "any"},
        {"name": "anything", "type": "any"},
        {"name": "numbers", "type": "[int]"},
        {"name": "count", "type": "int", "default": None},
    ]
    assert by_name["Colour"]["values"] == ["red", "green"]
    # QEMU's StrOrNull is the alternate {str, null}.
    assert by_name["Everything-name_or_null"] == {
        "members": [{"type": "str"}, {"type": "null"}],
        "name": "Everything-name_or_null",
        "meta-type": "alternate",
    }
    assert by_name["[int]"] == {"element-type": "int", "name": "[int]", "meta-type": "array"}
    assert {by_name[n]["json-type"] for n in ("number", "any", "null")} == {
        "number",
        "value",
        "null",
    }


def test_unmasked_union_is_named_after_its_variants() -> None:
    ours = build_qmp_schema([], [EventInfo.from_model(GuestPanicked)], mask=False)
    by_name = {entry["name"]: entry for entry in ours}
    union = by_name["GuestPanicInformation"]
    assert union["members"] == [{"name": "type", "type": "GuestPanicInformationType"}]
    assert union["tag"] == "type"
    assert [v["case"] for v in union["variants"]] == ["hyper-v", "s390", "tdx"]
    assert by_name["GuestPanicInformationType"]["values"] == ["hyper-v", "s390", "tdx"]


class Tree(msgspec.Struct):
    label: str
    children: list[Tree]


def test_recursive_type_is_emitted_once() -> None:
    ours = build_qmp_schema([CommandInfo("query-tree", NoArguments, Tree)], [])
    assert ours[1:] == [
        {"members": [], "name": "0", "meta-type": "object"},
        {
            "members": [{"name": "label", "type": "str"}, {"name": "children", "type": "[1]"}],
            "name": "1",
            "meta-type": "object",
        },
        {"json-type": "string", "name": "str", "meta-type": "builtin"},
        {"element-type": "1", "name": "[1]", "meta-type": "array"},
    ]


def test_lone_tagged_struct_keeps_its_tag() -> None:
    command = CommandInfo("query-hv", NoArguments, GuestPanicInformationHyperV)
    by_name = {e["name"]: e for e in build_qmp_schema([command], [], mask=False)}
    union = by_name["GuestPanicInformationHyperVUnion"]
    assert union["variants"] == [{"case": "hyper-v", "type": "GuestPanicInformationHyperV"}]
    assert by_name["GuestPanicInformationHyperV"]["members"][0] == {"name": "arg1", "type": "int"}


def test_event_model_without_data() -> None:
    assert EventInfo.from_model(Stop) == EventInfo("STOP", None)


class Unsupported(msgspec.Struct):
    when: bytes


class Other(msgspec.Struct):
    value: int


def make_twin() -> type[msgspec.Struct]:
    class Other(msgspec.Struct):
        text: str

    return Other


@pytest.mark.parametrize(
    ("build", "error"),
    [
        (lambda: build_qmp_schema([CommandInfo("x", Unsupported)], []), TypeError),
        (lambda: build_qmp_schema([CommandInfo("x", NoArguments, Literal[1, 2])], []), TypeError),
        (
            lambda: build_qmp_schema([CommandInfo("x", NoArguments)], [EventInfo("x", None)]),
            ValueError,
        ),
        (
            lambda: build_qmp_schema(
                [CommandInfo("a", Other), CommandInfo("b", make_twin())], [], mask=False
            ),
            ValueError,
        ),
    ],
    ids=["bytes", "int-literal", "duplicate-entity", "duplicate-type-name"],
)
def test_refusals(build: Callable[[], object], error: type[Exception]) -> None:
    with pytest.raises(error):
        build()


def test_same_named_types_are_fine_when_masked() -> None:
    ours = build_qmp_schema([CommandInfo("a", Other), CommandInfo("b", make_twin())], [])
    assert [(e["arg-type"], e["ret-type"]) for e in ours[:2]] == [("0", "1"), ("2", "1")]


# --- a client validating against us ----------------------------------------------------


def test_live_schema_accepts_ours_and_validates_quorum_report_bad() -> None:
    live = LiveSchema.from_query(json.loads(json.dumps(build_qmp_schema(COMMANDS, EVENTS))))
    assert live.event_names() == {e.name for e in EVENTS}
    recorded = [
        json.loads(line["raw"])
        for line in load_transcript("quorum")["lines"]
        if line.get("kind") == "event" and '"QUORUM_REPORT_BAD"' in line["raw"]
    ]
    assert recorded
    for message in recorded:
        assert live.validate_message(message, strict=True) == []
    bad = {"type": "scrub", "node-name": "n", "sector-num": "0", "sectors-count": 1}
    problems = live.validate_event("QUORUM_REPORT_BAD", bad)
    assert len(problems) == 2
    assert any(p.startswith("data.type") for p in problems)
    assert any(p.startswith("data.sector-num") for p in problems)
    panic = {
        "action": "pause",
        "info": {"type": "hyper-v", "arg1": 1, "arg2": 2, "arg3": 3, "arg4": 4, "arg5": 5},
    }
    assert live.validate_event("GUEST_PANICKED", panic, strict=True) == []

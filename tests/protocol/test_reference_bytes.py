"""Re-encode every QMP line QEMU 7.2 sent in the reference transcripts, byte for byte.

The encoder must be fed the members in QEMU's *insertion* order, or a match
would only prove that dict order survives a round trip. So every message is
rebuilt here from what QEMU itself knew when it built it:

* a command's return value, in the member order of the command's ``ret-type``
  and an event's ``data`` in the order of its ``arg-type``, both read from the
  ``query-qmp-schema`` output in ``qmp_schema_full.json``; the QAPI output
  visitor inserts members in exactly that order (base members, then the
  members of the flat-union variant);
* a reply's ``id`` as the client sent it, parsed from the matching ``send``
  line, because QEMU echoes the QObject its parser built from the request.

Fixed envelopes are built in the order monitor/qmp.c and qapi/qmp-event.c
use: a reply as ``return`` (or ``error`` with ``class`` then ``desc``) and
then ``id``, an event as ``event``, ``timestamp`` (``seconds``,
``microseconds``) and then ``data``, the greeting as ``{"QMP": {"version",
"capabilities"}}``. The wire cannot confirm or refute those orders, and need
not: ``test_envelope_members_never_share_a_bucket`` shows that the members of
each envelope fall in distinct QDict buckets, so their wire order is fixed by
the hash alone and every insertion order gives the same bytes.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from qmpevents.protocol.encoding import encode, qdict_bucket
from tests.helpers import REFERENCE, TRANSCRIPTS, load_transcript, raw_bytes

CHECKED_KINDS = ("greeting", "return", "error", "event")


def _load_schema() -> dict[str, dict[str, Any]]:
    with (REFERENCE / "qmp_schema_full.json").open() as f:
        entries: list[dict[str, Any]] = json.load(f)
    return {entry["name"]: entry for entry in entries}


SCHEMA = _load_schema()

# JSON type of a value, as the introspection's builtin "json-type" names it.
_JSON_TYPE = {
    dict: "object",
    list: "array",
    str: "string",
    bool: "boolean",
    int: "int",
    float: "number",
    type(None): "null",
}


@dataclass
class SchemaOrder:
    """Rebuilds decoded wire values with dict members in QAPI schema order."""

    schema: dict[str, dict[str, Any]]
    unknown: Counter[str] = field(default_factory=Counter)
    untyped: int = 0

    def rebuild(self, value: Any, type_name: str) -> Any:
        entry = self.schema[type_name]
        meta = entry["meta-type"]
        if meta == "object":
            return self._object(value, entry)
        if meta == "array":
            return [self.rebuild(item, entry["element-type"]) for item in value]
        if meta == "alternate":
            return self.rebuild(value, self._alternative(value, entry))
        if meta == "builtin" and entry["json-type"] == "value" and isinstance(value, dict | list):
            # 'any': a QObject built by hand, no schema to order it by.
            self.untyped += 1
        return value

    def _object(self, value: dict[str, Any], entry: dict[str, Any]) -> dict[str, Any]:
        members = list(entry["members"])
        if "tag" in entry:
            for variant in entry.get("variants", ()):
                if variant["case"] == value.get(entry["tag"]):
                    members += self.schema[variant["type"]]["members"]
        ordered = {
            member["name"]: self.rebuild(value[member["name"]], member["type"])
            for member in members
            if member["name"] in value
        }
        for key in value.keys() - ordered.keys():
            self.unknown[key] += 1
        # Keys the schema does not know keep their wire order, after the known ones.
        ordered.update((key, val) for key, val in value.items() if key not in ordered)
        return ordered

    def _alternative(self, value: Any, entry: dict[str, Any]) -> str:
        wanted = _JSON_TYPE[type(value)]
        for member in entry["members"]:
            if self._json_type(member["type"]) in (wanted, "number" if wanted == "int" else None):
                return str(member["type"])
        raise AssertionError(f"no branch of alternate {entry['name']} takes {value!r}")

    def _json_type(self, type_name: str) -> str:
        entry = self.schema[type_name]
        meta = entry["meta-type"]
        if meta == "builtin":
            return str(entry["json-type"])
        return {"enum": "string", "object": "object", "array": "array"}[meta]


def _parse_stream(text: str) -> tuple[list[Any], str, bool]:
    """Split ``text`` into the JSON values it holds, like QEMU's json-streamer.

    Returns the values, the incomplete tail to carry into the next chunk, and
    whether a syntax error ended the parse (QEMU then drops the input and
    resyncs). QEMU also accepts single-quoted strings, which ``json`` does not,
    so a chunk without double quotes is retried with the quotes swapped.
    """
    decoder = json.JSONDecoder()
    values: list[Any] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n":
            pos += 1
        if pos == len(text):
            return values, "", False
        chunk = text[pos:]
        try:
            value, end = decoder.raw_decode(chunk)
        except json.JSONDecodeError as exc:
            if "'" in chunk and '"' not in chunk:
                more, rest, failed = _parse_stream(chunk.replace("'", '"'))
                return values + more, rest, failed
            if exc.pos >= len(chunk.rstrip()):
                return values, chunk, False
            return values, "", True
        except RecursionError:
            return values, "", True
        values.append(value)
        pos += end


def _requests(lines: list[dict[str, Any]]) -> dict[str, list[tuple[int, Any]]]:
    """Every JSON value each connection sent, with the ``seq`` of its last line."""
    carry: dict[str, str] = defaultdict(str)
    requests: dict[str, list[tuple[int, Any]]] = defaultdict(list)
    for line in lines:
        if line["dir"] != "send" or "raw" not in line:
            continue
        conn = line["conn"]
        values, rest, failed = _parse_stream(carry[conn] + line["raw"])
        if failed and carry[conn]:
            # The carried tail was garbage QEMU has already given up on.
            values, rest, failed = _parse_stream(line["raw"])
        carry[conn] = rest
        requests[conn] += [(line["seq"], value) for value in values]
    return requests


def _request_for(
    reply: dict[str, Any], line: dict[str, Any], requests: dict[str, list[tuple[int, Any]]]
) -> dict[str, Any] | None:
    """The request ``reply`` answers: the latest earlier one on the connection
    with the same ``id``, or without an ``id`` the latest earlier one."""
    for seq, request in reversed(requests[line["conn"]]):
        if seq > line["seq"] or not isinstance(request, dict):
            continue
        if "id" not in reply or _as_parsed(request.get("id")) == reply["id"]:
            return request
    return None


def _as_parsed(sent_id: Any) -> Any:
    # QEMU's parser keeps an integer only while it fits int64/uint64 and makes
    # a double of anything wider, so that is the value it echoes.
    if isinstance(sent_id, int) and not -(2**63) <= sent_id < 2**64:
        return float(sent_id)
    return sent_id


@dataclass
class Rebuilt:
    """One transcript's lines rebuilt in insertion order, with what had to be guessed."""

    messages: list[tuple[dict[str, Any], Any]] = field(default_factory=list)
    order: SchemaOrder = field(default_factory=lambda: SchemaOrder(SCHEMA))
    ids_from_wire: int = 0


def _with_id(message: dict[str, Any], reply: dict[str, Any], request: Any, rebuilt: Rebuilt) -> Any:
    if "id" in reply:
        if isinstance(request, dict) and "id" in request:
            message["id"] = request["id"]
        else:
            rebuilt.ids_from_wire += 1
            message["id"] = reply["id"]
    return message


def _insertion_ordered(
    line: dict[str, Any], requests: dict[str, list[tuple[int, Any]]], rebuilt: Rebuilt
) -> Any:
    wire = json.loads(line["raw"])
    kind = line["kind"]
    order = rebuilt.order
    if kind == "event":
        event: dict[str, Any] = {
            "event": wire["event"],
            "timestamp": {
                "seconds": wire["timestamp"]["seconds"],
                "microseconds": wire["timestamp"]["microseconds"],
            },
        }
        if "data" in wire:
            event["data"] = order.rebuild(wire["data"], SCHEMA[wire["event"]]["arg-type"])
        return event
    if kind == "greeting":
        greeting = wire["QMP"]
        version_type = SCHEMA["query-version"]["ret-type"]
        return {
            "QMP": {
                "version": order.rebuild(greeting["version"], version_type),
                "capabilities": greeting["capabilities"],
            }
        }
    request = _request_for(wire, line, requests)
    if kind == "error":
        error = {"class": wire["error"]["class"], "desc": wire["error"]["desc"]}
        return _with_id({"error": error}, wire, request, rebuilt)
    assert request is not None, f"seq {line['seq']}: no request for {line['raw']!r}"
    command = request["execute"] if "execute" in request else request["exec-oob"]
    ret = order.rebuild(wire["return"], SCHEMA[command]["ret-type"])
    return _with_id({"return": ret}, wire, request, rebuilt)


def rebuild_transcript(name: str) -> Rebuilt:
    """Every QEMU-sent QMP line of transcript ``name`` with its insertion-ordered message."""
    lines = load_transcript(name)["lines"]
    requests = _requests(lines)
    rebuilt = Rebuilt()
    for line in lines:
        if line["dir"] == "recv" and line.get("kind") in CHECKED_KINDS:
            rebuilt.messages.append((line, _insertion_ordered(line, requests, rebuilt)))
    return rebuilt


def _mismatches(rebuilt: Rebuilt) -> Iterator[str]:
    for line, message in rebuilt.messages:
        got = encode(message)
        if got != raw_bytes(line):
            yield f"seq {line['seq']}:\n  want {raw_bytes(line)!r}\n  got  {got!r}"


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_every_qemu_line_is_reproduced(name: str) -> None:
    rebuilt = rebuild_transcript(name)
    expected = sum(
        1
        for line in load_transcript(name)["lines"]
        if line["dir"] == "recv" and line.get("kind") in CHECKED_KINDS
    )
    assert len(rebuilt.messages) == expected > 0
    assert list(_mismatches(rebuilt)) == []


@pytest.mark.parametrize("name", TRANSCRIPTS)
def test_rebuild_needed_no_guesses(name: str) -> None:
    # Every member was known to the schema and every echoed id came from its
    # request, so the byte test above really started from insertion order.
    rebuilt = rebuild_transcript(name)
    assert rebuilt.order.unknown == Counter()
    assert rebuilt.order.untyped == 0
    assert rebuilt.ids_from_wire == 0


def test_rebuild_changes_the_order_it_is_given() -> None:
    # Guard against a vacuous byte test: the rebuilt messages must differ from
    # the wire order somewhere, or insertion order was never exercised.
    reordered = 0
    for name in TRANSCRIPTS:
        for line, message in rebuild_transcript(name).messages:
            if json.dumps(message) != json.dumps(json.loads(line["raw"])):
                reordered += 1
    assert reordered > 100


@pytest.mark.parametrize(
    "members",
    [
        ("return", "id"),
        ("error", "id"),
        ("class", "desc"),
        ("event", "timestamp", "data"),
        ("seconds", "microseconds"),
        ("QMP",),
        ("version", "capabilities"),
    ],
)
def test_envelope_members_never_share_a_bucket(members: tuple[str, ...]) -> None:
    assert len({qdict_bucket(member) for member in members}) == len(members)

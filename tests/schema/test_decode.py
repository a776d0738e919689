"""decode_event: typed and generic results, and the exact wording of every error."""

from __future__ import annotations

import msgspec
import pytest

from qmpevents.errors import JSONParseError, SchemaError, ValidationError
from qmpevents.schema.decode import UNNAMED_EVENT, decode_event
from qmpevents.schema.events import GenericEvent, QuorumReportBad

TS = b'"timestamp": {"seconds": 1795799056, "microseconds": 709675}'
QRB_DATA = b'"node-name": "qM-c2", "sectors-count": 1, "sector-num": 0, "type": "read"'


def qrb(data: bytes) -> bytes:
    return b"{" + TS + b', "event": "QUORUM_REPORT_BAD", "data": {' + data + b"}}"


def test_known_event_decodes_typed() -> None:
    event = decode_event(qrb(QRB_DATA))
    assert isinstance(event, QuorumReportBad)
    assert event.data.node_name == "qM-c2"
    assert event.data.error is None


def test_unknown_event_name_decodes_generic() -> None:
    raw = b"{" + TS + b', "event": "FROM_THE_FUTURE", "data": {"x": [1, {"y": null}]}}'
    event = decode_event(raw)
    assert event == GenericEvent(
        name="FROM_THE_FUTURE", timestamp=event.timestamp, data={"x": [1, {"y": None}]}
    )
    assert event.name == "FROM_THE_FUTURE"
    assert event.raw == raw


def test_unknown_event_without_data_has_empty_data() -> None:
    event = decode_event(b"{" + TS + b', "event": "SUSPEND"}')
    assert isinstance(event, GenericEvent)
    assert event.data == {}


CASES = [
    (
        qrb(QRB_DATA.replace(b'"sector-num": 0', b'"sector-num": "0"')),
        "QUORUM_REPORT_BAD: data.sector-num: expected int, got str",
    ),
    (
        qrb(QRB_DATA.replace(b'"node-name": "qM-c2", ', b"")),
        "QUORUM_REPORT_BAD: data.node-name: missing required member",
    ),
    (
        qrb(QRB_DATA.replace(b'"read"', b'"bogus"')),
        "QUORUM_REPORT_BAD: data.type: invalid enum value 'bogus'",
    ),
    (qrb(QRB_DATA + b', "error": 5'), "QUORUM_REPORT_BAD: data.error: expected str, got int"),
    (
        b'{"timestamp": {"seconds": -1, "microseconds": 0}, "event": "STOP"}',
        "STOP: timestamp.seconds: expected int >= 0",
    ),
    (
        b'{"timestamp": {"seconds": 1, "microseconds": 1000000}, "event": "STOP"}',
        "STOP: timestamp.microseconds: expected int <= 999999",
    ),
    (
        b'{"timestamp": {"seconds": 1, "microseconds": 1000000}, "event": "NEWER"}',
        "NEWER: timestamp.microseconds: expected int <= 999999",
    ),
    (
        b'{"timestamp": {"seconds": 1.5, "microseconds": 0}, "event": "STOP"}',
        "STOP: timestamp.seconds: expected int, got float",
    ),
    (b'{"event": "STOP"}', "STOP: timestamp: missing required member"),
    (b'{"event": "NEWER"}', "NEWER: timestamp: missing required member"),
    (
        b"{" + TS + b', "event": "MIGRATION", "data": []}',
        "MIGRATION: data: expected object, got array",
    ),
    (b"{" + TS + b', "event": "NEWER", "data": "x"}', "NEWER: data: expected object, got str"),
    (b"{" + TS + b', "event": "MIGRATION_PASS"}', "MIGRATION_PASS: data: missing required member"),
    (
        b"{" + TS + b', "event": "DUMP_COMPLETED", "data": {"result": {"status": "done", '
        b'"completed": 0, "total": 0}}}',
        "DUMP_COMPLETED: data.result.status: invalid enum value 'done'",
    ),
    (
        b"{" + TS + b', "event": "GUEST_PANICKED", "data": {"action": "run", '
        b'"info": {"type": "other"}}}',
        "GUEST_PANICKED: data.info.type: invalid enum value 'other'",
    ),
    (
        b"{" + TS + b', "event": "GUEST_PANICKED", "data": {"action": "run", '
        b'"info": {"type": "hyper-v", "arg1": -1, "arg2": 0, "arg3": 0, "arg4": 0, "arg5": 0}}}',
        "GUEST_PANICKED: data.info.arg1: expected int >= 0",
    ),
    (b"{" + TS + b"}", f"{UNNAMED_EVENT}: event: missing required member"),
    (b"{" + TS + b', "event": 7}', f"{UNNAMED_EVENT}: event: expected str, got int"),
    (b"[1, 2]", f"{UNNAMED_EVENT}: expected object, got array"),
    (b'"STOP"', f"{UNNAMED_EVENT}: expected object, got str"),
]


@pytest.mark.parametrize(("raw", "message"), CASES)
def test_validation_error_wording(raw: bytes, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        decode_event(raw)
    assert str(info.value) == message
    assert info.value.raw == raw
    assert f"{info.value.event}: " in message
    assert isinstance(info.value, SchemaError)


def test_validation_error_fields() -> None:
    raw = qrb(QRB_DATA.replace(b'"sector-num": 0', b'"sector-num": "0"'))
    with pytest.raises(ValidationError) as info:
        decode_event(raw)
    assert (info.value.event, info.value.path, info.value.problem) == (
        "QUORUM_REPORT_BAD",
        "data.sector-num",
        "expected int, got str",
    )


@pytest.mark.parametrize("raw", [b"", b"{", b'{"event": "STOP",}', b"garbage"])
def test_malformed_json_is_a_parse_error(raw: bytes) -> None:
    with pytest.raises(JSONParseError, match=r"^JSON parse error, ") as info:
        decode_event(raw)
    assert info.value.raw == raw


def test_wording_comes_from_the_model_not_from_msgspecs_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Whatever msgspec says, the reported problem is ours.
    import qmpevents.schema.decode as decode_module

    class Reworded(msgspec.ValidationError):
        def __str__(self) -> str:
            return "Ein Fehler ist aufgetreten"

    class Decoder:
        def decode(self, raw: bytes) -> object:
            raise Reworded()

    monkeypatch.setattr(decode_module, "MODELED_DECODER", Decoder())
    with pytest.raises(ValidationError, match=r"data\.sector-num: expected int, got str"):
        decode_event(qrb(QRB_DATA.replace(b'"sector-num": 0', b'"sector-num": "0"')))

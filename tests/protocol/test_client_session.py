"""The client session: every server line of the reference transcripts, classified."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qmpevents.errors import GreetingError, LocalProtocolError, ProtocolError, ValidationError
from qmpevents.protocol.client_session import (
    ClientSession,
    ClientState,
    ErrorResponse,
    Greeting,
    ProtocolViolation,
    Response,
    require_greeting,
)
from qmpevents.protocol.states import CLIENT_MOVES
from qmpevents.schema.events import Event, GenericEvent, KnownEvent, QuorumReportBad
from tests.helpers import TRANSCRIPTS, load_transcript, raw_bytes

GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
    b'"package": "Debian"}, "capabilities": ["oob"]}}\r\n'
)
EVENT = (
    b'{"timestamp": {"seconds": 1795799056, "microseconds": 709675}, "event": '
    b'"QUORUM_REPORT_BAD", "data": {"node-name": "qM-c2", "sectors-count": 1, '
    b'"sector-num": 0, "type": "read"}}\r\n'
)


def ready_session() -> ClientSession:
    session = ClientSession()
    (greeting,) = session.receive_data(GREETING)
    assert isinstance(greeting, Greeting) and greeting.version == "7.2.22"
    data = session.negotiate()
    assert json.loads(data) == {
        "execute": "qmp_capabilities",
        "arguments": {"enable": ["oob"]},
        "id": 1,
    }
    (reply,) = session.receive_data(b'{"return": {}, "id": 1}\r\n')
    assert isinstance(reply, Response)
    assert session.state is ClientState.READY and session.oob_enabled
    return session


@pytest.mark.parametrize("name", [t for t in TRANSCRIPTS if t != "protocol"])
def test_every_transcript_line_is_classified(name: str) -> None:
    """Replies match their commands by id, events decode typed, nothing is a violation."""
    sessions: dict[str, ClientSession] = {}
    counts = {"events": 0, "replies": 0}
    for line in load_transcript(name)["lines"]:
        conn = line.get("conn")
        if line["dir"] == "connect" or conn not in sessions:
            sessions[conn] = ClientSession()
        session = sessions[conn]
        if line["dir"] == "send":
            try:
                request: dict[str, Any] = json.loads(raw_bytes(line))
            except ValueError:
                continue  # the qtest socket (the recording client acting as the guest)
            if "execute" in request:
                session.command(
                    request["execute"], request.get("arguments"), request_id=request.get("id")
                )
                if request["execute"] == "qmp_capabilities":
                    session._negotiation_id = request.get("id")
        elif line["dir"] == "recv" and line["kind"] in ("greeting", "return", "error", "event"):
            (message,) = session.receive_data(raw_bytes(line))
            assert not isinstance(message, ProtocolViolation), message.error
            if line["kind"] == "event":
                assert isinstance(message, KnownEvent | GenericEvent)
                assert message.raw == raw_bytes(line).removesuffix(b"\r\n")
                counts["events"] += 1
            elif line["kind"] in ("return", "error"):
                assert isinstance(message, Response | ErrorResponse)
                counts["replies"] += 1
    assert counts["events"] > 0 and counts["replies"] > 0


def test_event_before_negotiation_reply() -> None:
    session = ClientSession()
    session.receive_data(GREETING)
    session.negotiate()
    event, reply = session.receive_data(EVENT + b'{"return": {}, "id": 1}\r\n')
    assert isinstance(event, QuorumReportBad) and event.data.node_name == "qM-c2"
    assert isinstance(reply, Response) and session.state is ClientState.READY


def test_reply_matched_by_id_and_error_kept() -> None:
    session = ready_session()
    first, _ = session.command("query-status")
    second, _ = session.command("device_del", {"id": "nope"})
    out = session.receive_data(
        b'{"id": 3, "error": {"class": "DeviceNotFound", "desc": "Device \'nope\' not found"}}\r\n'
        b'{"return": {"status": "running", "singlestep": false, "running": true}, "id": 2}\r\n'
    )
    error, reply = out
    assert isinstance(error, ErrorResponse) and error.command == "device_del"
    assert error.error_class == "DeviceNotFound" and error.id == second
    assert isinstance(reply, Response) and reply.id == first
    assert reply.value == {"status": "running", "singlestep": False, "running": True}
    assert session.pending == 0


def test_malformed_lines_are_counted_and_the_stream_goes_on() -> None:
    session = ready_session()
    out = session.receive_data(b'{"timestamp": garbage\r\n[1, 2]\r\n{"hello": 1}\r\n' + EVENT)
    assert [type(m) for m in out] == [
        ProtocolViolation,
        ProtocolViolation,
        ProtocolViolation,
        QuorumReportBad,
    ]
    assert session.protocol_errors == 3


def test_oversized_event_is_skipped_and_later_events_arrive() -> None:
    session = ClientSession(max_line=1 << 20)
    session.receive_data(GREETING)
    big = b'{"timestamp": {"seconds": 1, "microseconds": 0}, "event": "X", "data": {"s": "'
    out = session.receive_data(big + b"a" * (12 << 20) + b'"}}\r\n' + EVENT)
    assert isinstance(out[0], ProtocolViolation) and "exceeds" in str(out[0].error)
    assert isinstance(out[1], QuorumReportBad)


def test_invalid_known_event_is_reported_and_still_delivered_generic() -> None:
    session = ready_session()
    bad = EVENT.replace(b'"sector-num": 0', b'"sector-num": "zero"')
    violation, generic = session.receive_data(bad)
    assert isinstance(violation, ProtocolViolation)
    assert isinstance(violation.error, ValidationError)
    assert str(violation.error) == "QUORUM_REPORT_BAD: data.sector-num: expected int, got str"
    assert isinstance(generic, GenericEvent) and generic.data["sector-num"] == "zero"
    assert generic.raw == bad.removesuffix(b"\r\n")


def test_reply_to_unknown_id_is_a_violation() -> None:
    session = ready_session()
    (message,) = session.receive_data(b'{"return": {}, "id": 99}\r\n')
    assert isinstance(message, ProtocolViolation)


def test_garbage_greeting_is_a_greeting_error() -> None:
    session = ClientSession()
    (message,) = session.receive_data(b"Welcome to my server\r\n")
    with pytest.raises(GreetingError):
        require_greeting(message)


def test_close_mid_message() -> None:
    session = ready_session()
    session.receive_data(EVENT[:40])
    error = session.receive_eof()
    assert error is not None and "middle of a message" in str(error)
    assert session.state is ClientState.CLOSED


def test_moves_the_state_table_forbids_are_local_errors_not_protocol_errors() -> None:
    fresh = ClientSession()
    with pytest.raises(LocalProtocolError, match="cannot send-negotiation in state awaiting"):
        fresh.negotiate()
    with pytest.raises(LocalProtocolError, match="cannot send-command"):
        fresh.command("query-status")
    session = ready_session()
    request_id, _ = session.command("query-status")
    with pytest.raises(LocalProtocolError, match="already waiting"):
        session.command("query-status", request_id=request_id)
    session.receive_eof()
    with pytest.raises(LocalProtocolError, match="in state closed"):
        session.command("query-status")
    assert not issubclass(LocalProtocolError, ProtocolError)
    assert session.protocol_errors == 0  # our own misuse is never counted as the peer's


def test_every_client_move_is_in_the_table() -> None:
    assert CLIENT_MOVES[(ClientState.NEGOTIATING, "negotiated")] is ClientState.READY
    assert all((state, "eof") in CLIENT_MOVES for state in ClientState)


_GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": ""},'
    b' "capabilities": ["oob"]}}\n'
)
_GOOD = b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "RESUME"}\n'
_EVENT_HEAD = b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": '


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (_EVENT_HEAD + b'"X", "data": {"n": 1e999}}', "Number out of range"),
        (_EVENT_HEAD + b'"MIGRATION_PASS", "data": {"pass": 1e999}}', "Number out of range"),
        (_EVENT_HEAD + b'"X", "data": {"s": "\xff\xfe"}}', "Invalid UTF-8"),
        (b'{"return": {}, "id": ' + b"[" * 2000 + b"]" * 2000 + b"}", "nesting too deep"),
        (_EVENT_HEAD + b'"X", "data": {"a": ' + b"[" * 2000 + b"]" * 2000 + b"}}", "too deep"),
        (
            b'{"timestamp": {"seconds": 18446744073709551615, "microseconds": 2}, "event": "STOP"}',
            "timestamp.seconds: expected int <= 9223372036854775807",
        ),
        (_EVENT_HEAD + b'"STOP"', "truncated"),
    ],
    ids=["inf-generic", "inf-modeled", "bad-utf8", "deep-id", "deep-data", "ts-2**64", "truncated"],
)
def test_a_bad_line_is_one_counted_violation_and_the_next_is_delivered(
    line: bytes, problem: str
) -> None:
    session = ClientSession()
    session.receive_data(_GREETING)
    out = session.receive_data(line + b"\n" + _GOOD)
    assert len(out) == 2, out
    violation, good = out
    assert isinstance(violation, ProtocolViolation) and problem in str(violation.error)
    assert isinstance(good, Event) and good.name == "RESUME"
    assert session.protocol_errors == 1

"""The server session against QEMU's own answers in the reference protocol transcript."""

from __future__ import annotations

from typing import Any

import pytest

from qmpevents.errors import LocalProtocolError
from qmpevents.protocol.requests import Request
from qmpevents.protocol.server_session import GreetingInfo, Reply, ServerSession
from qmpevents.protocol.states import ServerState, server_move
from tests.helpers import load_transcript, raw_bytes

QEMU_GREETING = GreetingInfo(package="Debian 1:7.2+dfsg-7+deb12u18+b3")

# Answers that only the session may give: if QEMU answered a request with one of
# these, the session must have answered it itself instead of passing it up.
SESSION_DESCS = (
    "JSON parse error",
    "JSON nesting depth limit exceeded",
    "QMP input",
    "Expecting capabilities negotiation",
    "Capabilities negotiation is already complete",
    "Parameter 'null' does not accept",
    "Invalid parameter type for 'enable'",
)


def replay(conn: str) -> tuple[list[tuple[bytes, Any]], list[bytes]]:
    """Feed every line sent on ``conn`` to a session; pair its work with QEMU's replies."""
    transcript = load_transcript("protocol")
    session = ServerSession(QEMU_GREETING)
    ours: list[Any] = []
    qemu: list[bytes] = []
    for line in transcript["lines"]:
        if line.get("conn") != conn:
            continue
        if line["dir"] == "send":
            ours.extend(session.receive_data(raw_bytes(line)))
        elif line["dir"] == "recv" and line["kind"] in ("return", "error"):
            qemu.append(raw_bytes(line))
        elif line["dir"] == "recv" and line["kind"] == "greeting":
            assert session.greeting_bytes() == raw_bytes(line)
    return list(zip(ours, qemu, strict=False)), [bytes(q) for q in qemu[len(ours) :]]


@pytest.mark.parametrize("conn", ["A", "B", "C"])
def test_every_session_level_reply_is_byte_identical(conn: str) -> None:
    pairs, missing = replay(conn)
    assert not missing, f"QEMU replied to more requests than the session saw: {missing[:3]}"
    checked = 0
    for item, expected in pairs:
        if isinstance(item, Reply):
            assert item.data == expected
            checked += 1
        else:
            assert isinstance(item, Request)
            assert not any(desc.encode() in expected for desc in SESSION_DESCS), (
                f"the session passed up {item} but QEMU answered {expected!r}"
            )
    assert checked > (1000 if conn == "A" else 0)


def test_greeting_is_qemus() -> None:
    transcript = load_transcript("protocol")
    greeting = next(line for line in transcript["lines"] if line.get("kind") == "greeting")
    assert ServerSession(QEMU_GREETING).greeting_bytes() == raw_bytes(greeting)


def test_no_command_runs_before_negotiation() -> None:
    session = ServerSession()
    items = session.receive_data(b'{"execute": "stop", "id": 1}{"execute": "quit"}')
    assert [type(i) for i in items] == [Reply, Reply]
    assert not session.negotiated


def test_negotiation_enables_oob_only_when_asked() -> None:
    session = ServerSession()
    (item,) = session.receive_data(b'{"execute": "qmp_capabilities"}')
    assert isinstance(item, Reply) and item.data == b'{"return": {}}\r\n'
    assert session.negotiated and not session.oob_enabled
    (item,) = session.receive_data(b'{"exec-oob": "migrate-pause", "id": "o"}')
    assert isinstance(item, Reply)
    assert b"QMP input member 'exec-oob' is unexpected" in item.data


def test_oob_request_is_passed_up_when_enabled() -> None:
    session = ServerSession()
    session.receive_data(b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}')
    (item,) = session.receive_data(b'{"exec-oob": "migrate-pause"}')
    assert isinstance(item, Request) and item.oob and not item.has_id


def test_capability_not_offered() -> None:
    session = ServerSession(GreetingInfo(capabilities=()))
    (item,) = session.receive_data(
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": 1}'
    )
    assert isinstance(item, Reply)
    assert item.data == (
        b'{"id": 1, "error": {"class": "GenericError", "desc": "Capability oob not available"}}\r\n'
    )
    assert not session.negotiated


def test_list_item_of_wrong_type_is_named_by_index() -> None:
    session = ServerSession()
    (item,) = session.receive_data(b'{"execute": "qmp_capabilities", "arguments": {"enable": [1]}}')
    assert isinstance(item, Reply)
    assert b"Invalid parameter type for 'enable[0]', expected: string" in item.data


def test_reply_echoes_null_id_but_adds_none_when_absent() -> None:
    session = ServerSession()
    session.receive_data(b'{"execute": "qmp_capabilities"}')
    (with_null,) = session.receive_data(b'{"execute": "query-status", "id": null}')
    (without,) = session.receive_data(b'{"execute": "query-status"}')
    assert isinstance(with_null, Request) and isinstance(without, Request)
    assert session.reply(with_null, {}) == b'{"return": {}, "id": null}\r\n'
    assert session.reply(without, {}) == b'{"return": {}}\r\n'


def test_the_server_session_state_follows_its_table() -> None:
    session = ServerSession()
    assert session.state is ServerState.NEGOTIATING
    session.receive_data(b'{"execute": "qmp_capabilities"}\n')
    assert session.state is ServerState.READY and session.negotiated
    session.receive_eof()
    assert session.state is ServerState.CLOSED
    with pytest.raises(LocalProtocolError, match="cannot negotiated in state closed"):
        server_move(ServerState.CLOSED, "negotiated")


def test_qmp_capabilities_out_of_band_is_refused_as_qemu_refuses_it() -> None:
    session = ServerSession()
    session.receive_data(b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}\n')
    (reply,) = session.receive_data(b'{"exec-oob": "qmp_capabilities", "id": 1}\n')
    assert isinstance(reply, Reply)
    assert reply.data == (
        b'{"id": 1, "error": {"class": "GenericError", '
        b'"desc": "The command qmp_capabilities does not support OOB"}}\r\n'
    )

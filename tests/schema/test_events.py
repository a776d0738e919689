"""The event models: registry, construction in Python, encoding, and the real vectors."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qmpevents.schema import events as ev
from qmpevents.schema.decode import decode_event
from qmpevents.schema.types import DumpQueryResult, GuestPanicInformationS390, Timestamp
from tests.schema._vectors import documented_examples, recorded_events

SEVEN = {
    "DUMP_COMPLETED",
    "GUEST_PANICKED",
    "MEM_UNPLUG_ERROR",
    "QUORUM_FAILURE",
    "QUORUM_REPORT_BAD",
    "MIGRATION_PASS",
    "VSERPORT_CHANGE",
}
STAMP = Timestamp(seconds=1795799056, microseconds=709675)


def test_registry_covers_the_seven_seed_events_and_names_match() -> None:
    assert ev.known_event_names() >= SEVEN
    for name, cls in ev.EVENT_TYPES.items():
        assert cls.__struct_config__.tag == name
    assert ev.known_event_names() == frozenset(ev.EVENT_TYPES)


def test_events_are_constructible_with_schema_ordered_data() -> None:
    event = ev.QuorumReportBad(
        timestamp=STAMP,
        data=ev.QuorumReportBadData(
            type="flush", error="Broken pipe", node_name="n0", sector_num=0, sectors_count=2
        ),
    )
    assert event.name == "QUORUM_REPORT_BAD"
    assert event.raw is None
    assert event.extra_members() == {}
    assert list(event.to_message()) == ["timestamp", "event", "data"]
    assert list(event.to_message()["data"]) == [
        "type",
        "error",
        "node-name",
        "sector-num",
        "sectors-count",
    ]


def test_absent_optional_members_are_left_out_and_memberless_events_have_no_data() -> None:
    dump = ev.DumpCompleted(
        timestamp=STAMP,
        data=ev.DumpCompletedData(result=DumpQueryResult(status="completed", completed=1, total=1)),
    )
    assert "error" not in dump.to_message()["data"]
    assert ev.Stop(timestamp=STAMP).to_message() == {
        "timestamp": {"seconds": STAMP.seconds, "microseconds": STAMP.microseconds},
        "event": "STOP",
    }


def test_generic_event_message_omits_empty_data() -> None:
    assert "data" not in ev.GenericEvent(name="SUSPEND", timestamp=STAMP).to_message()


@pytest.mark.parametrize(("name", "example"), documented_examples(), ids=lambda v: str(v)[:20])
def test_documented_examples_decode_typed(name: str, example: dict[str, Any]) -> None:
    example.setdefault("timestamp", {"seconds": 1, "microseconds": 0})
    event = decode_event(json.dumps(example).encode())
    assert isinstance(event, ev.EVENT_TYPES[name])
    assert event.to_message()["data"] == example["data"]


def test_seed_has_six_json_examples_of_the_seven_events() -> None:
    names = [name for name, _ in documented_examples()]
    assert set(names) == SEVEN - {"MEM_UNPLUG_ERROR"}  # its example is not JSON
    assert len(names) == 7  # QUORUM_REPORT_BAD has two


RECORDED = recorded_events()


def test_transcripts_contain_every_seed_event() -> None:
    assert {json.loads(raw)["event"] for _, _, raw in RECORDED} >= SEVEN


@pytest.mark.parametrize(("transcript", "seq", "raw"), RECORDED, ids=lambda v: str(v)[:30])
def test_recorded_event_decodes_and_re_encodes_to_the_same_values(
    transcript: str, seq: int, raw: bytes
) -> None:
    message = json.loads(raw)
    event = decode_event(raw)
    assert event.raw == raw
    assert event.name == message["event"]
    assert isinstance(event, ev.EVENT_TYPES.get(message["event"], ev.GenericEvent))
    assert event.extra_members() == {}
    assert event.to_message() == message
    assert json.loads(msgspec.json.encode(event)) == message


# --- property tests: what we build, msgspec encodes, and decode_event gives back ----

_NAMES = st.text(min_size=1, max_size=20)
_U63 = st.integers(min_value=0, max_value=2**63 - 1)
_STAMPS = st.builds(
    Timestamp,
    seconds=st.integers(min_value=0, max_value=2**40),
    microseconds=st.integers(min_value=0, max_value=999_999),
)
_EVENTS = st.one_of(
    st.builds(
        ev.QuorumReportBad,
        timestamp=_STAMPS,
        data=st.builds(
            ev.QuorumReportBadData,
            type=st.sampled_from(["read", "write", "flush"]),
            error=st.none() | _NAMES,
            node_name=_NAMES,
            sector_num=_U63,
            sectors_count=_U63,
        ),
    ),
    st.builds(
        ev.QuorumFailure,
        timestamp=_STAMPS,
        data=st.builds(ev.QuorumFailureData, reference=_NAMES, sector_num=_U63, sectors_count=_U63),
    ),
    st.builds(
        ev.DumpCompleted,
        timestamp=_STAMPS,
        data=st.builds(
            ev.DumpCompletedData,
            result=st.builds(
                DumpQueryResult,
                status=st.sampled_from(["none", "active", "completed", "failed"]),
                completed=_U63,
                total=_U63,
            ),
            error=st.none() | _NAMES,
        ),
    ),
    st.builds(
        ev.MigrationPass,
        timestamp=_STAMPS,
        data=st.builds(ev.MigrationPassData, pass_=st.integers(min_value=1, max_value=2**31)),
    ),
    st.builds(
        ev.VserportChange,
        timestamp=_STAMPS,
        data=st.builds(ev.VserportChangeData, id=_NAMES, open=st.booleans()),
    ),
    st.builds(
        ev.MemUnplugError,
        timestamp=_STAMPS,
        data=st.builds(ev.MemUnplugErrorData, device=_NAMES, msg=_NAMES),
    ),
    st.builds(
        ev.GuestPanicked,
        timestamp=_STAMPS,
        data=st.builds(
            ev.GuestPanickedData,
            action=st.sampled_from(["pause", "poweroff", "run"]),
            info=st.none()
            | st.builds(
                GuestPanicInformationS390,
                core=st.integers(min_value=0, max_value=2**32 - 1),
                psw_mask=_U63,
                psw_addr=_U63,
                reason=st.sampled_from(["unknown", "disabled-wait", "opint-loop"]),
            ),
        ),
    ),
)


@given(_EVENTS)
def test_generated_events_round_trip(event: ev.KnownEvent) -> None:
    raw = msgspec.json.encode(event)
    decoded = decode_event(raw)
    assert decoded == event
    assert decoded.raw == raw
    assert decoded.extra_members() == {}

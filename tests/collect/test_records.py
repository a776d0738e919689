from __future__ import annotations

import msgspec
import pytest

from qmpevents.collect.records import EventRecord, GapRecord, Record
from qmpevents.schema.events import VserportChange, VserportChangeData
from qmpevents.schema.types import Timestamp
from tests.collect.conftest import BASE_TIME, event_record, raw_event


def test_event_record_keeps_qemu_time_and_raw_bytes() -> None:
    record = event_record("vm-a", 1234)
    assert (record.qemu_seconds, record.qemu_micros) == (BASE_TIME + 1, 234_000)
    assert record.qemu_ts == pytest.approx(BASE_TIME + 1.234)
    assert record.raw == raw_event(1234)
    assert record.name == "VSERPORT_CHANGE"


def test_an_event_built_in_python_is_refused() -> None:
    event = VserportChange(
        timestamp=Timestamp(seconds=1, microseconds=0),
        data=VserportChangeData(id="c", open=True),
    )
    with pytest.raises(ValueError, match="raw"):
        EventRecord.from_event("vm", event)


def test_records_round_trip_through_one_decoder() -> None:
    records: list[Record] = [event_record("a", 1), GapRecord("a", 1.5, None, "lost")]
    decoded = msgspec.json.decode(msgspec.json.encode(records), type=list[Record])
    assert decoded == records

"""How outside names are made safe (:mod:`.names`) and which event names get a label."""

from __future__ import annotations

import json
import os
import urllib.parse
from pathlib import Path

import pytest

from qmpevents.collect.config import VMSpec
from qmpevents.collect.event_labels import OTHER, QEMU_EVENTS, EventLabels
from qmpevents.collect.names import escape_controls, percent_escape, safe_name
from qmpevents.collect.nats_messages import subject_token
from qmpevents.schema.events import known_event_names

REFERENCE = Path(__file__).parent.parent / "data" / "qemu-7.2" / "qmp_schema_full.json"


def test_a_name_that_is_not_utf8_gets_its_bytes_as_backslash_x() -> None:
    assert safe_name(os.fsdecode(b"vm\xff")) == "vm\\xff"
    assert safe_name(os.fsdecode(b"\xe9t\xe9")) == "\\xe9t\\xe9"
    assert safe_name("\ud800x") == "\\ud800x"  # a surrogate no byte gives
    assert safe_name("café a\nb") == "café a\nb"  # valid names are unchanged
    safe_name("vm\udcff").encode()  # and the result is valid UTF-8
    spec = VMSpec(os.fsdecode(b"vm\xff"), os.fsdecode(b"/run/vm\xff.sock"))
    assert spec.name == "vm\\xff" and spec.target == os.fsdecode(b"/run/vm\xff.sock")


def test_control_characters_are_escaped_for_one_line() -> None:
    assert escape_controls("web") == "web"
    assert escape_controls("a\nb\rc\td\x1b[31m\x7f") == "a\\nb\\rc\\td\\x1b[31m\\x7f"
    assert escape_controls("\u2028é") == "\\u2028é"
    assert escape_controls(os.fsdecode(b"vm\xff")) == "vm\\xff"


@pytest.mark.parametrize(
    "name", ["web", "a b", " a", "a ", "a\r\nb", "tab\t", "100%", "café", "%41", "\x00", ""]
)
def test_header_values_are_printable_ascii_and_decode_back(name: str) -> None:
    value = percent_escape(name)
    assert value.isascii() and (value.isprintable() or not value)
    assert value == value.strip()  # nothing a NATS client would strip
    assert urllib.parse.unquote(value) == name


def test_subject_tokens_take_any_name() -> None:
    assert subject_token("vm\\xff") == "vm\\xff"
    assert subject_token("a\nb") == "a%0Ab"
    assert subject_token("vm\udcff") == "vm%ED%B3%BF"  # no UnicodeEncodeError


def test_the_qemu_event_names_are_those_of_the_recorded_schema() -> None:
    schema = json.loads(REFERENCE.read_text())
    assert {e["name"] for e in schema if e["meta-type"] == "event"} == QEMU_EVENTS
    assert known_event_names() <= QEMU_EVENTS


def test_event_labels_admit_known_names_and_a_capped_number_of_others() -> None:
    labels = EventLabels(cap=2)
    assert labels.label("BLOCK_JOB_COMPLETED") == "BLOCK_JOB_COMPLETED"  # QEMU's, not modeled
    assert [labels.label(n) for n in ("NEW_A", "NEW_B", "NEW_C", "NEW_A")] == [
        "NEW_A",
        "NEW_B",
        OTHER,
        "NEW_A",
    ]
    assert labels.label("lower") == OTHER and labels.label("") == OTHER

"""Timestamp conversions and the nested QAPI types."""

from __future__ import annotations

import datetime
import typing

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from qmpevents.schema import types

# Up to 2106: a float still resolves microseconds there (2**32 * 2**-52 < 0.5 µs).
_SECONDS = st.integers(min_value=0, max_value=2**32 - 1)
_MICROS = st.integers(min_value=0, max_value=999_999)


@given(_SECONDS, _MICROS)
def test_timestamp_float_round_trip(seconds: int, micros: int) -> None:
    stamp = types.Timestamp(seconds=seconds, microseconds=micros)
    assert types.Timestamp.from_float(stamp.as_float()) == stamp


def test_timestamp_from_float_carries_rounding_into_seconds() -> None:
    assert types.Timestamp.from_float(9.9999999) == types.Timestamp(seconds=10, microseconds=0)


def test_timestamp_as_datetime_is_utc_and_exact() -> None:
    stamp = types.Timestamp(seconds=1795799376, microseconds=443371)
    expected = datetime.datetime.fromtimestamp(1795799376, datetime.UTC).replace(microsecond=443371)
    assert stamp.as_datetime() == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b'{"seconds": -1, "microseconds": 0}', "Expected `int` >= 0 - at `$.seconds`"),
        (b'{"seconds": 0, "microseconds": 1000000}', "Expected `int` <= 999999"),
        (b'{"seconds": 0, "microseconds": -1}', "Expected `int` >= 0"),
    ],
)
def test_timestamp_bounds(raw: bytes, message: str) -> None:
    with pytest.raises(msgspec.ValidationError, match=message.replace("$", r"\$")):
        msgspec.json.decode(raw, type=types.Timestamp)


def test_panic_information_is_a_union_tagged_on_type() -> None:
    raw = b'{"type": "s390", "core": 1, "psw-mask": 2, "psw-addr": 3, "reason": "extint-loop"}'
    info = msgspec.json.decode(raw, type=types.GuestPanicInformation)
    assert info == types.GuestPanicInformationS390(
        core=1, psw_mask=2, psw_addr=3, reason="extint-loop"
    )


def test_tdx_gpa_is_optional_and_omitted_when_absent() -> None:
    info = types.GuestPanicInformationTdx(error_code=7, message="boom")
    assert msgspec.json.encode(info) == b'{"type":"tdx","error-code":7,"message":"boom"}'


@pytest.mark.parametrize(
    ("alias", "values"),
    [
        (types.DumpStatus, ("none", "active", "completed", "failed")),
        (types.GuestPanicAction, ("pause", "poweroff", "run")),
        (types.QuorumOpType, ("read", "write", "flush")),
        (
            types.S390CrashReason,
            ("unknown", "disabled-wait", "extint-loop", "pgmint-loop", "opint-loop"),
        ),
    ],
)
def test_enum_values_follow_the_schema(alias: object, values: tuple[str, ...]) -> None:
    assert typing.get_args(alias) == values

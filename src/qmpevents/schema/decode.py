"""Decode one QMP event message from bytes: typed when modeled, generic otherwise.

The hot path is a single reused msgspec decoder for the tagged union of modeled
events. Everything else (unknown event names, broken input, error wording) happens
only after that decoder has refused the input, so valid traffic never pays for it.
"""

from __future__ import annotations

from typing import Any

import msgspec

from qmpevents.errors import JSONParseError, ValidationError
from qmpevents.schema.events import EVENT_TYPES, Event, GenericEvent, ModeledEvent, bind_raw
from qmpevents.schema.explain import explain
from qmpevents.schema.problems import MISSING, wrong_type

__all__ = ["MODELED_DECODER", "UNNAMED_EVENT", "decode_event"]

UNNAMED_EVENT = "QMP event"
"""The event part of a ValidationError when the input carries no usable event name."""

MODELED_DECODER: msgspec.json.Decoder[ModeledEvent] = msgspec.json.Decoder(ModeledEvent)
"""The one reused decoder of every modeled event, for hot loops that inline
:func:`decode_event`'s fast path: decode, then store the bytes under
``event.__dict__[RAW_KEY]``; on ``msgspec.DecodeError`` call :func:`decode_event`."""
_GENERIC = msgspec.json.Decoder(GenericEvent)
_ANY = msgspec.json.Decoder()


def decode_event(raw: bytes) -> Event:
    """Decode one event message (``{"timestamp": ..., "event": ..., "data": ...}``).

    A modeled event decodes to its typed Struct, any other event name to a
    :class:`GenericEvent`; unknown members are ignored but kept in ``raw`` (see
    ``extra_members()``). The result remembers ``raw``.

    Raises :class:`~qmpevents.errors.ValidationError` when the message breaks the
    model (``QUORUM_REPORT_BAD: data.sector-num: expected int, got str``), including
    input that is not an event at all (``QMP event: event: missing required member``),
    and :class:`~qmpevents.errors.JSONParseError` when ``raw`` is not JSON.
    """
    try:
        event: Event = MODELED_DECODER.decode(raw)
    except msgspec.DecodeError as exc:  # ValidationError is a subclass
        event = _decode_refused(raw, exc)
    except RecursionError:
        raise JSONParseError("JSON parse error, nesting too deep", raw[:256]) from None
    bind_raw(event, raw)
    return event


def _decode_refused(raw: bytes, exc: msgspec.DecodeError) -> GenericEvent:
    """Classify input the typed decoder refused: generic event, or which error."""
    if not isinstance(exc, msgspec.ValidationError):
        raise JSONParseError(f"JSON parse error, {exc}", raw) from None
    try:
        message = _ANY.decode(raw)
    except msgspec.DecodeError as any_exc:
        # Valid JSON syntax that no value can hold (1e999), or bad UTF-8 in a string.
        raise JSONParseError(f"JSON parse error, {any_exc}", raw) from None
    except RecursionError:
        raise JSONParseError("JSON parse error, nesting too deep", raw[:256]) from None
    if not isinstance(message, dict):
        raise ValidationError(UNNAMED_EVENT, "", wrong_type("object", message), raw) from None
    if "event" not in message:
        raise ValidationError(UNNAMED_EVENT, "event", MISSING, raw) from None
    name = message["event"]
    if not isinstance(name, str):
        raise ValidationError(UNNAMED_EVENT, "event", wrong_type("str", name), raw) from None
    if name in EVENT_TYPES:
        raise _explained(name, EVENT_TYPES[name], message, raw) from None
    try:
        return _GENERIC.decode(raw)
    except msgspec.ValidationError:
        raise _explained(name, GenericEvent, message, raw) from None


def _explained(
    name: str, struct_type: type[msgspec.Struct], message: dict[str, Any], raw: bytes
) -> ValidationError:
    path, problem = explain(struct_type, message)
    return ValidationError(name, path, problem, raw)

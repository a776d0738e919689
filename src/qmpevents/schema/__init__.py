"""Typed QMP event models, validation, and validators built from a live QEMU schema.

- :mod:`.types`: nested QAPI types (enums, DumpQueryResult, GuestPanicInformation)
  and :class:`Timestamp`.
- :mod:`.events`: one Struct per modeled event, :class:`GenericEvent`, the registry.
- :mod:`.decode`: :func:`decode_event`, the fast path from bytes to an event.
- :mod:`.live`: :class:`LiveSchema`, validators compiled from ``query-qmp-schema``.
"""

from qmpevents.schema.decode import UNNAMED_EVENT, decode_event
from qmpevents.schema.events import (
    EVENT_TYPES,
    Event,
    GenericEvent,
    KnownEvent,
    ModeledEvent,
    known_event_names,
)
from qmpevents.schema.live import LiveSchema
from qmpevents.schema.types import Timestamp

__all__ = [
    "EVENT_TYPES",
    "UNNAMED_EVENT",
    "Event",
    "GenericEvent",
    "KnownEvent",
    "LiveSchema",
    "ModeledEvent",
    "Timestamp",
    "decode_event",
    "known_event_names",
]

"""What one record becomes on NATS: subject, headers, payload; or why it cannot be published.

- An event goes to ``qmp.<vm>.<EVENT>``; its payload is the event exactly as QEMU
  sent it. A gap goes to ``qmp.<vm>._GAP`` as JSON (``{"type": "gap", "vm": ...,
  "started": ..., "ended": ..., "reason": ...}``).
- ``<vm>`` and ``<EVENT>`` are made into one subject token each by
  :func:`subject_token` (``.``, ``*``, ``>``, ``%``, whitespace and control
  characters become ``%XX``).
- Header ``Qmp-Vm`` is the VM name percent-escaped (:func:`~.names.percent_escape`:
  ``%``, control characters such as CR, LF and TAB, non-ASCII characters and a space
  at either end become ``%XX`` of UTF-8), because NATS clients strip header values
  and fold CR/LF into spaces; ``urllib.parse.unquote`` gives the exact name back.
  ``Qmp-Received-At`` is the collector's receive time (seconds since the epoch).
- ``Nats-Msg-Id`` is derived from the record alone (see :func:`message_id`).

A record that can never be published raises :class:`Unpublishable` with its
``reason``: ``subject`` (an empty event name, or a subject longer than
:data:`MAX_SUBJECT` bytes, which the server would refuse by closing the
connection), ``too_large`` (headers and payload over the server's ``max_payload``,
1 MiB by default).
"""

from __future__ import annotations

import hashlib

import msgspec

from qmpevents.collect.names import percent_escape
from qmpevents.collect.records import EventRecord, Record
from qmpevents.sources.nats_subjects import GAP_TOKEN, subject_token

__all__ = [
    "GAP_TOKEN",
    "MAX_SUBJECT",
    "NATS_REASONS",
    "Message",
    "Unpublishable",
    "message_for",
    "message_id",
    "subject_of",
    "subject_token",
]

MAX_SUBJECT = 1024
"""The longest subject published, in bytes (the server's whole control line is 4 KiB)."""

NATS_REASONS = ("too_large", "subject", "refused", "invalid")
"""Why NATS rejects a record: over ``max_payload``, no valid subject, refused by
JetStream itself (say, over the stream's ``max_msg_size``), not a record at all."""

# "NATS/1.0\r\n" ... "\r\n": what a header block adds around its lines
_HEADER_FRAME = len(b"NATS/1.0\r\n\r\n")


class Unpublishable(ValueError):
    """A record that no retry will publish; ``reason`` is its ``rejected_total`` label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def subject_of(record: Record) -> str:
    """The subject ``record`` is published to (``qmp.<vm>.<event>`` or ``qmp.<vm>._GAP``)."""
    last = subject_token(record.name) if isinstance(record, EventRecord) else GAP_TOKEN
    return f"qmp.{subject_token(record.vm)}.{last}"


def message_id(record: Record) -> str:
    """The ``Nats-Msg-Id`` of ``record``: the same record always gets the same id.

    For an event: VM, QEMU timestamp, event name and a BLAKE2b hash of the raw bytes.
    For a gap: VM, start and end (an open gap and its closing are two messages).
    VM and event name are percent-escaped, so that no two records share an id.
    """
    vm = percent_escape(record.vm)
    if isinstance(record, EventRecord):
        digest = hashlib.blake2b(record.raw, digest_size=12).hexdigest()
        stamp = f"{record.qemu_seconds}.{record.qemu_micros:06d}"
        return f"{vm}:{stamp}:{percent_escape(record.name)}:{digest}"
    return f"{vm}:gap:{record.started!r}:{record.ended!r}"


class Message(msgspec.Struct, frozen=True):
    """A record as published: ``subject``, ``payload`` and ``headers``."""

    subject: str
    payload: bytes
    headers: dict[str, str]

    @property
    def size(self) -> int:
        """Bytes the server counts against ``max_payload``: the header block and payload."""
        lines = sum(len(k) + len(v.encode()) + 4 for k, v in self.headers.items())
        return _HEADER_FRAME + lines + len(self.payload)


def message_for(record: Record, max_payload: int) -> Message:
    """The message of ``record``; :class:`Unpublishable` if it can never be published."""
    try:
        subject = subject_of(record)
    except ValueError as error:
        raise Unpublishable("subject", f"no subject: {error}") from None
    if len(subject.encode()) > MAX_SUBJECT:
        raise Unpublishable(
            "subject", f"subject of {len(subject.encode())} bytes (at most {MAX_SUBJECT})"
        )
    if isinstance(record, EventRecord):
        payload, received_at = record.raw, record.received_at
    else:
        payload, received_at = msgspec.json.encode(record), record.started
    headers = {
        "Nats-Msg-Id": message_id(record),
        "Qmp-Vm": percent_escape(record.vm),
        "Qmp-Received-At": repr(received_at),
    }
    message = Message(subject, payload, headers)
    if message.size > max_payload:
        raise Unpublishable(
            "too_large", f"{message.size} bytes with headers, over max_payload {max_payload}"
        )
    return message

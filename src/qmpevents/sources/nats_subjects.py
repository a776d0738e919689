"""How the fleet's records are laid out on NATS: stream, subjects, headers; and filters.

Shared by the writer (``collect``'s NATS outbox) and the readers (:mod:`.nats`, the
central archive), so that a subject is escaped and unescaped one way only.

- Stream :data:`STREAM`, subjects ``qmp.<vm>.<EVENT>``; a gap on ``qmp.<vm>._GAP``.
- :func:`subject_token` makes one subject token of a name (``.``, ``*``, ``>``,
  ``%``, whitespace and control characters become ``%XX``).
- Headers: :data:`VM_HEADER` (the VM name percent-escaped: ``urllib.parse.unquote``
  gives it back), :data:`HOST_HEADER` (the publishing collector's ``--host``),
  :data:`RECEIVED_HEADER`, and JetStream's :data:`MSG_ID_HEADER`.
- :func:`subject_filters` turns ``--vm`` / ``--event`` globs into the narrowest
  subject filters NATS can apply (a glob that is not a whole token becomes ``*``
  and is checked by the reader).
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence

__all__ = [
    "GAP_TOKEN",
    "HOST_HEADER",
    "MSG_ID_HEADER",
    "RECEIVED_HEADER",
    "STREAM",
    "VM_HEADER",
    "header_text",
    "is_glob",
    "subject_filters",
    "subject_token",
]

STREAM = "QMP_EVENTS"
"""The stream every collector publishes to."""

GAP_TOKEN = "_GAP"
"""The last subject token of gap records (no QEMU event name starts with ``_``)."""

VM_HEADER = "Qmp-Vm"
HOST_HEADER = "Qmp-Host"
RECEIVED_HEADER = "Qmp-Received-At"
MSG_ID_HEADER = "Nats-Msg-Id"

_ESCAPED = frozenset(".*>%")
_RESERVED = re.compile(r"[.*>% ]")  # what printable ASCII has to escape
_GLOB = re.compile(r"[*?\[]")


def subject_token(name: str) -> str:
    """``name`` as one NATS subject token: reserved and blank characters become ``%XX``.

    The mapping is one-to-one (``%`` itself is escaped), so two VM names never
    share a subject. Raises ``ValueError`` for an empty name.
    """
    if not name:
        raise ValueError("an empty name cannot be a subject token")
    if name.isascii() and name.isprintable() and not _RESERVED.search(name):
        return name  # the usual name: nothing to escape
    return "".join(
        "".join(f"%{byte:02X}" for byte in ch.encode("utf-8", "surrogatepass"))
        if ch in _ESCAPED or ch.isspace() or not ch.isprintable()
        else ch
        for ch in name
    )


def is_glob(pattern: str) -> bool:
    """Whether ``pattern`` has fnmatch wildcards (``*``, ``?``, ``[``)."""
    return _GLOB.search(pattern) is not None


def subject_filters(vm: str | None, names: Sequence[str]) -> list[str]:
    """The subject filters for VM glob ``vm`` and event globs ``names`` (none: all).

    A literal VM name is its escaped token, a glob ``*``. Literal event names are
    one subject each, plus the VM's gap subject (gaps are shown whatever the event
    filter); any glob among them makes it ``*`` for every event.
    """
    vm_token = "*" if vm is None or is_glob(vm) else subject_token(vm)
    if not names or any(is_glob(name) for name in names):
        return [f"qmp.{vm_token}.*"]
    events = sorted({f"qmp.{vm_token}.{subject_token(name)}" for name in names})
    return [*events, f"qmp.{vm_token}.{GAP_TOKEN}"]


def header_text(headers: Mapping[str, str] | None, key: str) -> str | None:
    """The percent-unescaped value of header ``key`` (``None`` when absent)."""
    if not headers:
        return None
    value = headers.get(key)
    return None if value is None else urllib.parse.unquote(value)

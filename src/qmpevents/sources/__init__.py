"""Event sources: typed events, gaps and connection markers from anywhere, reconnecting.

- :class:`EventSource` and its items (:mod:`.base`): the one interface that
  ``watch``, ``collect`` and every later consumer read from.
- :class:`QMPSource` (:mod:`.qmp`): a QMP unix socket or TCP port.
- :func:`parse_target` (:mod:`.targets`): a command-line target, checked, with
  its VM name; ``parse_target(text).source()`` is its source.
"""

from qmpevents.sources.base import (
    Connected,
    Disconnected,
    EventSource,
    SourceItem,
    Unreachable,
)
from qmpevents.sources.qmp import QMPSource
from qmpevents.sources.targets import Target, name_of_socket, parse_target

__all__ = [
    "Connected",
    "Disconnected",
    "EventSource",
    "QMPSource",
    "SourceItem",
    "Target",
    "Unreachable",
    "name_of_socket",
    "parse_target",
]

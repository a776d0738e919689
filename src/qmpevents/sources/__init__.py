"""Event sources: typed events, gaps and connection markers from anywhere, reconnecting.

- :class:`EventSource` and its items (:mod:`.base`): the one interface that
  ``watch``, ``collect`` and every later consumer read from.
- :class:`QMPSource` (:mod:`.qmp`): a QMP unix socket or TCP port.
- :class:`ListenSource` (:mod:`.listen`): QEMUs connect to our unix socket
  (``-chardev socket,...,reconnect=N``); each VM is announced once as a
  :class:`VMSource`, an ordinary event source named after the VM's ``-name``.
- :class:`NatsSource` (:mod:`.nats`): the whole fleet, read back from NATS
  JetStream (``nats://`` targets), each item a :class:`FleetItem` naming its VM.
- :class:`LibvirtSource` (:mod:`.libvirt`): every domain of a libvirt host
  (``qemu:///system`` targets), each announced as a :class:`DomainSource`.
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
from qmpevents.sources.libvirt import LibvirtItem, LibvirtSource
from qmpevents.sources.libvirt_domain import DomainSource
from qmpevents.sources.listen import ListenSource, VMSource
from qmpevents.sources.nats import FleetItem, FleetSourceItem, NatsSource
from qmpevents.sources.qmp import QMPSource
from qmpevents.sources.targets import Target, name_of_socket, parse_target

__all__ = [
    "Connected",
    "Disconnected",
    "DomainSource",
    "EventSource",
    "FleetItem",
    "FleetSourceItem",
    "LibvirtItem",
    "LibvirtSource",
    "ListenSource",
    "NatsSource",
    "QMPSource",
    "SourceItem",
    "Target",
    "Unreachable",
    "VMSource",
    "name_of_socket",
    "parse_target",
]

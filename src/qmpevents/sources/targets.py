"""The one reading of a command-line target: which VM, and where its events come from.

``watch``, ``collect`` and every other command take targets in the same forms:

- ``NAME=TARGET``: the VM is called NAME (NAME has no ``/``);
- a socket path: the VM is named after the file, without its last suffix
  (``/run/qemu/web1.qmp`` is ``web1``);
- ``HOST:PORT`` (``[::1]:4444`` for IPv6): QMP over TCP, named ``HOST:PORT``;
- ``nats://HOST:PORT[,HOST:PORT...]``: a whole fleet, read from NATS JetStream
  (:class:`~.nats.NatsSource`); the target's :attr:`Target.servers` are the NATS
  URLs, and its VM names come from the messages.
- ``qemu:///system`` (any libvirt QEMU URI), optionally ``?domain=NAME``: the
  domains of a libvirt host (:class:`~.libvirt.LibvirtSource`); the target's
  :attr:`Target.libvirt` is the URI and domain, and its VM names are the domains'.

:func:`parse_target` checks the text at once (a bad port is a
:class:`~qmpevents.errors.ConfigError` before anything connects), and
:meth:`Target.source` makes the :class:`~.base.EventSource` for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmpevents.addresses import Address, parse_address
from qmpevents.errors import ConfigError
from qmpevents.sources.base import EventSource
from qmpevents.sources.libvirt import LibvirtSource
from qmpevents.sources.libvirt_uri import LibvirtTarget, is_libvirt_target, parse_libvirt_target
from qmpevents.sources.nats import NatsSource
from qmpevents.sources.qmp import QMPSource

__all__ = ["NATS_SCHEME", "Target", "name_of_socket", "parse_nats_servers", "parse_target"]

NATS_SCHEME = "nats://"


def name_of_socket(path: str) -> str:
    """The VM name of a socket file: its file name without the last suffix."""
    return Path(path).stem


@dataclass(frozen=True, slots=True)
class Target:
    """A VM's name and where its QMP monitor is."""

    name: str
    address: Address
    servers: tuple[str, ...] = ()
    """The NATS URLs of a fleet target (``nats://...``); empty for a QMP target."""
    libvirt: LibvirtTarget | None = None
    """The URI (and domain) of a libvirt target (``qemu:///...``); None otherwise."""

    @property
    def fleet(self) -> bool:
        """Whether this is a NATS target: the events of many VMs, not one monitor."""
        return bool(self.servers)

    @property
    def monitor(self) -> bool:
        """Whether this is one QMP monitor (a socket or ``HOST:PORT``) we connect to ourselves."""
        return not self.fleet and self.libvirt is None

    @property
    def text(self) -> str:
        """The address as a user writes it."""
        if self.libvirt is not None:
            return self.libvirt.text
        return self.name if self.fleet else str(self.address)

    def source(self, **options: Any) -> EventSource:
        """The event source for this target; ``options`` are :class:`QMPSource`'s.

        A fleet target has no single VM: ``ConfigError`` (use :meth:`fleet_source`).
        """
        if self.fleet:
            raise ConfigError(f"{self.name}: a NATS target is a fleet, not one QMP monitor")
        if self.libvirt is not None:
            raise ConfigError(f"{self.text}: a libvirt target is read with LibvirtSource")
        return QMPSource(self.name, self.address, **options)

    def libvirt_source(self, **options: Any) -> LibvirtSource:
        """The :class:`~.libvirt.LibvirtSource` of a libvirt target; ``options`` are its own.

        ``ConfigError`` when this is not a libvirt target, or libvirt-python is missing.
        """
        if self.libvirt is None:
            raise ConfigError(f"{self.name}: not a qemu:/// (libvirt) target")
        return LibvirtSource(self.libvirt, **options)

    def fleet_source(self, **options: Any) -> NatsSource:
        """The :class:`~.nats.NatsSource` of a fleet target; ``options`` are its own."""
        if not self.fleet:
            raise ConfigError(f"{self.name}: not a nats:// target")
        return NatsSource(self.servers, name=self.name, **options)


def parse_nats_servers(text: str) -> tuple[str, ...]:
    """``nats://H:P[,H:P...]`` (each may repeat ``nats://``) as one URL per server."""
    body = text[len(NATS_SCHEME) :] if text.startswith(NATS_SCHEME) else text
    servers: list[str] = []
    for part in body.split(","):
        part = part.strip()
        part = part[len(NATS_SCHEME) :] if part.startswith(NATS_SCHEME) else part
        address = parse_address(part) if part else None
        if address is None or address.path is not None or address.port is None:
            raise ConfigError(f"{text!r}: expected nats://HOST:PORT[,HOST:PORT...]")
        servers.append(f"{NATS_SCHEME}{address}")
    return tuple(servers)


def parse_target(text: str, *, name: str | None = None) -> Target:
    """The :class:`Target` of ``text`` (see the module docstring); ``name`` overrides."""
    if is_libvirt_target(text):
        libvirt = parse_libvirt_target(text)
        return Target(name or libvirt.domain or libvirt.uri, Address(), libvirt=libvirt)
    if text.startswith(NATS_SCHEME):
        servers = parse_nats_servers(text)
        host, _, port = servers[0][len(NATS_SCHEME) :].rpartition(":")
        return Target(name or text, Address(host=host.strip("[]"), port=int(port)), servers)
    label, sep, rest = text.partition("=")
    if sep and "/" not in label:
        if not label or not rest:
            raise ConfigError(f"{text!r}: expected NAME=TARGET, a socket path or HOST:PORT")
        address = parse_address(rest)
    else:
        if not text:
            raise ConfigError("an empty target: expected NAME=TARGET, a socket path or HOST:PORT")
        address = parse_address(text)
        label = name_of_socket(text) if address.path is not None else text
    return Target(name or label, address)

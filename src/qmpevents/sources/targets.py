"""The one reading of a command-line target: which VM, and where its events come from.

``watch``, ``collect`` and every other command take targets in the same forms:

- ``NAME=TARGET``: the VM is called NAME (NAME has no ``/``);
- a socket path: the VM is named after the file, without its last suffix
  (``/run/qemu/web1.qmp`` is ``web1``);
- ``HOST:PORT`` (``[::1]:4444`` for IPv6): QMP over TCP, named ``HOST:PORT``.

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
from qmpevents.sources.qmp import QMPSource

__all__ = ["Target", "name_of_socket", "parse_target"]


def name_of_socket(path: str) -> str:
    """The VM name of a socket file: its file name without the last suffix."""
    return Path(path).stem


@dataclass(frozen=True, slots=True)
class Target:
    """A VM's name and where its QMP monitor is."""

    name: str
    address: Address

    @property
    def text(self) -> str:
        """The address as a user writes it."""
        return str(self.address)

    def source(self, **options: Any) -> EventSource:
        """The event source for this target; ``options`` are :class:`QMPSource`'s."""
        return QMPSource(self.name, self.address, **options)


def parse_target(text: str, *, name: str | None = None) -> Target:
    """The :class:`Target` of ``text`` (see the module docstring); ``name`` overrides."""
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

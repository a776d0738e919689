"""Which VMs to attach: command-line targets, and QMP sockets appearing in a directory.

- A command-line target is ``NAME=TARGET``, or a bare socket path whose VM name is
  the file name without its last suffix (``/run/qemu/web1.qmp`` is ``web1``).
- :class:`DirectoryWatcher` looks at a directory every ``interval`` seconds
  (``os.scandir``; sockets only, ``S_ISSOCK``) and reports the sockets that
  appeared and vanished since its last look, named the same way.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from qmpevents.addresses import parse_address
from qmpevents.collect.config import VMSpec
from qmpevents.errors import ConfigError

__all__ = ["Changes", "DirectoryWatcher", "name_of_socket", "vm_from_argument"]

log = logging.getLogger(__name__)


def name_of_socket(path: str | os.PathLike[str]) -> str:
    """The VM name of a socket file: its name without the last suffix."""
    return Path(path).stem


def vm_from_argument(text: str) -> VMSpec:
    """The VM of a command-line target: ``NAME=TARGET`` or a bare socket path.

    Raises ``ConfigError`` for an empty name or target, and for a bare ``HOST:PORT``
    (a TCP target has no file name to take the VM's name from).
    """
    name, sep, target = text.partition("=")
    if not sep or "/" in name:
        name, target = name_of_socket(text), text
        if parse_address(text).path is None:
            raise ConfigError(f"{text}: a TCP target needs a name: NAME={text}")
    if not name or not target:
        raise ConfigError(f"{text!r}: expected NAME=TARGET or a socket path")
    return VMSpec(name, target)


@dataclass
class Changes:
    """What one look at the directory found: sockets that ``appeared`` and ``vanished``."""

    appeared: list[VMSpec] = field(default_factory=list)
    vanished: list[VMSpec] = field(default_factory=list)


class DirectoryWatcher:
    """The QMP sockets in ``directory``; :meth:`scan` says what changed since the last scan.

    ``taken`` names and paths (the configured VMs) are never reported: a configured
    socket in the directory keeps its configured name. Two sockets with one name: the
    first one found is reported, the other logged once and ignored.
    """

    def __init__(
        self, directory: Path, *, interval: float = 1.0, taken: Collection[VMSpec] = ()
    ) -> None:
        self.directory = directory
        self.interval = interval
        self._taken_names = {vm.name for vm in taken}
        self._taken_paths = {os.path.abspath(vm.target) for vm in taken}
        self._present: dict[str, VMSpec] = {}  # path -> VM
        self._ignored: set[str] = set()
        self._unreadable: str | None = None

    def scan(self) -> Changes:
        """Look at the directory once. An unreadable directory is logged and counts as empty."""
        found = self._sockets()
        changes = Changes()
        for path in list(self._present):
            if path not in found:
                changes.vanished.append(self._present.pop(path))
        names = {vm.name for vm in self._present.values()} | self._taken_names
        for path in sorted(found):
            if path in self._present or path in self._taken_paths:
                continue
            name = name_of_socket(path)
            if name in names:
                if path not in self._ignored:
                    self._ignored.add(path)
                    log.warning("%s: ignored, the VM name %r is already attached", path, name)
                continue
            vm = VMSpec(name, path)
            self._present[path] = vm
            names.add(name)
            changes.appeared.append(vm)
        self._ignored &= found
        return changes

    def _sockets(self) -> set[str]:
        found: set[str] = set()
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    try:
                        is_socket = stat.S_ISSOCK(entry.stat().st_mode)
                    except OSError:  # removed between the listing and the stat
                        continue
                    if is_socket:
                        found.add(os.path.abspath(entry.path))
        except OSError as error:
            reason = error.strerror or str(error)
            if reason != self._unreadable:
                log.error("watched directory %s: cannot list: %s", self.directory, reason)
            self._unreadable = reason
            return set()
        self._unreadable = None
        return found

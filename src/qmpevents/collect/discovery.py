"""Which VMs to attach: command-line targets, and QMP sockets appearing in a directory.

- A command-line target is read by :func:`qmpevents.sources.parse_target`, as
  every command reads it: ``NAME=TARGET``, a socket path named after its file
  (``/run/qemu/web1.qmp`` is ``web1``), or ``HOST:PORT``.
- :class:`DirectoryWatcher` looks at a directory every ``interval`` seconds
  (``os.scandir``; sockets only, ``S_ISSOCK``) and reports the sockets that
  appeared and vanished since its last look, named the same way. A file name that
  is not valid UTF-8 names its VM with the undecodable bytes as ``\\xNN``
  (``b"vm\\xff.sock"`` is the VM ``vm\\xff``; see :class:`~.config.VMSpec`).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from qmpevents.collect.config import VMSpec
from qmpevents.sources import name_of_socket, parse_target

__all__ = ["Changes", "DirectoryWatcher", "vm_from_argument"]

log = logging.getLogger(__name__)


def vm_from_argument(text: str) -> VMSpec:
    """The VM of a command-line target; raises ``ConfigError`` for a malformed one."""
    target = parse_target(text)
    return VMSpec(target.name, target.text)


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
            vm = VMSpec(name_of_socket(path), path)  # a name that is not UTF-8 is escaped
            if vm.name in names:
                if path not in self._ignored:
                    self._ignored.add(path)
                    log.warning("%r: ignored, the VM name %r is already attached", path, vm.name)
                continue
            self._present[path] = vm
            names.add(vm.name)
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

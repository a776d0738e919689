"""The ``quorum`` block driver: votes on its children's data and reports the losers.

This follows QEMU 7.2's block/quorum.c:

* A read goes to every child. Each child that fails raises QUORUM_REPORT_BAD
  (with ``error``, its ``strerror``) at once; fewer successes than
  ``vote-threshold`` raise QUORUM_FAILURE. Otherwise the successful reads are
  compared; on disagreement they are grouped into versions, and a winning version
  with fewer votes than the threshold raises QUORUM_FAILURE alone. When a version
  wins, each child of every other version raises QUORUM_REPORT_BAD (no
  ``error``), and with ``rewrite-corrupted`` the winner is written back to them.
* ``read-pattern: fifo`` reads the children in order until one succeeds,
  reporting each failure.
* A write goes to every child, failures reported as for reads.
* A flush reports each failing child with sectors 0/0 and never QUORUM_FAILURE.

Positions are in 512-byte sectors: the first sector touched and how many. The
failure's ``reference`` is the quorum's device name when it has one, else its
node-name. Events pass through the server's rate limiter like QEMU's.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING, Any

from qmpevents.sim.block import BlockError, Node

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["QuorumNode"]

_SECTOR = 512


def _sectors(offset: int, length: int) -> tuple[int, int]:
    start = offset // _SECTOR
    end = -(-(offset + length) // _SECTOR)
    return start, end - start


class QuorumNode(Node):
    """A quorum over ``children`` that needs ``threshold`` agreeing votes."""

    driver = "quorum"

    def __init__(
        self,
        node_name: str,
        children: list[Node],
        machine: Machine,
        threshold: int,
        *,
        fifo: bool = False,
        rewrite: bool = False,
    ) -> None:
        super().__init__(node_name, children)
        self._machine = machine
        self.threshold = threshold
        self.fifo = fifo
        self.rewrite = rewrite

    def _report_bad(
        self, op: str, child: Node, offset: int, length: int, error: int | None
    ) -> None:
        sector, count = _sectors(offset, length)
        data: dict[str, Any] = {"type": op}
        if error is not None:
            data["error"] = _strerror(error)
        data.update({"node-name": child.node_name, "sector-num": sector, "sectors-count": count})
        self._machine.server.emit("QUORUM_REPORT_BAD", data)

    def _report_failure(self, offset: int, length: int) -> None:
        sector, count = _sectors(offset, length)
        self._machine.server.emit(
            "QUORUM_FAILURE",
            {
                "reference": self.device or self.node_name,
                "sector-num": sector,
                "sectors-count": count,
            },
        )

    def read(self, offset: int, length: int) -> bytes:
        if self.fifo:
            return self._read_fifo(offset, length)
        results: list[bytes | None] = []
        errors: list[int] = []
        for child in self.children:
            try:
                results.append(child.read(offset, length))
            except BlockError as error:
                results.append(None)
                errors.append(error.errno)
                self._report_bad("read", child, offset, length, error.errno)
        successes = [data for data in results if data is not None]
        if len(successes) < self.threshold:
            self._report_failure(offset, length)
            raise BlockError(_most_common(errors))
        if all(data == successes[0] for data in successes):
            return successes[0]
        # Versions in QEMU's vote list order: a new version goes to the head, and so
        # does each new voter of a version.
        versions: list[tuple[bytes, list[int]]] = []
        for index, data in enumerate(results):
            if data is None:
                continue
            for version in versions:
                if version[0] == data:
                    version[1].insert(0, index)
                    break
            else:
                versions.insert(0, (data, [index]))
        winner = versions[0]
        for version in versions[1:]:
            if len(version[1]) > len(winner[1]):
                winner = version
        if len(winner[1]) < self.threshold:
            self._report_failure(offset, length)
            raise BlockError(errno.EIO)
        for version in versions:
            if version is winner:
                continue
            for index in version[1]:
                self._report_bad("read", self.children[index], offset, length, None)
                if self.rewrite:
                    self.children[index].write(offset, winner[0])
        return winner[0]

    def _read_fifo(self, offset: int, length: int) -> bytes:
        last = errno.EIO
        for child in self.children:
            try:
                return child.read(offset, length)
            except BlockError as error:
                last = error.errno
                self._report_bad("read", child, offset, length, error.errno)
        self._report_failure(offset, length)
        raise BlockError(last)

    def write(self, offset: int, data: bytes) -> None:
        errors: list[int] = []
        for child in self.children:
            try:
                child.write(offset, data)
            except BlockError as error:
                errors.append(error.errno)
                self._report_bad("write", child, offset, len(data), error.errno)
        if len(self.children) - len(errors) < self.threshold:
            self._report_failure(offset, len(data))
            raise BlockError(_most_common(errors))

    def flush(self) -> None:
        errors: list[int] = []
        for child in self.children:
            try:
                child.flush()
            except BlockError as error:
                errors.append(error.errno)
                self._report_bad("flush", child, 0, 0, error.errno)
        if len(self.children) - len(errors) < self.threshold:
            raise BlockError(_most_common(errors))

    @property
    def size(self) -> int:
        sizes = {child.size for child in self.children}
        return sizes.pop() if len(sizes) == 1 else 0


def _most_common(errors: list[int]) -> int:
    return max(set(errors), key=errors.count) if errors else errno.EIO


def _strerror(number: int) -> str:
    return os.strerror(number)

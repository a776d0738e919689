"""Block nodes over real image files: ``file``, ``raw``, ``blkdebug`` and ``quorum``.

Nodes are created by ``blockdev-add`` (or ``-blockdev``/``-drive``) with QEMU's
argument shapes and read and written for real. ``blkdebug`` injects errors as
QEMU's does: a parent's I/O raises a debug event on its child (``read_aio``,
``write_aio``, ``flush_to_os``), which activates the matching ``inject-error``
rules; the next request of a matching I/O type and sector then fails with the
rule's errno. The ``quorum`` driver lives in :mod:`qmpevents.sim.quorum`.
"""

from __future__ import annotations

import errno as errno_module
import os
import random
from typing import TYPE_CHECKING, Any

import msgspec

from qmpevents.protocol.arguments import ArgumentError, convert_arguments
from qmpevents.server.commands import CommandContext
from qmpevents.sim.block_options import (
    OPTIONS,
    BlkdebugOptions,
    BlockdevAddArguments,
    BlockdevDelArguments,
    BlockdevRef,
    DriverOnly,
    FileOptions,
    InjectError,
    QuorumOptions,
    RawOptions,
)
from qmpevents.sim.errors import fail

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["BlockError", "BlockLayer", "BlockdevAddArguments", "FileNode", "Node"]

_SECTOR = 512


class BlockError(Exception):
    """A failed block request; ``errno`` is the (positive) error number."""

    def __init__(self, errno: int) -> None:
        super().__init__(os.strerror(errno))
        self.errno = errno


class Node:
    """A block node: ``node_name``, its children, and byte-addressed I/O."""

    driver = ""

    def __init__(self, node_name: str, children: list[Node]) -> None:
        self.node_name = node_name
        self.children = children
        self.parents = 0
        self.device: str | None = None
        self.options: dict[str, Any] = {}  # as created (query-named-block-nodes reads them)
        # Nodes added on their own (not inline in a parent) belong to the monitor
        # and outlive their parents, as in QEMU.
        self.monitor_owned = False

    @property
    def size(self) -> int:
        """Length in bytes."""
        return self.children[0].size

    def read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at ``offset``; raises :class:`BlockError`."""
        raise NotImplementedError

    def write(self, offset: int, data: bytes) -> None:
        """Write ``data`` at ``offset``; raises :class:`BlockError`."""
        raise NotImplementedError

    def flush(self) -> None:
        """Flush this node and the children it writes to; raises :class:`BlockError`."""
        for child in self.children:
            child.flush()

    def debug_event(self, event: str) -> None:
        """A parent raised blkdebug event ``event`` on this node (only blkdebug reacts)."""

    def close(self) -> None:
        """Release what the node holds (file descriptors)."""


class FileNode(Node):
    """The ``file`` driver: a host file opened read-write."""

    driver = "file"

    def __init__(self, node_name: str, filename: str) -> None:
        super().__init__(node_name, [])
        self.filename = filename
        try:
            self._fd = os.open(filename, os.O_RDWR)
        except OSError as error:
            fail(f"Could not open '{filename}': {os.strerror(error.errno or errno_module.EIO)}")

    @property
    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def read(self, offset: int, length: int) -> bytes:
        data = os.pread(self._fd, length, offset)
        return data + bytes(length - len(data))

    def write(self, offset: int, data: bytes) -> None:
        os.pwrite(self._fd, data, offset)

    def flush(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        os.close(self._fd)


class RawNode(Node):
    """The ``raw`` format: passes requests to its file child, raising debug events."""

    driver = "raw"

    def read(self, offset: int, length: int) -> bytes:
        self.children[0].debug_event("read_aio")
        return self.children[0].read(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        self.children[0].debug_event("write_aio")
        self.children[0].write(offset, data)

    def flush(self) -> None:
        # bdrv_co_flush() raises both events on the primary child first.
        self.children[0].debug_event("flush_to_os")
        self.children[0].debug_event("flush_to_disk")
        super().flush()


# QEMU's rules without an iotype apply to these request types only (not flush).
_DEFAULT_IOTYPES = frozenset({"read", "write", "write-zeroes", "discard"})


class BlkdebugNode(Node):
    """The ``blkdebug`` filter with ``inject-error`` rules."""

    driver = "blkdebug"

    def __init__(self, node_name: str, image: Node, rules: list[InjectError]) -> None:
        super().__init__(node_name, [image])
        self.rules = list(rules)
        self._active: list[InjectError] = []

    def debug_event(self, event: str) -> None:
        matching = [
            rule for rule in self.rules if rule.event == event and rule.state in (None, 0, 1)
        ]
        if matching:
            # blkdebug_debug_event(): the first injecting rule resets the active list,
            # and each one is inserted at its head.
            self._active = list(reversed(matching))

    def _check(self, iotype: str, offset: int, length: int) -> None:
        for rule in self._active:
            types = _DEFAULT_IOTYPES if rule.iotype is None else {rule.iotype}
            if iotype not in types:
                continue
            if rule.sector is not None and rule.sector >= 0:
                start = rule.sector * _SECTOR
                if not (start < offset + length and offset < start + _SECTOR):
                    continue
            if rule.once:
                self._active.remove(rule)
                self.rules.remove(rule)
            raise BlockError(rule.errno if rule.errno is not None else errno_module.EIO)

    def read(self, offset: int, length: int) -> bytes:
        self._check("read", offset, length)
        return self.children[0].read(offset, length)

    def write(self, offset: int, data: bytes) -> None:
        self._check("write", offset, len(data))
        self.children[0].write(offset, data)

    def flush(self) -> None:
        self._check("flush", 0, 0)
        super().flush()


class BlockLayer:
    """Every block node of a machine by node-name, and ``blockdev-add``/``-del``."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine
        self.nodes: dict[str, Node] = {}
        self._auto = 0

    def install(self) -> None:
        """Register ``blockdev-add`` and ``blockdev-del``."""
        server = self._machine.server
        server.register("blockdev-add", self._blockdev_add, BlockdevAddArguments)
        server.register("blockdev-del", self._blockdev_del, BlockdevDelArguments)

    def lookup(self, name: str) -> Node:
        """The node with BlockBackend (device) name or node-name ``name``."""
        found = self.find(name)
        if found is None:
            fail(f"Cannot find device='{name}' nor node-name='{name}'")
        return found

    def find(self, name: str) -> Node | None:
        """Like :meth:`lookup`, but None when nothing has that name."""
        for node in self.nodes.values():
            if node.device == name:
                return node
        return self.nodes.get(name)

    def add(self, options: dict[str, Any], device: str | None = None) -> Node:
        """Create the node tree ``options`` describes; ``device`` names its BlockBackend.

        Raises the QMP failure QEMU would answer with; nothing is created then.
        """
        created: list[Node] = []
        try:
            node = self._build(options, created)
        except BaseException:
            for item in reversed(created):
                self._forget(item)
            raise
        node.device = device
        node.monitor_owned = True
        return node

    def _blockdev_add(self, args: BlockdevAddArguments, ctx: CommandContext) -> Any:
        self.add(msgspec.to_builtins(args))
        return {}

    def _blockdev_del(self, args: BlockdevDelArguments, ctx: CommandContext) -> Any:
        node = self.nodes.get(args.node_name)
        if node is None:
            fail(f"Failed to find node with node-name='{args.node_name}'")
        if node.parents or node.device is not None:
            fail(f"Block device {args.node_name} is in use")
        self._release(node)
        return {}

    def _release(self, node: Node) -> None:
        self._forget(node)
        for child in node.children:
            child.parents -= 1
            if not child.parents and not child.monitor_owned:
                self._release(child)

    def _forget(self, node: Node) -> None:
        if self.nodes.get(node.node_name) is node:
            del self.nodes[node.node_name]
            node.close()

    def _ref(self, ref: BlockdevRef, created: list[Node]) -> Node:
        node = self.lookup(ref) if isinstance(ref, str) else self._build(ref, created)
        node.parents += 1
        return node

    def _build(self, options: dict[str, Any], created: list[Node]) -> Node:
        from qmpevents.sim.quorum import QuorumNode

        try:
            driver = convert_arguments(DriverOnly, {"driver": options.get("driver")}).driver
        except ArgumentError as error:
            if "driver" not in options:
                fail("Parameter 'driver' is missing")
            fail(error.desc)
        option_type = OPTIONS.get(driver)
        if option_type is None:
            fail(f"Driver '{driver}' is not simulated by qmpevents-qemu")
        try:
            parsed = convert_arguments(option_type, options)
        except ArgumentError as error:
            fail(error.desc)
        name = parsed.node_name
        if name is not None and name in self.nodes:
            fail(f"Duplicate nodes with node-name='{name}'")
        # QEMU names a format node (raw) once its file child is open, any other node
        # before its children: that order decides the automatic names and the order
        # of query-named-block-nodes.
        position = len(self.nodes)
        if name is None and not isinstance(parsed, RawOptions):
            name = self._auto_name()
        node: Node
        if isinstance(parsed, FileOptions):
            node = FileNode(str(name), parsed.filename)
        elif isinstance(parsed, RawOptions):
            child = self._ref(parsed.file, created)
            position = len(self.nodes)
            node = RawNode(name or self._auto_name(), [child])
        elif isinstance(parsed, BlkdebugOptions):
            image = self._ref(parsed.image, created)
            node = BlkdebugNode(str(name), image, parsed.inject_error or [])
        else:
            assert isinstance(parsed, QuorumOptions)
            if parsed.vote_threshold < 1:
                fail("Parameter 'vote-threshold' expects a value >= 1")
            if not parsed.children:
                fail("Number of provided children must be 1 or more")
            if parsed.vote_threshold > len(parsed.children):
                fail("threshold may not exceed children count")
            if parsed.rewrite_corrupted and parsed.read_pattern == "fifo":
                fail("rewrite-corrupted=on cannot be used with read-pattern=fifo")
            children = [self._ref(ref, created) for ref in parsed.children]
            node = QuorumNode(
                str(name), children, self._machine, parsed.vote_threshold,
                fifo=parsed.read_pattern == "fifo", rewrite=bool(parsed.rewrite_corrupted),
            )  # fmt: skip
        node.options = options
        items = list(self.nodes.items())
        items.insert(position, (node.node_name, node))
        self.nodes = dict(items)
        created.append(node)
        return node

    def _auto_name(self) -> str:
        # QEMU's id_generate(): a counter from 0, then two random digits.
        name = f"#block{self._auto}{random.randrange(100):02d}"
        self._auto += 1
        return name

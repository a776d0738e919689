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
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from qmpevents.protocol.arguments import ArgumentError, convert_arguments
from qmpevents.server.commands import CommandContext
from qmpevents.sim.errors import fail

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["BlockError", "BlockLayer", "Node"]

Driver = Literal[
    "blkdebug", "blklogwrites", "blkreplay", "blkverify", "bochs", "cloop", "compress",
    "copy-before-write", "copy-on-read", "dmg", "file", "snapshot-access", "ftp", "ftps",
    "gluster", "host_cdrom", "host_device", "http", "https", "iscsi", "luks", "nbd", "nfs",
    "null-aio", "null-co", "nvme", "parallels", "preallocate", "qcow", "qcow2", "qed", "quorum",
    "raw", "rbd", "replication", "ssh", "throttle", "vdi", "vhdx", "vmdk", "vpc", "vvfat",
]  # fmt: skip
DebugEvent = Literal[
    "l1_update", "l1_grow_alloc_table", "l1_grow_write_table", "l1_grow_activate_table",
    "l2_load", "l2_update", "l2_update_compressed", "l2_alloc_cow_read", "l2_alloc_write",
    "read_aio", "read_backing_aio", "read_compressed", "write_aio", "write_compressed",
    "vmstate_load", "vmstate_save", "cow_read", "cow_write", "reftable_load", "reftable_grow",
    "reftable_update", "refblock_load", "refblock_update", "refblock_update_part",
    "refblock_alloc", "refblock_alloc_hookup", "refblock_alloc_write",
    "refblock_alloc_write_blocks", "refblock_alloc_write_table", "refblock_alloc_switch_table",
    "cluster_alloc", "cluster_alloc_bytes", "cluster_free", "flush_to_os", "flush_to_disk",
    "pwritev_rmw_head", "pwritev_rmw_after_head", "pwritev_rmw_tail", "pwritev_rmw_after_tail",
    "pwritev", "pwritev_zero", "pwritev_done", "empty_image_prepare", "l1_shrink_write_table",
    "l1_shrink_free_l2_clusters", "cor_write", "cluster_alloc_space", "none",
]  # fmt: skip
IOType = Literal["read", "write", "write-zeroes", "discard", "flush", "block-status"]
BlockdevRef = str | dict[str, Any]
_SECTOR = 512


class BlockError(Exception):
    """A failed block request; ``errno`` is the (positive) error number."""

    def __init__(self, errno: int) -> None:
        super().__init__(os.strerror(errno))
        self.errno = errno


class _Base(msgspec.Struct, kw_only=True, omit_defaults=True):
    driver: Driver
    node_name: str | None = msgspec.field(name="node-name", default=None)
    discard: Literal["ignore", "unmap"] | None = None
    cache: dict[str, Any] | None = None
    read_only: bool | None = msgspec.field(name="read-only", default=None)
    auto_read_only: bool | None = msgspec.field(name="auto-read-only", default=None)
    force_share: bool | None = msgspec.field(name="force-share", default=None)
    detect_zeroes: Literal["off", "on", "unmap"] | None = msgspec.field(
        name="detect-zeroes", default=None
    )


class FileOptions(_Base, kw_only=True):
    """BlockdevOptionsFile (the members a file node uses)."""

    filename: str
    locking: Literal["auto", "on", "off"] | None = None
    aio: Literal["threads", "native", "io_uring"] | None = None


class RawOptions(_Base, kw_only=True):
    """BlockdevOptionsRaw."""

    file: BlockdevRef
    offset: int | None = None
    size: int | None = None


class InjectError(msgspec.Struct, kw_only=True, omit_defaults=True):
    """BlkdebugInjectErrorOptions."""

    event: DebugEvent
    state: int | None = None
    iotype: IOType | None = None
    errno: int | None = None
    sector: int | None = None
    once: bool | None = None
    immediately: bool | None = None


class BlkdebugOptions(_Base, kw_only=True):
    """BlockdevOptionsBlkdebug (error injection only; no state machine rules)."""

    image: BlockdevRef
    inject_error: list[InjectError] | None = msgspec.field(name="inject-error", default=None)


class QuorumOptions(_Base, kw_only=True):
    """BlockdevOptionsQuorum."""

    blkverify: bool | None = None
    children: list[BlockdevRef]
    vote_threshold: int = msgspec.field(name="vote-threshold")
    rewrite_corrupted: bool | None = msgspec.field(name="rewrite-corrupted", default=None)
    read_pattern: Literal["quorum", "fifo"] | None = msgspec.field(
        name="read-pattern", default=None
    )


class BlockdevDelArguments(msgspec.Struct):
    """``blockdev-del`` arguments."""

    node_name: str = msgspec.field(name="node-name")


OPTIONS: dict[str, type[_Base]] = {
    "file": FileOptions,
    "raw": RawOptions,
    "blkdebug": BlkdebugOptions,
    "quorum": QuorumOptions,
}
"""The simulated drivers and their option Structs."""


class Node:
    """A block node: ``node_name``, its children, and byte-addressed I/O."""

    driver = ""

    def __init__(self, node_name: str, children: list[Node]) -> None:
        self.node_name = node_name
        self.children = children
        self.parents = 0
        self.device: str | None = None
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
            driver = convert_arguments(_DriverOnly, {"driver": options.get("driver")}).driver
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
        if name is None:
            self._auto += 1
            name = f"#block{self._auto:03d}"
        node: Node
        if isinstance(parsed, FileOptions):
            node = FileNode(name, parsed.filename)
        elif isinstance(parsed, RawOptions):
            node = RawNode(name, [self._ref(parsed.file, created)])
        elif isinstance(parsed, BlkdebugOptions):
            node = BlkdebugNode(name, self._ref(parsed.image, created), parsed.inject_error or [])
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
                name, children, self._machine, parsed.vote_threshold,
                fifo=parsed.read_pattern == "fifo", rewrite=bool(parsed.rewrite_corrupted),
            )  # fmt: skip
        self.nodes[name] = node
        created.append(node)
        return node


class _DriverOnly(msgspec.Struct):
    driver: Driver


class BlockdevAddArguments(_Base, kw_only=True):
    """``blockdev-add``: the members of every simulated driver, checked per driver later.

    QAPI's BlockdevOptions is a union on ``driver``; the server checks this
    superset (unknown members, types), and :meth:`BlockLayer.add` then checks the
    members against the chosen driver, in its schema order.
    """

    filename: str | None = None
    locking: Literal["auto", "on", "off"] | None = None
    aio: Literal["threads", "native", "io_uring"] | None = None
    file: BlockdevRef | None = None
    offset: int | None = None
    size: int | None = None
    image: BlockdevRef | None = None
    inject_error: list[InjectError] | None = msgspec.field(name="inject-error", default=None)
    blkverify: bool | None = None
    children: list[BlockdevRef] | None = None
    vote_threshold: int | None = msgspec.field(name="vote-threshold", default=None)
    rewrite_corrupted: bool | None = msgspec.field(name="rewrite-corrupted", default=None)
    read_pattern: Literal["quorum", "fifo"] | None = msgspec.field(
        name="read-pattern", default=None
    )

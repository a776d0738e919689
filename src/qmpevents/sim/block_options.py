"""The options of the simulated block drivers, as QEMU 7.2's QAPI declares them.

``blockdev-add`` and ``-blockdev`` take one ``BlockdevOptions`` union on
``driver``; :class:`BlockdevAddArguments` is the superset the server checks
first, and each driver's Struct (:data:`OPTIONS`) then checks its own members,
in schema order (:mod:`qmpevents.sim.block` builds the nodes).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

__all__ = [
    "OPTIONS",
    "BlkdebugOptions",
    "BlockdevAddArguments",
    "BlockdevDelArguments",
    "BlockdevRef",
    "DriverOnly",
    "FileOptions",
    "InjectError",
    "QuorumOptions",
    "RawOptions",
]

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


class DriverOnly(msgspec.Struct):
    """Only the ``driver`` member, checked first."""

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

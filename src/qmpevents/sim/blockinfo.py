"""``query-block`` and ``query-named-block-nodes``: the block layer as QEMU 7.2 describes it.

libvirt reads both when a domain starts, to learn the node names and the
BlockBackend of each disk. The answers describe the simulator's real nodes
(:mod:`qmpevents.sim.block`) with QEMU's members and values (measured):

* a node is a BlockDeviceInfo: its filename, driver, read-only flag, cache mode
  and ``detect-zeroes`` from its options, no throttling, and an ImageInfo with
  the size and allocated size of its image file. ``dirty-flag`` is there for the
  drivers that answer ``bdrv_get_info`` (file, raw, blkdebug), ``actual-size``
  for those that can tell it (not blkdebug, which is a protocol driver); a
  filter (blkdebug) shows its child's ImageInfo as its backing image;
* a node's filename is its file's for file and for a plain raw node; otherwise
  QEMU's ``json:{...}`` of the options that define it (quorum, blkdebug, raw
  with offset or size), children included;
* ``query-named-block-nodes`` lists the nodes newest first;
* ``query-block`` lists the BlockBackends in creation order: each ``-drive``
  (``if=none``: no device, removable; ``if=ide``: its own ``ide-hd``, at QEMU's
  ``/machine/unattached/device[N]``), then one anonymous backend per ``ide-hd``
  or ``virtio-blk-pci`` with ``drive=`` a node name (``qdev`` is an ide-hd's id,
  else its path; a virtio-blk-pci's full path, then ``/virtio-backend``);
* ``query-jobs`` is empty: the simulator runs no block jobs (libvirt asks when
  it reconnects to a running domain).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import msgspec

from qmpevents.protocol.encoding import encode
from qmpevents.server.commands import CommandContext
from qmpevents.sim.block import Node
from qmpevents.sim.qomtree import device_list

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["BlockDeviceInfo", "BlockInfo", "BlockInfoQueries", "ImageInfo"]

_DISKS = frozenset({"ide-hd", "virtio-blk-pci"})

# What each driver's refresh_filename keeps of its options (strong_runtime_opts).
_STRONG = {
    "file": ("filename",),
    "raw": ("offset", "size"),
    "quorum": ("vote-threshold", "blkverify", "rewrite-corrupted", "read-pattern"),
    "blkdebug": ("config", "align", "max-transfer", "opt-write-zero", "max-write-zero",
                 "opt-discard", "max-discard", "inject-error", "set-state"),
}  # fmt: skip
# Per driver: does bdrv_get_info answer (dirty-flag), is its allocated size known.
_HAS_INFO = frozenset({"file", "raw", "blkdebug"})
_NO_ALLOCATED_SIZE = frozenset({"blkdebug"})
_FILTERS = frozenset({"blkdebug"})


class NamedFlatArguments(msgspec.Struct, omit_defaults=True):
    """``query-named-block-nodes`` arguments."""

    flat: bool | None = None


class ImageInfo(msgspec.Struct, kw_only=True, omit_defaults=True, rename="kebab"):
    """QAPI ImageInfo (the members a node without backing file has)."""

    filename: str
    format: str
    dirty_flag: bool | None = None
    actual_size: int | None = None
    virtual_size: int
    backing_image: ImageInfo | None = None


class BlockdevCacheInfo(msgspec.Struct, rename="kebab"):
    """QAPI BlockdevCacheInfo."""

    writeback: bool
    direct: bool
    no_flush: bool


class BlockDeviceInfo(msgspec.Struct, kw_only=True):
    """QAPI BlockDeviceInfo without throttling and backing files."""

    file: str
    node_name: str = msgspec.field(name="node-name")
    ro: bool
    drv: str
    backing_file_depth: int = 0
    encrypted: bool = False
    detect_zeroes: str = "off"
    bps: int = 0
    bps_rd: int = 0
    bps_wr: int = 0
    iops: int = 0
    iops_rd: int = 0
    iops_wr: int = 0
    image: ImageInfo
    cache: BlockdevCacheInfo
    write_threshold: int = 0


class BlockInfo(msgspec.Struct, kw_only=True, omit_defaults=True):
    """QAPI BlockInfo (one BlockBackend)."""

    device: str
    qdev: str | None = None
    type: str
    removable: bool
    locked: bool
    inserted: BlockDeviceInfo | None = None
    io_status: str | None = msgspec.field(name="io-status", default=None)


def _full_options(node: Node) -> dict[str, Any]:
    """The options that define ``node`` and its children (bdrv_refresh_filename)."""
    full: dict[str, Any] = {}
    options = node.options
    if node.driver == "quorum":
        full["children"] = [_full_options(child) for child in node.children]
    elif node.driver == "raw":
        full["file"] = _full_options(node.children[0])
    elif node.driver == "blkdebug":
        full["image"] = _full_options(node.children[0])
    full["driver"] = node.driver
    for key in _STRONG.get(node.driver, ()):
        if key not in options:
            continue
        if isinstance(options[key], list | dict):
            full.update(_flatten(key, options[key]))
        else:
            full[key] = options[key]
    return full


def _flatten(prefix: str, value: Any) -> dict[str, Any]:
    # qdict_flatten(): nested lists and dicts become dotted keys.
    items = enumerate(value) if isinstance(value, list) else value.items()
    flat: dict[str, Any] = {}
    for key, item in items:
        name = f"{prefix}.{key}"
        flat.update(_flatten(name, item) if isinstance(item, list | dict) else {name: item})
    return flat


def filename(node: Node) -> str:
    """``bs->filename`` of ``node`` as QEMU 7.2 computes it."""
    if node.driver == "file":
        return str(node.options.get("filename", getattr(node, "filename", "")))
    if node.driver == "raw" and not any(key in node.options for key in _STRONG["raw"]):
        return filename(node.children[0])
    return "json:" + encode(_full_options(node)).decode().rstrip("\r\n")


def _allocated(node: Node) -> int | None:
    if node.driver in _NO_ALLOCATED_SIZE:
        return None
    if node.driver == "file":
        try:
            return os.stat(str(node.options.get("filename", ""))).st_blocks * 512
        except OSError:
            return None
    sizes = [_allocated(child) for child in node.children]
    return sum(size for size in sizes if size is not None)


def image_info(node: Node, *, flat: bool = False) -> ImageInfo:
    """The ImageInfo of ``node``; unless ``flat``, a filter (blkdebug) shows its child as
    backing image."""
    filtered = node.driver in _FILTERS and not flat
    return ImageInfo(
        filename=filename(node),
        format=node.driver,
        dirty_flag=False if node.driver in _HAS_INFO else None,
        actual_size=_allocated(node),
        virtual_size=node.size,
        backing_image=image_info(node.children[0]) if filtered else None,
    )


def device_info(node: Node, *, flat: bool = False) -> BlockDeviceInfo:
    """The BlockDeviceInfo of ``node`` (``flat``: without backing images)."""
    options = node.options
    cache = options.get("cache") or {}
    name = filename(node)
    image = image_info(node, flat=flat)
    depth, below = 0, image.backing_image
    while below is not None:
        depth, below = depth + 1, below.backing_image
    return BlockDeviceInfo(
        file=name,
        node_name=node.node_name,
        ro=bool(options.get("read-only", False)),
        drv=node.driver,
        backing_file_depth=depth,
        detect_zeroes=str(options.get("detect-zeroes", "off")),
        image=image,
        cache=BlockdevCacheInfo(
            writeback=True,
            direct=bool(cache.get("direct", False)),
            no_flush=bool(cache.get("no-flush", False)),
        ),
    )


class BlockInfoQueries:
    """``query-block``, ``query-named-block-nodes`` and ``query-jobs`` for one machine."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine

    def install(self) -> None:
        """Register the two queries."""
        server = self._machine.server
        server.register("query-block", self._query_block, returns=list[BlockInfo])
        server.register("query-jobs", self._query_jobs, returns=list[dict[str, Any]])
        server.register(
            "query-named-block-nodes",
            self._named_nodes,
            NamedFlatArguments,
            returns=list[BlockDeviceInfo],
        )

    def _query_jobs(self, _: object, ctx: CommandContext) -> list[dict[str, Any]]:
        return []

    def _named_nodes(self, args: NamedFlatArguments, ctx: CommandContext) -> list[BlockDeviceInfo]:
        nodes = list(self._machine.block.nodes.values())
        return [device_info(node, flat=bool(args.flat)) for node in reversed(nodes)]

    def _query_block(self, _: object, ctx: CommandContext) -> list[BlockInfo]:
        config = self._machine.config
        block = self._machine.block
        backends: list[BlockInfo] = []
        automatic = (17 if config.machine_type == "pc" else 15) + self._machine.cpus.present
        for drive in config.drives:
            if drive.device is None:
                continue
            node = block.find(drive.device)
            if drive.interface == "ide":
                qdev = f"/machine/unattached/device[{automatic}]"
                automatic += 1
                backends.append(self._backend(drive.device, qdev, node))
            else:
                backends.append(
                    BlockInfo(
                        device=drive.device,
                        type="unknown",
                        removable=True,
                        locked=False,
                        inserted=_inserted(node),
                    )
                )
        anonymous = 0
        for device in device_list(config):
            path = f"/machine/peripheral-anon/device[{anonymous}]"
            anonymous += 0 if device.id else 1
            if device.driver not in _DISKS:
                continue
            name = str(device.props.get("drive", ""))
            if device.driver == "ide-hd":
                qdev = device.id or path
            else:  # its BlockBackend's device is the virtio-backend child, by full path
                qdev = f"/machine/peripheral/{device.id}" if device.id else path
                qdev += "/virtio-backend"
            if any(drive.device == name for drive in config.drives):
                backends = [
                    self._backend(name, qdev, block.find(name))
                    if backend.device == name
                    else backend
                    for backend in backends
                ]
            else:
                backends.append(self._backend("", qdev, block.find(name)))
        return backends

    def _backend(self, name: str, qdev: str, node: Node | None) -> BlockInfo:
        return BlockInfo(
            device=name,
            qdev=qdev,
            type="unknown",
            removable=False,
            locked=False,
            inserted=_inserted(node),
            io_status="ok",
        )


def _inserted(node: Node | None) -> BlockDeviceInfo | None:
    return device_info(node) if node is not None else None

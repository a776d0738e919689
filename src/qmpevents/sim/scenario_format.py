"""The scenario file format: a simulated machine and a timeline, in TOML.

A scenario is what a test or a demo replays against the simulator. Every table
and key is checked (unknown keys are errors) and errors name their line
(:mod:`qmpevents.sim.scenario`). Sizes are bytes, or strings with QEMU's
suffixes (``"64M"``, ``"1G"``, ``"512k"``). In any string of a ``command``'s
``arguments`` or a drive's ``blockdev``, ``{tmp}`` stands for the scenario's
temporary directory, where its images live and which is removed afterwards.

.. code-block:: toml

    description = "what this scenario shows"

    [machine]                  # every key optional
    type = "pc"                # pc, q35 or pseries
    ram = "64M"
    cpus = 1
    name = "vm1"
    panic-action = "pause"     # pause, shutdown, exit-failure, none (-action panic=)
    no-shutdown = false        # -no-shutdown: a guest shutdown pauses instead
    paused = false             # -S: start in prelaunch
    pvpanic = true             # a pvpanic device (default on, for `guest = "panic"`)
    vserports = ["vs0"]        # virtserialport ids (on one virtio-serial bus)
    dimms = [{ id = "dimm1", size = "128M" }]
    slots = 2                  # default: one per DIMM
    maxmem = "1G"              # default: ram plus the DIMMs

    [[images]]                 # raw image files created in {tmp}/NAME.img
    name = "c0"
    size = "1M"                # default 1M
    fill = 0x00                # every byte of the image (default 0)

    [[drives]]                 # block nodes, added before the first step
    image = "d0"               # raw over the image (node-name: the image's name)
    # or: quorum = ["c0", "c1", "c2"], vote-threshold = 2, read-pattern, rewrite-corrupted
    #     (each child a raw node named after its image)
    # or: blockdev = { ... }   (blockdev-add arguments, for blkdebug and the like)
    node-name = "d0"           # optional for image, required for quorum
    device = "disk0"           # the BlockBackend name (QUORUM_FAILURE's reference)

    [[steps]]                  # one table per step, run in order
    command = "query-status"   # any QMP command
    arguments = {}             # its arguments
    expect-error = "GenericError"   # the step fails unless the command fails so

The kind of a step is the one key among these that it has:

==================  ===============================================================
``command``         a QMP command: ``arguments``, ``expect-error`` (an error class)
``guest``           a guest action: ``"panic"`` (``value``, default 1),
                    ``"vserport"`` (``id``, ``open``), ``"unplug-reject"`` (``id``),
                    ``"unplug-policy"`` (``answer``: ``"refuse"`` or ``"ignore"``),
                    ``"dirty-rate"`` (``bytes-per-second``); the ``x-sim-`` commands
``wait``            sleep this many seconds
``wait-event``      wait until a client has received this event (``timeout``,
                    default 10 s; ``where``: members of ``data`` it must have,
                    nested tables matched member by member). Events count from
                    the scenario's start; each wait consumes the event it matched
``burst``           run the steps of ``do`` this many times in turn, ``interval``
                    seconds apart (default 0.1): command, guest or corrupt steps
``corrupt``         write ``length`` bytes (default 512) of ``pattern`` (default
                    0xff) at ``offset`` (default 0) into this image
``say`` / ``log``   a line of narration (shown by ``qmpevents demo`` and ``serve``)
==================  ===============================================================
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from qmpevents.sim.config import PanicAction, UnplugAnswer

__all__ = [
    "BURST_KINDS",
    "GUEST_ACTIONS",
    "STEP_KINDS",
    "TAG_FIELD",
    "BurstItem",
    "BurstStep",
    "CommandStep",
    "CorruptStep",
    "DimmSpec",
    "DriveSpec",
    "GuestDirtyRate",
    "GuestPanic",
    "GuestUnplugPolicy",
    "GuestUnplugReject",
    "GuestVserport",
    "ImageSpec",
    "LogStep",
    "MachineSpec",
    "SayStep",
    "ScenarioSpec",
    "Size",
    "Step",
    "WaitEventStep",
    "WaitStep",
]

TAG_FIELD: Final = "~kind"
"""The tag msgspec dispatches steps on; the loader sets it from the step's kind key.

The ``~`` keeps it apart from any key a person can write without quoting.
"""

STEP_KINDS: Final = ("command", "guest", "wait", "wait-event", "burst", "corrupt", "say", "log")
"""The keys that make a table a step of that kind (exactly one per step)."""

BURST_KINDS: Final = ("command", "guest", "corrupt")
"""The step kinds a burst may repeat."""

GUEST_ACTIONS: Final = ("panic", "vserport", "unplug-reject", "unplug-policy", "dirty-rate")
"""The values of ``guest``; each runs the ``x-sim-`` command of the same name."""

Size = Annotated[int, msgspec.Meta(ge=0)] | str
"""Bytes, or a QEMU size string; checked by the loader."""

Byte = Annotated[int, msgspec.Meta(ge=0, le=255)]
Seconds = Annotated[float, msgspec.Meta(ge=0)]
Name = Annotated[str, msgspec.Meta(pattern=r"^[A-Za-z0-9_.-]+$")]


class _Table(msgspec.Struct, forbid_unknown_fields=True, kw_only=True, rename="kebab"):
    """A TOML table: unknown keys are errors, keys are kebab-case."""


class DimmSpec(_Table):
    """A ``pc-dimm`` with qdev id ``id`` and ``size`` bytes of memory."""

    id: Name
    size: Size


class MachineSpec(_Table):
    """The ``[machine]`` table: what ``qmpevents-qemu``'s options would say."""

    type: Literal["pc", "q35", "pseries"] = "pc"
    ram: Size = "128M"
    cpus: Annotated[int, msgspec.Meta(ge=1)] = 1
    name: str | None = None
    panic_action: PanicAction = "shutdown"
    no_shutdown: bool = False
    paused: bool = False
    pvpanic: bool = True
    vserports: list[Name] = msgspec.field(default_factory=list)
    dimms: list[DimmSpec] = msgspec.field(default_factory=list)
    slots: Annotated[int, msgspec.Meta(ge=0)] | None = None
    maxmem: Size | None = None


class ImageSpec(_Table):
    """An ``[[images]]`` entry: a raw image file ``{tmp}/NAME.img`` of ``size`` bytes."""

    name: Name
    size: Size = "1M"
    fill: Byte = 0


class DriveSpec(_Table):
    """A ``[[drives]]`` entry: one of ``image``, ``quorum`` or ``blockdev``."""

    image: str | None = None
    quorum: list[str] | None = None
    blockdev: dict[str, Any] | None = None
    node_name: str | None = None
    device: str | None = None
    vote_threshold: Annotated[int, msgspec.Meta(ge=1)] = 2
    read_pattern: Literal["quorum", "fifo"] | None = None
    rewrite_corrupted: bool | None = None


class _Step(_Table, tag_field=TAG_FIELD):
    """A step of the timeline."""


class CommandStep(_Step, tag="command"):
    """Run QMP ``command``; with ``expect_error``, it must fail with that error class."""

    command: str
    arguments: dict[str, Any] = msgspec.field(default_factory=dict)
    expect_error: str | None = None


class GuestPanic(_Step, tag="guest=panic"):
    """The guest writes ``value`` to the pvpanic port (1 panicked, 2 crash loaded)."""

    guest: Literal["panic"]
    value: Byte = 1


class GuestVserport(_Step, tag="guest=vserport"):
    """The guest opens or closes virtserialport ``id``."""

    guest: Literal["vserport"]
    id: str
    open: bool


class GuestUnplugReject(_Step, tag="guest=unplug-reject"):
    """The guest refuses the pending unplug of DIMM ``id``."""

    guest: Literal["unplug-reject"]
    id: str


class GuestUnplugPolicy(_Step, tag="guest=unplug-policy"):
    """How the guest answers DIMM unplugs from now on: ``refuse`` each, or ``ignore`` them."""

    guest: Literal["unplug-policy"]
    answer: UnplugAnswer


class GuestDirtyRate(_Step, tag="guest=dirty-rate"):
    """The guest writes ``bytes_per_second`` of its memory per second (migration passes)."""

    guest: Literal["dirty-rate"]
    bytes_per_second: Size


class WaitStep(_Step, tag="wait"):
    """Sleep ``wait`` seconds."""

    wait: Seconds


class WaitEventStep(_Step, tag="wait-event"):
    """Wait until a client receives event ``wait_event`` whose ``data`` matches ``where``."""

    wait_event: str
    timeout: Annotated[float, msgspec.Meta(gt=0)] = 10.0
    where: dict[str, Any] = msgspec.field(default_factory=dict)


class CorruptStep(_Step, tag="corrupt"):
    """Overwrite ``length`` bytes at ``offset`` of image ``corrupt`` with ``pattern``."""

    corrupt: str
    offset: Size = 0
    length: Size = 512
    pattern: Byte = 0xFF


class SayStep(_Step, tag="say"):
    """A line of narration."""

    say: str


class LogStep(_Step, tag="log"):
    """A line of narration (``log`` is another name for ``say``)."""

    log: str


BurstItem = (
    CommandStep
    | GuestPanic
    | GuestVserport
    | GuestUnplugReject
    | GuestUnplugPolicy
    | GuestDirtyRate
    | CorruptStep
)
"""What a burst repeats: steps that act at once."""


class BurstStep(_Step, tag="burst"):
    """Run the steps of ``do`` in turn, ``burst`` times in all, ``interval`` seconds apart."""

    burst: Annotated[int, msgspec.Meta(ge=1)]
    do: Annotated[list[BurstItem], msgspec.Meta(min_length=1)]
    interval: Seconds = 0.1


Step = BurstItem | WaitStep | WaitEventStep | BurstStep | SayStep | LogStep
"""Any step of the timeline (a tagged union on the step's kind)."""


class ScenarioSpec(_Table):
    """A whole scenario file, validated."""

    description: str = ""
    machine: MachineSpec = msgspec.field(default_factory=MachineSpec)
    images: list[ImageSpec] = msgspec.field(default_factory=list)
    drives: list[DriveSpec] = msgspec.field(default_factory=list)
    steps: list[Step] = msgspec.field(default_factory=list)

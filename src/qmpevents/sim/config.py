"""What the simulated machine is made of: the parsed form of a QEMU command line.

:class:`MachineConfig` is filled by the ``qmpevents-qemu`` command-line parser
(:mod:`qmpevents.sim.cmdline`), by ``qmpevents serve`` and by scenario files, and
read by :class:`~qmpevents.sim.machine.Machine`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

__all__ = [
    "MIB",
    "ChardevConfig",
    "CpuTopology",
    "DeviceConfig",
    "DimmConfig",
    "DriveConfig",
    "MachineConfig",
    "MonitorEndpoint",
    "NumaNode",
    "PanicAction",
    "RebootAction",
    "ShutdownAction",
    "UnplugAnswer",
    "VserportConfig",
]

MIB: Final = 1 << 20

PanicAction = Literal["pause", "shutdown", "exit-failure", "none"]
ShutdownAction = Literal["poweroff", "pause"]
RebootAction = Literal["reset", "shutdown"]
UnplugAnswer = Literal["ignore", "refuse"]
"""How the simulated guest answers a DIMM unplug request (``x-sim-unplug-policy``)."""


@dataclass(frozen=True, slots=True)
class MonitorEndpoint:
    """One listening socket: ``unix`` with ``path``, ``tcp`` with ``host``/``port``, or
    ``fd``, a listening socket inherited as descriptor ``fd`` (libvirt's ``fd=N``).

    ``chardev`` is the id of the chardev it belongs to (``query-chardev``); empty
    for ``-qmp``, whose chardevs QEMU names ``compat_monitor0``, ``1``, ...
    """

    kind: Literal["unix", "tcp", "fd"]
    path: str = ""
    host: str = "127.0.0.1"
    port: int = 0
    fd: int = -1
    chardev: str = ""


@dataclass(frozen=True, slots=True)
class ChardevConfig:
    """A ``-chardev``: ``socket`` (listening on ``endpoint``) or ``null``, in creation order."""

    id: str
    backend: Literal["socket", "null"]
    endpoint: MonitorEndpoint | None = None


@dataclass(frozen=True, slots=True)
class DeviceConfig:
    """One ``-device`` as created, in creation order: the driver, its qdev id, its properties."""

    driver: str
    id: str = ""
    props: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class CpuTopology:
    """``-smp`` after QEMU's computation of what was left out (hw/core/machine-smp.c)."""

    cpus: int = 1
    sockets: int = 1
    dies: int = 1
    clusters: int = 1
    cores: int = 1
    threads: int = 1
    maxcpus: int = 1


@dataclass(frozen=True, slots=True)
class NumaNode:
    """A ``-numa node``: its id, the CPU indexes it holds and its memory backend."""

    nodeid: int
    cpus: tuple[int, ...] = ()
    memdev: str = ""
    size: int = 0


@dataclass(frozen=True, slots=True)
class VserportConfig:
    """A ``virtserialport`` (``id`` is its qdev id; ``name`` what the guest sees)."""

    id: str
    name: str = ""
    bus: str = ""
    chardev: str = ""
    nr: int = 0


@dataclass(frozen=True, slots=True)
class DimmConfig:
    """A ``pc-dimm`` device backed by memory backend ``memdev`` of ``size`` bytes."""

    id: str
    memdev: str
    size: int
    slot: int = -1  # -1: the first free slot, in creation order
    node: int = 0


@dataclass(frozen=True, slots=True)
class DriveConfig:
    """A block node tree from ``-blockdev``/``-drive``; ``device`` is its BlockBackend name."""

    options: dict[str, Any]
    device: str | None = None
    interface: str = "none"  # -drive if=: an "ide" drive gets its own ide-hd


@dataclass(slots=True)
class MachineConfig:
    """The simulated machine: QEMU's defaults unless the command line says otherwise."""

    machine_type: str = "pc"
    # The QEMU binary stood in for (qmpevents.sim.target): "x86_64" or "ppc64".
    target: str = "x86_64"
    ram_size: int = 128 * MIB
    slots: int = 0
    maxmem: int = 0
    cpus: int = 1
    name: str | None = None
    uuid: str = "00000000-0000-0000-0000-000000000000"
    start_paused: bool = False
    panic_action: PanicAction = "shutdown"
    shutdown_action: ShutdownAction = "poweroff"
    reboot_action: RebootAction = "reset"
    pvpanic: bool = False
    serial_buses: list[str] = field(default_factory=list)
    vserports: list[VserportConfig] = field(default_factory=list)
    dimms: list[DimmConfig] = field(default_factory=list)
    drives: list[DriveConfig] = field(default_factory=list)
    monitors: list[MonitorEndpoint] = field(default_factory=list)
    # A TCP monitor on a non-loopback address is refused unless this is set: QMP has
    # no authentication. QEMU's command line sets it (QEMU listens where it is told).
    tcp_public: bool = False
    daemonize: bool = False
    pidfile: str | None = None
    # -x-sim-scenario FILE: a timeline played once the guest first runs (.bound_scenario).
    scenario: str | None = None
    msg_timestamp: bool = False
    # Accelerators are tried at start (qmpevents.sim.accel): -machine accel= (a
    # "kvm:tcg" list; None when not given) and each -accel value, as given.
    machine_accel: str | None = None
    accel_options: list[str] = field(default_factory=list)
    nodefaults: bool = False
    nographic: bool = False
    # What libvirt's command line adds (qmpevents.sim.cmdline_host, cmdline_devices,
    # cmdline_objects): every chardev, device and -object in creation order, the
    # CPU, NUMA, and host-side options.
    chardevs: list[ChardevConfig] = field(default_factory=list)
    devices: list[DeviceConfig] = field(default_factory=list)
    objects: list[tuple[str, str]] = field(default_factory=list)  # (qom-type, id)
    secrets: dict[str, bytes] = field(default_factory=dict)
    cpu_model: str | None = None  # -cpu's model; None: the machine's default (cpus.cpu_model)
    topology: CpuTopology | None = None  # None: as -smp cpus (one socket of cpus cores)
    numa_nodes: list[NumaNode] = field(default_factory=list)
    debug_threads: bool = False
    mem_lock: bool = False
    sandbox: dict[str, str] | None = None  # -sandbox on: its options (qmpevents.sim.sandbox)
    process_name: str | None = None  # -name process=
    warnings: list[str] = field(default_factory=list)  # QEMU's warn_report()s of the parse

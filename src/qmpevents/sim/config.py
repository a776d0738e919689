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
    "DimmConfig",
    "DriveConfig",
    "MachineConfig",
    "MonitorEndpoint",
    "PanicAction",
    "ShutdownAction",
    "VserportConfig",
]

MIB: Final = 1 << 20

PanicAction = Literal["pause", "shutdown", "exit-failure", "none"]
ShutdownAction = Literal["poweroff", "pause"]


@dataclass(frozen=True, slots=True)
class MonitorEndpoint:
    """One QMP listening socket: ``unix`` with ``path``, or ``tcp`` with ``host``/``port``."""

    kind: Literal["unix", "tcp"]
    path: str = ""
    host: str = "127.0.0.1"
    port: int = 0


@dataclass(frozen=True, slots=True)
class VserportConfig:
    """A ``virtserialport`` (``id`` is its qdev id; ``name`` what the guest sees)."""

    id: str
    name: str = ""
    bus: str = ""


@dataclass(frozen=True, slots=True)
class DimmConfig:
    """A ``pc-dimm`` device backed by memory backend ``memdev`` of ``size`` bytes."""

    id: str
    memdev: str
    size: int


@dataclass(frozen=True, slots=True)
class DriveConfig:
    """A block node tree from ``-blockdev``/``-drive``; ``device`` is its BlockBackend name."""

    options: dict[str, Any]
    device: str | None = None


@dataclass(slots=True)
class MachineConfig:
    """The simulated machine: QEMU's defaults unless the command line says otherwise."""

    machine_type: str = "pc"
    ram_size: int = 128 * MIB
    slots: int = 0
    maxmem: int = 0
    cpus: int = 1
    name: str | None = None
    uuid: str = "00000000-0000-0000-0000-000000000000"
    start_paused: bool = False
    panic_action: PanicAction = "shutdown"
    shutdown_action: ShutdownAction = "poweroff"
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
    msg_timestamp: bool = False

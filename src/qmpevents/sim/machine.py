"""``Machine``: a simulated QEMU 7.2 built on :class:`~qmpevents.server.server.QMPServer`.

A machine owns the server (commands, run state, the rate limiter) and the
models of :mod:`qmpevents.sim`: guest memory, dump, migration, block layer
(quorum), HMP and the devices with their guest actions. Typical use::

    machine = Machine(parse_command_line(argv))
    await machine.start()            # block nodes, listening sockets
    status = await machine.server.wait_closed()
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TextIO

import msgspec

from qmpevents.addresses import is_loopback
from qmpevents.protocol.requests import Request
from qmpevents.server.commands import CommandContext
from qmpevents.server.server import QMPServer
from qmpevents.sim import capabilities, monitor_fds, qom, recorded
from qmpevents.sim.accel import start_accelerator
from qmpevents.sim.balloon import Balloon
from qmpevents.sim.block import BlockLayer
from qmpevents.sim.blockinfo import BlockInfoQueries
from qmpevents.sim.chardevs import Chardevs
from qmpevents.sim.cmdline import CommandLineError
from qmpevents.sim.config import MIB, MachineConfig
from qmpevents.sim.cpus import Cpus
from qmpevents.sim.devices import Devices
from qmpevents.sim.dump import Dumper
from qmpevents.sim.hmp import HMP
from qmpevents.sim.memory import GuestMemory
from qmpevents.sim.migration import Migration
from qmpevents.sim.power import PowerButton
from qmpevents.sim.qomtree import QomTree
from qmpevents.sim.reset import SystemReset
from qmpevents.throttle import RateLimiter

__all__ = ["Machine", "Timing", "public_tcp_risk"]

_EXTRA_EVENTS = (
    "GUEST_CRASHLOADED",
    "DEVICE_UNPLUG_GUEST_ERROR",
    "ACPI_DEVICE_OST",
    "DEVICE_DELETED",
    "MIGRATION",
    "POWERDOWN",
)


# spapr_caps_apply() when the pseries machine is made: its default capabilities
# ask for mitigations that TCG cannot give (measured on qemu-system-ppc64 7.2).
_SPAPR_TCG_WARNINGS: Final = tuple(
    f"TCG doesn't support requested feature, {cap}"
    for cap in ("cap-cfpc=workaround", "cap-sbbc=workaround", "cap-ibs=workaround",
                "cap-ccf-assist=on")
)  # fmt: skip


_MIN_RMA_SLOF: Final = 80 * MIB


def _check_rma(config: MachineConfig) -> None:
    """pseries boots SLOF in the Real Mode Area, the memory of NUMA node 0 (CommandLineError)."""
    nodes = sorted(config.numa_nodes, key=lambda node: node.nodeid)
    rma = nodes[0].size if nodes else config.ram_size
    if rma < _MIN_RMA_SLOF:
        # QEMU 7.2's message, its "%ld" typo included (hw/ppc/spapr.c).
        raise CommandLineError(
            "pSeries SLOF firmware requires >= 80ldMiB guest RMA (Real Mode Area memory)"
        )


@dataclass(frozen=True, slots=True)
class Timing:
    """How fast simulated work proceeds (tests shorten these).

    ``dump_rate``: bytes of guest memory a dump writes per second (QEMU wrote
    64 MiB in about 80 ms). ``migration_tick``: the shortest pass of a migration
    whose guest dirties memory (QEMU's 100 ms rate-limit window).
    ``cancel_delay``: from MIGRATION cancelling to cancelled.
    """

    dump_rate: float = 800 * (1 << 20)
    migration_tick: float = 0.1
    cancel_delay: float = 0.004


def public_tcp_risk(host: str, port: int) -> str:
    """Why QMP on non-loopback ``host``:``port`` is dangerous, in one line."""
    return (
        f"QMP on tcp:{host}:{port} is not a loopback address and QMP has no authentication: "
        "any peer that reaches it can run every command, including ones that write files "
        "on this host (dump-guest-memory, blockdev-add)"
    )


def _iso8601_now() -> str:
    # g_date_time_format_iso8601() of the UTC time: microseconds only when non-zero.
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S" + (".%f" if now.microsecond else "") + "Z")


class NameInfo(msgspec.Struct, omit_defaults=True):
    """QAPI NameInfo."""

    name: str | None = None


class Machine:
    """The simulated machine described by ``config``.

    ``rate_limiter`` replaces QEMU's 1 s event throttle (tests use a short one);
    ``stdout``/``stderr`` receive what QEMU prints there (qemu-io reports, error
    reports), prefixed with ``program`` as QEMU prefixes its name.
    """

    def __init__(
        self,
        config: MachineConfig,
        *,
        rate_limiter: RateLimiter[bytes] | None = None,
        timing: Timing | None = None,
        stdout: TextIO | None = None,
        stderr: TextIO | None = None,
        program: str = "qmpevents-qemu",
    ) -> None:
        self.config = config
        self.timing = timing or Timing()
        self.stdout = stdout or sys.stdout
        self.stderr = stderr or sys.stderr
        self.program = program
        self.server = QMPServer(start_paused=config.start_paused, rate_limiter=rate_limiter)
        for name in _EXTRA_EVENTS:
            self.server.register_event(name)
        self.memory = GuestMemory(config)
        self.block = BlockLayer(self)
        self.dump = Dumper(self)
        self.migration = Migration(self)
        self.hmp = HMP(self)
        self.devices = Devices(self)
        self.cpus = Cpus(self)
        self.chardevs = Chardevs(self)
        self.balloon = Balloon(self)
        self.power = PowerButton(self)
        self.reset = SystemReset(self)
        self.qom_tree = QomTree(self)
        self.block_info = BlockInfoQueries(self)
        self.server.register("query-name", self._query_name, returns=NameInfo)
        for component in (
            self.block, self.dump, self.migration, self.hmp, self.devices, self.cpus,
            self.chardevs, self.balloon, self.power, self.reset, self.qom_tree, self.block_info,
        ):  # fmt: skip
            component.install()
        monitor_fds.install(self.server)
        # The accelerator in use: TCG until start() tries what the command line asks.
        self.accelerator = "tcg"
        recording = recorded.bundled(self.config.target)
        capabilities.install(self, recording)
        qom.install(self, recording)
        # Last: QEMU's recorded answers, only for commands nothing above registered.
        recording.install(self.server)

    def _query_name(self, _: object, ctx: CommandContext) -> NameInfo:
        return NameInfo(self.config.name)

    def create_drives(self) -> None:
        """Open the block nodes of ``-blockdev``/``-drive`` (raises the QMP failure).

        As in QEMU, every ``-blockdev`` comes before any ``-drive``.
        """
        for drive in sorted(self.config.drives, key=lambda drive: drive.device is not None):
            self.block.add(dict(drive.options), drive.device)

    def apply_spapr_caps(self) -> None:
        """pseries' spapr_caps_apply(), at start and at every reset: its TCG warnings."""
        for warning in _SPAPR_TCG_WARNINGS:
            self.error_report(f"warning: {warning}")

    def error_report(self, message: str) -> None:
        """Print ``message`` on stderr as QEMU's ``error_report()`` and ``warn_report()`` do.

        The line starts with the program name, after a UTC timestamp under ``-msg
        timestamp=on``.
        """
        stamp = f"{_iso8601_now()} " if self.config.msg_timestamp else ""
        self.stderr.write(f"{stamp}{self.program}: {message}\n")
        self.stderr.flush()

    async def start(self) -> list[str]:
        """Start the accelerator, create the drives and listen on every monitor; their addresses.

        An accelerator that cannot start ends it as it ends QEMU
        (:func:`~qmpevents.sim.accel.start_accelerator`).

        A TCP monitor on a non-loopback address is refused (:class:`ConfigError`)
        unless ``config.tcp_public``, and warned about on stderr when allowed.
        """
        for warning in self.config.warnings:
            self.error_report(f"warning: {warning}")
        for endpoint in self.config.monitors:
            if endpoint.kind == "tcp" and self.config.tcp_public and not is_loopback(endpoint.host):
                self.error_report(f"warning: {public_tcp_risk(endpoint.host, endpoint.port)}")
        self.accelerator = start_accelerator(self)
        if self.config.machine_type == "pseries":
            _check_rma(self.config)
            self.apply_spapr_caps()
        self.create_drives()
        self.cpus.start()
        await self.chardevs.start()
        addresses: list[str] = []
        for index, endpoint in enumerate(self.config.monitors):
            if endpoint.kind == "unix":
                address = await self.server.listen_unix(endpoint.path)
                label = f"unix:{address}"
            elif endpoint.kind == "fd":
                address = label = await self.server.listen_fd(endpoint.fd)
            else:
                host, port = await self.server.listen_tcp(
                    endpoint.host, endpoint.port, allow_remote=self.config.tcp_public
                )
                address, label = f"{host}:{port}", f"tcp:{host}:{port}"
            self.chardevs.monitor_listening(index, label)
            addresses.append(address)
        return addresses

    async def execute(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        """Run ``command`` as if a monitor sent it (scenarios); raises QMPCommandFailure."""
        ctx = CommandContext(self.server, "scenario")
        result = await self.server.commands.dispatch(Request(command, arguments or {}), ctx)
        ctx.run_after_reply()
        return result

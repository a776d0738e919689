"""Outgoing live migration: MIGRATION and MIGRATION_PASS as QEMU 7.2 sends them.

The stream goes nowhere: an ``exec:`` command is never run and its bytes are
discarded, so no host program is ever started. What is modelled is what decides
the events, QEMU's precopy loop (migration/migration.c, ram.c):

* ``migrate`` sends MIGRATION ``setup`` before its reply; then the first dirty
  bitmap sync (MIGRATION_PASS 1) and MIGRATION ``active``.
* Each pass sends the dirty bytes at ``max-bandwidth`` and takes at least
  :attr:`Timing.migration_tick` (QEMU's 100 ms rate-limit window). Meanwhile the
  guest dirties ``dirty-rate x time`` bytes (set with ``x-sim-dirty-rate``; a
  guest that is not running dirties nothing).
* When a pass ends with nothing dirty, migration completes at once; when what
  is dirty fits in ``max-bandwidth x downtime-limit``, QEMU syncs again
  (a new MIGRATION_PASS) before completing; otherwise another pass starts.
* Completion stops a running VM (STOP), does the final sync (one more
  MIGRATION_PASS), sends MIGRATION ``completed`` and leaves the VM in
  ``postmigrate``.

MIGRATION and MIGRATION_PASS are sent only with the ``events`` capability, as in
QEMU; STOP always is.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any, Final, Literal

import msgspec

from qmpevents.server.commands import CommandContext
from qmpevents.sim.errors import fail
from qmpevents.sim.migration_parameters import MigrationParameters, SetParametersArguments
from qmpevents.sim.sandbox import spawn_attempt

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["CAPABILITIES", "Migration"]

CAPABILITIES: Final = (
    "xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events",
    "postcopy-ram", "x-colo", "release-ram", "block", "return-path", "pause-before-switchover",
    "multifd", "dirty-bitmaps", "postcopy-blocktime", "late-block-activate", "x-ignore-shared",
    "validate-uuid", "background-snapshot", "zero-copy-send", "postcopy-preempt",
)  # fmt: skip
"""QEMU 7.2's MigrationCapability values, in schema order."""

Capability = Literal[
    "xbzrle", "rdma-pin-all", "auto-converge", "zero-blocks", "compress", "events",
    "postcopy-ram", "x-colo", "release-ram", "block", "return-path", "pause-before-switchover",
    "multifd", "dirty-bitmaps", "postcopy-blocktime", "late-block-activate", "x-ignore-shared",
    "validate-uuid", "background-snapshot", "zero-copy-send", "postcopy-preempt",
]  # fmt: skip

_PAGE: Final = 4096
_DEFAULT_BANDWIDTH: Final = 128 << 20  # MAX_THROTTLE
_DEFAULT_DOWNTIME_MS: Final = 300
_MAX_DOWNTIME_MS: Final = 2000 * 1000
# What a freshly booted guest holds that is not zero: zero pages cost almost
# nothing to send, so only these count for the first pass (the reference idle
# guest sent 113 normal pages).
_RESIDENT_BYTES: Final = 113 * _PAGE
_U64: Final = 1 << 64
_ACTIVE: Final = frozenset({"setup", "active", "cancelling"})


class CapabilityStatus(msgspec.Struct):
    """QAPI MigrationCapabilityStatus."""

    capability: Capability
    state: bool


class SetCapabilitiesArguments(msgspec.Struct):
    """``migrate-set-capabilities`` arguments."""

    capabilities: list[CapabilityStatus]


class MigrateArguments(msgspec.Struct, kw_only=True):
    """``migrate`` arguments (QEMU 7.2)."""

    uri: str
    blk: bool | None = None
    inc: bool | None = None
    detach: bool | None = None
    resume: bool | None = None


class DirtyRateArguments(msgspec.Struct):
    """``x-sim-dirty-rate``: how fast the simulated guest writes to its memory."""

    bytes_per_second: int = msgspec.field(name="bytes-per-second")


class Migration:
    """The outgoing migration of one machine and its QMP commands."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine
        self.capabilities = dict.fromkeys(CAPABILITIES, False)
        self.parameters = MigrationParameters()
        self.dirty_rate = 0
        self.status = "none"
        self.passes = 0
        self.transferred = 0
        self.remaining = 0
        self._start = 0.0
        self._end: float | None = None
        self._downtime_ms = 0
        self._task: asyncio.Task[None] | None = None

    def install(self) -> None:
        """Register the migration commands and ``x-sim-dirty-rate``."""
        server = self._machine.server
        server.register(
            "migrate-set-capabilities", self._set_capabilities, SetCapabilitiesArguments
        )
        server.register(
            "query-migrate-capabilities", self._query_capabilities,
            returns=list[CapabilityStatus],
        )  # fmt: skip
        server.register("migrate-set-parameters", self._set_parameters, SetParametersArguments)
        server.register("query-migrate-parameters", self._query_parameters, returns=dict)
        server.register("migrate", self._migrate, MigrateArguments)
        server.register("query-migrate", self._query, returns=dict)
        server.register("migrate_cancel", self._cancel)
        server.register("migrate-pause", self._pause, allow_oob=True)
        server.register("x-sim-dirty-rate", self._set_dirty_rate, DirtyRateArguments)

    @property
    def active(self) -> bool:
        """True while a migration is in setup, active or cancelling."""
        return self.status in _ACTIVE

    # --- commands -----------------------------------------------------------------

    def _set_capabilities(self, args: SetCapabilitiesArguments, ctx: CommandContext) -> Any:
        if self.active:
            fail("There's a migration process in progress")
        for item in args.capabilities:
            self.capabilities[item.capability] = item.state
        return {}

    def _query_capabilities(self, _: object, ctx: CommandContext) -> list[CapabilityStatus]:
        return [CapabilityStatus(name, state) for name, state in self.capabilities.items()]  # type: ignore[arg-type]

    def _set_parameters(self, args: SetParametersArguments, ctx: CommandContext) -> Any:
        problem = self.parameters.set(args)
        if problem is not None:
            fail(problem)
        return {}

    def _query_parameters(self, _: object, ctx: CommandContext) -> dict[str, Any]:
        return dict(self.parameters.values)

    @property
    def max_bandwidth(self) -> int:
        """Bytes per second the migration may send."""
        value: int = self.parameters.values["max-bandwidth"]
        return value

    @property
    def downtime_limit(self) -> int:
        """Milliseconds the final stop may last."""
        value: int = self.parameters.values["downtime-limit"]
        return value

    def _set_dirty_rate(self, args: DirtyRateArguments, ctx: CommandContext) -> Any:
        if args.bytes_per_second < 0:
            fail("Parameter 'bytes-per-second' expects a value >= 0")
        self.dirty_rate = args.bytes_per_second
        return {}

    def _pause(self, _: object, ctx: CommandContext) -> Any:
        fail("migrate-pause is currently only supported during postcopy-active state")

    def _migrate(self, args: MigrateArguments, ctx: CommandContext) -> Any:
        if self.active:
            fail("There's a migration process in progress")
        vm = self._machine.server.vm
        if vm.status == "postmigrate":
            fail("Can't migrate the vm that was paused due to previous migration")
        if args.resume:
            fail("Cannot resume if there is no paused migration")
        scheme = args.uri.partition(":")[0]
        if scheme not in ("exec", "tcp", "unix", "fd", "rdma") or ":" not in args.uri:
            fail("Parameter 'uri' expects a valid migration protocol")
        if scheme != "exec":
            fail(f"qmpevents-qemu simulates migration to exec: URIs only, not {scheme}:")
        # QEMU starts the command here: under -sandbox spawn=deny that is its end.
        spawn_attempt()
        self.passes = 0
        self.transferred = 0
        self.remaining = self._machine.memory.migration_size
        self._start = time.monotonic()
        self._end = None
        self._downtime_ms = 0
        self._set_status("setup")
        self._task = self._machine.server.spawn(self._run(), "migration")
        return {}

    def _cancel(self, _: object, ctx: CommandContext) -> Any:
        if self.status in ("setup", "active") and self._task is not None:
            self._set_status("cancelling")
            self._task.cancel()
            self._machine.server.spawn(self._finish_cancel(), "migration-cancel")
        return {}

    def _query(self, _: object, ctx: CommandContext) -> dict[str, Any]:
        if self.status == "none":
            return {}
        now = self._end if self._end is not None else time.monotonic()
        info: dict[str, Any] = {"status": self.status}
        if self.status in ("setup", "active", "cancelling"):
            info["expected-downtime"] = self.downtime_limit
        info["setup-time"] = 0
        info["total-time"] = int((now - self._start) * 1000)
        if self.status == "completed":
            info["downtime"] = self._downtime_ms
        info["ram"] = self._ram_stats()
        return info

    def _ram_stats(self) -> dict[str, Any]:
        total = self._machine.memory.migration_size
        normal = self.transferred // _PAGE
        return {
            "transferred": self.transferred,
            "remaining": 0 if self.status == "completed" else self.remaining,
            "total": total,
            "duplicate": max(0, total // _PAGE - normal),
            "skipped": 0,
            "normal": normal,
            "normal-bytes": normal * _PAGE,
            "dirty-pages-rate": self.dirty_rate // _PAGE if self.status == "active" else 0,
            "mbps": 0,
            "dirty-sync-count": self.passes,
            "postcopy-requests": 0,
            "page-size": _PAGE,
            "multifd-bytes": 0,
            "pages-per-second": 0,
            "precopy-bytes": self.transferred,
            "downtime-bytes": 0,
            "postcopy-bytes": 0,
            "dirty-sync-missed-zero-copy": 0,
        }

    # --- the migration thread -------------------------------------------------------

    def _set_status(self, status: str) -> None:
        self.status = status
        if self.capabilities["events"]:
            self._machine.server.emit("MIGRATION", {"status": status})

    def _sync(self) -> None:
        self.passes += 1
        if self.capabilities["events"]:
            self._machine.server.emit("MIGRATION_PASS", {"pass": self.passes})

    async def _run(self) -> None:
        await asyncio.sleep(0)
        self._sync()
        self._set_status("active")
        pending = min(_RESIDENT_BYTES, self.remaining)
        tick = self._machine.timing.migration_tick
        while True:
            bandwidth = max(self.max_bandwidth, 1)
            duration = pending / bandwidth
            dirtied = 0
            if pending:
                duration = max(duration, tick) if self._dirtying else duration
                await asyncio.sleep(duration)
                dirtied = self._dirtied(duration)
            self.transferred += pending
            self.remaining = dirtied
            if dirtied == 0:
                break
            threshold = bandwidth * self.downtime_limit // 1000
            if dirtied < threshold:
                self._sync()
                break
            self._sync()
            pending = dirtied
        self._complete()

    @property
    def _dirtying(self) -> bool:
        return self.dirty_rate > 0 and self._machine.server.vm.running

    def _dirtied(self, seconds: float) -> int:
        if not self._dirtying:
            return 0
        pages = int(self.dirty_rate * seconds) // _PAGE
        return min(pages * _PAGE, self._machine.memory.migration_size)

    def _complete(self) -> None:
        vm = self._machine.server.vm
        downtime_start = time.monotonic()
        vm.stop("finish-migrate")
        self._sync()
        self.transferred += self.remaining
        self.remaining = 0
        # QEMU moves any stopped VM to postmigrate once migration has completed.
        vm.status = "postmigrate"
        self._end = time.monotonic()
        self._downtime_ms = int((self._end - downtime_start) * 1000)
        self._set_status("completed")

    async def _finish_cancel(self) -> None:
        await asyncio.sleep(self._machine.timing.cancel_delay)
        self._end = time.monotonic()
        self._set_status("cancelled")

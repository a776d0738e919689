"""``dump-guest-memory``: a real dump file of the guest's memory, and DUMP_COMPLETED.

Reproduces QEMU 7.2's dump/dump.c as observed: the argument checks and their
order, the file opened (mode 0400) before anything else can fail, the VM
stopped (``save-vm``) around the dump of a running guest, ``query-dump``
progress, and DUMP_COMPLETED sent when the dump ends, successful or not, before
the reply of a synchronous dump and before the RESUME of a stopped guest.
The target is ``file:PATH`` or ``fd:NAME``: a descriptor ``getfd`` named on
the monitor that sent the command (:mod:`qmpevents.sim.monitor_fds`), used up
by the dump, which is how libvirt's ``virsh dump`` hands QEMU its file.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from qmpevents.schema.types import DumpQueryResult, DumpStatus
from qmpevents.server.commands import CommandContext
from qmpevents.sim.dumpfile import ElfLayout, kdump_flat_header, kdump_image, write_zeros
from qmpevents.sim.errors import fail
from qmpevents.sim.monitor_fds import take_named

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["DumpArguments", "Dumper"]

DumpFormat = Literal["elf", "kdump-zlib", "kdump-lzo", "kdump-snappy", "win-dmp"]


class DumpArguments(msgspec.Struct, kw_only=True):
    """``dump-guest-memory`` arguments, in QAPI schema order."""

    paging: bool
    protocol: str
    detach: bool | None = None
    begin: int | None = None
    length: int | None = None
    format: DumpFormat | None = None


class DumpCapability(msgspec.Struct):
    """QAPI DumpGuestMemoryCapability."""

    formats: list[str]


# Debian's QEMU 7.2 is built without lzo and snappy.
_FORMATS = ["elf", "kdump-zlib", "win-dmp"]
_TICK = 0.01


class Dumper:
    """The dump state of one machine and its three QMP commands."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine
        self.status: DumpStatus = "none"
        self.completed = 0
        self.total = 0
        self._task: asyncio.Task[None] | None = None

    def install(self) -> None:
        """Register ``dump-guest-memory``, ``query-dump`` and the capability query."""
        server = self._machine.server
        server.register("dump-guest-memory", self._dump, DumpArguments)
        server.register("query-dump", self._query, returns=DumpQueryResult)
        server.register(
            "query-dump-guest-memory-capability", self._capability, returns=DumpCapability
        )

    def result(self) -> DumpQueryResult:
        """The ``query-dump`` value now."""
        return DumpQueryResult(status=self.status, completed=self.completed, total=self.total)

    def _query(self, _: object, ctx: CommandContext) -> DumpQueryResult:
        return self.result()

    def _capability(self, _: object, ctx: CommandContext) -> DumpCapability:
        return DumpCapability(list(_FORMATS))

    async def _dump(self, args: DumpArguments, ctx: CommandContext) -> dict[str, Any]:
        vm = self._machine.server.vm
        if vm.status == "inmigrate":
            fail("Dump not allowed during incoming migration.")
        if self.status == "active":
            fail("There is a dump in process, please wait.")
        has_begin, has_length = args.begin is not None, args.length is not None
        if has_begin and not has_length:
            fail("Parameter 'length' is missing")
        if has_length and not has_begin:
            fail("Parameter 'begin' is missing")
        kdump = args.format is not None and args.format.startswith("kdump-")
        if kdump and (args.paging or has_begin):
            fail("kdump-compressed format doesn't support paging or filter")
        if args.format in ("kdump-lzo", "kdump-snappy"):
            fail(f"{args.format} is not available now")
        if args.format == "win-dmp" and self._machine.memory.machine_type == "pseries":
            fail("win-dmp is only available for x86")
        fd = self._open(args.protocol, ctx)
        try:
            memory = self._machine.memory
            if args.begin is not None and args.length is not None:
                if args.length == 0:
                    fail("Invalid parameter 'length'")
                blocks = memory.filtered(args.begin, args.length)
            else:
                blocks = list(memory.blocks)
            if not blocks:
                fail("dump: no guest memory to dump")
        except BaseException:
            os.close(fd)
            raise
        self.status, self.completed = "active", 0
        self.total = sum(block.size for block in blocks)
        stopped = vm.stop("save-vm")
        machine = self._machine
        job = _DumpJob(
            self,
            _JobPlan(
                fd,
                blocks,
                args.format or "elf",
                resume=stopped,
                cpus=machine.config.cpus,
                arch="ppc64" if machine.memory.machine_type == "pseries" else "x86",
                step=max(int(machine.timing.dump_rate * _TICK), 1 << 20),
            ),
        )
        if args.detach:
            self._task = self._machine.server.spawn(job.run(), "dump-guest-memory")
            return {}
        await job.run()
        if job.error is not None:
            fail(job.error)
        return {}

    def finished(self, data: dict[str, Any], *, resume: bool) -> None:
        """A job ended: tell the monitors, and run the VM again if the dump stopped it."""
        self._machine.server.emit("DUMP_COMPLETED", data)
        if resume:
            self._machine.server.vm.start()

    def _open(self, protocol: str, ctx: CommandContext) -> int:
        if protocol.startswith("fd:"):
            # A descriptor getfd named on the monitor that sent the command, used up.
            return take_named(ctx, protocol[3:])
        if not protocol.startswith("file:"):
            fail("Invalid parameter 'protocol'")
        path = protocol[5:]
        try:
            return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o400)
        except OSError as error:
            fail(f"Could not open '{path}': {os.strerror(error.errno or 0)}")


@dataclass(frozen=True)
class _JobPlan:
    """Everything one dump job needs to know, fixed when the command runs."""

    fd: int
    blocks: list[Any]
    format: str
    resume: bool  # the VM was running: start it again afterwards
    cpus: int
    arch: str
    step: int  # bytes written per tick: the machine's dump rate


class _DumpJob:
    """Writes one dump file at the machine's dump rate, updating the dumper's progress."""

    def __init__(self, dumper: Dumper, plan: _JobPlan) -> None:
        self._dumper = dumper
        self._plan = plan
        self._fd = plan.fd
        self._blocks = plan.blocks
        self._format = plan.format
        self.error: str | None = None

    async def run(self) -> None:
        dumper = self._dumper
        try:
            if self._format == "win-dmp":
                # A Windows dump needs the guest's vmcoreinfo note; the simulated guest has none.
                raise _Failure("win-dump: invalid vmcoreinfo note size")
            if self._format == "elf":
                await self._write_elf()
            else:
                await self._write_kdump()
        except _Failure as failure:
            self.error = str(failure)
        finally:
            os.close(self._fd)
        dumper.status = "failed" if self.error else "completed"
        data: dict[str, Any] = {"result": dumper.result()}
        if self.error is not None:
            data["error"] = self.error
        dumper.finished(data, resume=self._plan.resume)

    async def _write_elf(self) -> None:
        layout = ElfLayout(self._blocks, self._plan.cpus, self._plan.arch)
        try:
            os.write(self._fd, layout.header)
        except OSError as error:
            raise _Failure(f"dump: failed to write elf header: {_strerror(error)}") from None
        offset = layout.data_offset
        remaining = layout.data_size
        step = self._plan.step
        while remaining:
            count = min(step, remaining)
            try:
                write_zeros(self._fd, offset, count)
            except OSError as error:
                raise _Failure(f"dump: failed to save memory: {_strerror(error)}") from None
            offset += count
            remaining -= count
            self._dumper.completed += count
            if remaining:
                await asyncio.sleep(_TICK)
        try:
            os.write(self._fd, layout.trailer)
        except OSError as error:
            raise _Failure(f"dump: failed to write section headers: {_strerror(error)}") from None

    async def _write_kdump(self) -> None:
        try:
            os.write(self._fd, kdump_flat_header())
        except OSError:
            raise _Failure("dump: failed to write start flat header") from None
        await asyncio.sleep(0)
        try:
            for record in kdump_image(self._blocks, self._plan.cpus):
                os.write(self._fd, record)
        except OSError:
            raise _Failure("dump: failed to write disk dump header") from None
        self._dumper.completed = self._dumper.total


class _Failure(Exception):
    """A dump that failed with QEMU's message."""


def _strerror(error: OSError) -> str:
    return os.strerror(error.errno) if error.errno else str(error)

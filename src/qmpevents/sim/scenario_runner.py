"""Run a loaded scenario against a simulated machine: prepare, act, wait, narrate.

:func:`run_scenario` carries out the timeline that :mod:`.scenario` loaded and
checked: it creates the drive images, then runs each step in order (commands,
guest actions, bursts, sleeps, waits for events as clients see them). A step
that fails is reported with its line in the scenario file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

from qmpevents.client.connection import QMPClient
from qmpevents.client.listeners import EventFilter, EventListener
from qmpevents.schema.events import Event
from qmpevents.server.commands import QMPCommandFailure
from qmpevents.sim.machine import Machine
from qmpevents.sim.scenario import Scenario, StepHook, narration, size_of
from qmpevents.sim.scenario_format import (
    BurstItem,
    BurstStep,
    CommandStep,
    CorruptStep,
    DriveSpec,
    GuestDirtyRate,
    GuestPanic,
    GuestUnplugPolicy,
    GuestUnplugReject,
    GuestVserport,
    LogStep,
    SayStep,
    Step,
    WaitEventStep,
    WaitStep,
)
from qmpevents.sim.scenario_lines import PathPart

__all__ = ["run_scenario"]

log = logging.getLogger("qmpevents.scenario")

# Sizes of image and corruption writes: bounded chunks keep a large fill in little memory.
_CHUNK: Final = 1 << 20
# What the wait-event observer keeps of events no wait-event has matched yet.
_RECEIVED_MAX: Final = 1000


async def run_scenario(
    machine: Machine,
    scenario: Scenario,
    *,
    on_step: StepHook | None = None,
    workdir: str | os.PathLike[str] | None = None,
    ready: Callable[[], Awaitable[None]] | None = None,
) -> None:
    """Play the timeline of ``scenario`` on the started ``machine``.

    First the images are created in ``workdir`` and the drives added; then
    ``ready()`` is awaited (``serve --wait-for-client`` waits there for a client,
    which finds the drives in place and no event sent yet); then each step runs
    in order, ``on_step`` awaited before it. Without ``workdir`` a temporary
    directory holds the files and is removed at the end; pass one that lives as
    long as the machine when it keeps serving the drives. Raises
    :class:`ScenarioError` for a step that fails.
    """
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="qmpevents-scenario-"))
        runner = _Runner(machine, scenario, Path(workdir))
        try:
            await runner.prepare()
            if ready is not None:
                await ready()
            await runner.observe()
            for index, step in enumerate(scenario.spec.steps):
                if on_step is not None:
                    await on_step(index, step)
                await runner.step(("steps", index), step)
        finally:
            await runner.close()


class _Runner:
    """Runs steps of one scenario on one machine, with files in ``workdir``."""

    def __init__(self, machine: Machine, scenario: Scenario, workdir: Path) -> None:
        self.machine = machine
        self.scenario = scenario
        self.workdir = workdir
        self.client: QMPClient | None = None
        self.listener: EventListener | None = None
        self.received: deque[Event] = deque(maxlen=_RECEIVED_MAX)

    def image_path(self, name: str) -> Path:
        return self.workdir / f"{name}.img"

    def expand(self, value: Any) -> Any:
        """``value`` with ``{tmp}`` replaced by the work directory in every string."""
        if isinstance(value, str):
            return value.replace("{tmp}", str(self.workdir))
        if isinstance(value, list):
            return [self.expand(item) for item in value]
        if isinstance(value, dict):
            return {key: self.expand(item) for key, item in value.items()}
        return value

    async def prepare(self) -> None:
        spec = self.scenario.spec
        for image in spec.images:
            _write_pattern(self.image_path(image.name), 0, size_of(image.size), image.fill, True)
        for index, drive in enumerate(spec.drives):
            try:
                self.machine.block.add(self._drive_options(drive), drive.device)
            except QMPCommandFailure as failure:
                raise self.scenario.error(("drives", index), failure.desc) from None

    async def observe(self) -> None:
        """Connect the client that ``wait-event`` steps read, if the timeline has any."""
        if not any(isinstance(step, WaitEventStep) for step in self.scenario.spec.steps):
            return
        # wait-event needs what clients receive, after the rate limiter: a real
        # client on a private socket of the machine sees exactly that.
        path = str(self.workdir / "scenario-qmp.sock")
        await self.machine.server.listen_unix(path)
        self.client = QMPClient(path)
        self.listener = self.client.events()
        await self.client.connect()

    async def close(self) -> None:
        if self.client is not None:
            await self.client.close()

    def _drive_options(self, drive: DriveSpec) -> dict[str, Any]:
        if drive.blockdev is not None:
            options: dict[str, Any] = self.expand(drive.blockdev)
            return options
        if drive.image is not None:
            return self._raw(drive.node_name or drive.image, drive.image)
        assert drive.quorum is not None
        options = {"driver": "quorum", "node-name": drive.node_name}
        options["vote-threshold"] = drive.vote_threshold
        if drive.read_pattern is not None:
            options["read-pattern"] = drive.read_pattern
        if drive.rewrite_corrupted is not None:
            options["rewrite-corrupted"] = drive.rewrite_corrupted
        options["children"] = [self._raw(image, image) for image in drive.quorum]
        return options

    def _raw(self, node_name: str, image: str) -> dict[str, Any]:
        file = {"driver": "file", "filename": str(self.image_path(image))}
        return {"driver": "raw", "node-name": node_name, "file": file}

    async def step(self, path: tuple[PathPart, ...], step: Step) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s:%d: %s", self.scenario.source, self.scenario.line(path), step)
        if isinstance(step, WaitStep):
            await asyncio.sleep(step.wait)
        elif isinstance(step, WaitEventStep):
            await self._wait_event(path, step)
        elif isinstance(step, BurstStep):
            for count in range(step.burst):
                if count:
                    await asyncio.sleep(step.interval)
                item_index = count % len(step.do)
                await self._act((*path, "do", item_index), step.do[item_index])
        elif isinstance(step, SayStep | LogStep):
            log.info("%s", narration(step))
        else:
            await self._act(path, step)

    async def _act(self, path: tuple[PathPart, ...], step: BurstItem) -> None:
        if isinstance(step, CorruptStep):
            image = self.image_path(step.corrupt)
            _write_pattern(image, size_of(step.offset), size_of(step.length), step.pattern, False)
            return
        command, arguments, expected = _command(step)
        try:
            await self.machine.execute(command, self.expand(arguments))
        except QMPCommandFailure as failure:
            if failure.error_class != expected:
                raise self.scenario.error(
                    path, f"{command} failed: {failure.error_class}: {failure.desc}"
                ) from None
            return
        if expected is not None:
            raise self.scenario.error(path, f"{command} succeeded; expected error {expected}")

    async def _wait_event(self, path: tuple[PathPart, ...], step: WaitEventStep) -> None:
        assert self.listener is not None
        wanted = EventFilter((step.wait_event,), _flatten(step.where))
        for event in self.received:
            if wanted.accepts(event):
                self.received.remove(event)
                return
        try:
            async with asyncio.timeout(step.timeout):
                async for item in self.listener:
                    if not isinstance(item, Event):
                        continue  # a Dropped marker: this client reads too slowly
                    if wanted.accepts(item):
                        return
                    self.received.append(item)
        except TimeoutError:
            pass
        where = f" with {step.where}" if step.where else ""
        raise self.scenario.error(path, f"no {step.wait_event}{where} within {step.timeout:g} s")


def _flatten(where: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{result = {status = "failed"}}`` -> ``{"result.status": "failed"}``.

    TOML writes ``result.status = ...`` as a nested table; each leaf is one
    member to match, so a nested table matches member by member.
    """
    flat: dict[str, Any] = {}
    for key, value in where.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _command(step: BurstItem) -> tuple[str, dict[str, Any], str | None]:
    """The QMP command a step runs, its arguments and the error class it expects."""
    if isinstance(step, CommandStep):
        return step.command, step.arguments, step.expect_error
    if isinstance(step, GuestPanic):
        return "x-sim-pvpanic", {"value": step.value}, None
    if isinstance(step, GuestVserport):
        return "x-sim-vserport", {"id": step.id, "open": step.open}, None
    if isinstance(step, GuestUnplugReject):
        return "x-sim-unplug-reject", {"id": step.id}, None
    if isinstance(step, GuestUnplugPolicy):
        return "x-sim-unplug-policy", {"answer": step.answer}, None
    assert isinstance(step, GuestDirtyRate)
    return "x-sim-dirty-rate", {"bytes-per-second": size_of(step.bytes_per_second)}, None


def _write_pattern(path: Path, offset: int, length: int, byte: int, create: bool) -> None:
    """Write ``length`` bytes of ``byte`` at ``offset``; ``create`` makes the file that long."""
    flags = os.O_WRONLY | (os.O_CREAT | os.O_TRUNC if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        if create:
            os.ftruncate(fd, length)
            if not byte:
                return  # a new file reads as zeros already
        chunk = bytes([byte]) * min(length, _CHUNK)
        done = 0
        while done < length:
            done += os.pwrite(fd, chunk[: length - done], offset + done)
    finally:
        os.close(fd)

"""Scenario files: load and check one, and replay its timeline against a machine.

The format is documented in :mod:`qmpevents.sim.scenario_format`. Typical use::

    scenario = load_scenario("panic.toml")          # or bundled_scenario("demo")
    machine = Machine(scenario.machine_config())
    await machine.start()
    await run_scenario(machine, scenario)

Every problem is a :class:`ScenarioError` whose message starts with
``FILE:LINE:``. A TOML syntax error takes its line from ``tomllib``; a value
that does not validate takes it from the path msgspec reports
(``$.steps[3].value``), looked up in the text by
:func:`~qmpevents.sim.scenario_lines.toml_line`; a step that fails while it runs
(a command's unexpected error, a ``wait-event`` timeout) names the line of its
``[[steps]]`` table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
import tomllib
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import msgspec

from qmpevents.client.connection import QMPClient
from qmpevents.client.listeners import EventFilter, EventListener
from qmpevents.errors import ConfigError
from qmpevents.schema.events import EVENT_TYPES, Event
from qmpevents.server.commands import QMPCommandFailure
from qmpevents.sim.config import DimmConfig, MachineConfig, VserportConfig
from qmpevents.sim.machine import Machine
from qmpevents.sim.opts import OptionError, parse_size
from qmpevents.sim.scenario_format import (
    BURST_KINDS,
    GUEST_ACTIONS,
    STEP_KINDS,
    TAG_FIELD,
    BurstItem,
    BurstStep,
    CommandStep,
    CorruptStep,
    DriveSpec,
    GuestDirtyRate,
    GuestPanic,
    GuestUnplugReject,
    GuestVserport,
    LogStep,
    SayStep,
    ScenarioSpec,
    Size,
    Step,
    WaitEventStep,
    WaitStep,
)
from qmpevents.sim.scenario_lines import PathPart, parse_error_path, toml_line

__all__ = [
    "Scenario",
    "ScenarioError",
    "StepHook",
    "bundled_scenario",
    "bundled_scenarios",
    "dotted",
    "load_scenario",
    "narration",
    "parse_scenario",
    "run_scenario",
]

log = logging.getLogger("qmpevents.scenario")

StepHook = Callable[[int, Step], Awaitable[None]]
"""``on_step(index, step)``: awaited before step ``index`` of the timeline runs."""

_TOML_POSITION: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")
_SERIAL_BUS: Final = "virtio-serial0"
# Sizes of image and corruption writes: bounded chunks keep a large fill in little memory.
_CHUNK: Final = 1 << 20
# What the wait-event observer keeps of events no wait-event has matched yet.
_RECEIVED_MAX: Final = 1000


class ScenarioError(ConfigError):
    """A scenario that cannot load or whose step failed; ``str()`` is ``FILE:LINE: message``.

    ``line`` is 0 (and left out of ``str()``) when the file cannot be read at all.
    """

    def __init__(self, source: str, line: int, message: str) -> None:
        super().__init__(f"{source}:{line}: {message}" if line else f"{source}: {message}")
        self.source = source
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class Scenario:
    """A loaded, checked scenario: its ``spec`` and where it came from (for messages)."""

    source: str
    text: str
    spec: ScenarioSpec

    def line(self, path: Sequence[PathPart]) -> int:
        """The line of the value at ``path`` (``("steps", 3, "value")``)."""
        return toml_line(self.text, path)

    def error(
        self, path: Sequence[PathPart], message: str, *, at: Sequence[PathPart] = ()
    ) -> ScenarioError:
        """A :class:`ScenarioError` ``PATH: message`` at the line of ``path`` + ``at``.

        ``at`` goes deeper than the path shown (an unknown key's own line).
        """
        where = dotted(path)
        text = f"{where}: {message}" if where else message
        return ScenarioError(self.source, self.line([*path, *at]), text)

    def machine_config(self) -> MachineConfig:
        """The machine of the ``[machine]`` table, without monitors or drives.

        The caller adds the monitors; :func:`run_scenario` adds the drives.
        """
        spec = self.spec.machine
        ram = _size(spec.ram)
        dimms = [DimmConfig(d.id, f"mem-{d.id}", _size(d.size)) for d in spec.dimms]
        default_maxmem = ram + sum(d.size for d in dimms) if dimms else 0
        return MachineConfig(
            machine_type=spec.type,
            ram_size=ram,
            slots=spec.slots if spec.slots is not None else len(dimms),
            maxmem=_size(spec.maxmem) if spec.maxmem is not None else default_maxmem,
            cpus=spec.cpus,
            name=spec.name,
            start_paused=spec.paused,
            panic_action=spec.panic_action,
            shutdown_action="pause" if spec.no_shutdown else "poweroff",
            pvpanic=spec.pvpanic,
            serial_buses=[_SERIAL_BUS] if spec.vserports else [],
            vserports=[VserportConfig(port, bus=_SERIAL_BUS) for port in spec.vserports],
            dimms=dimms,
        )


def dotted(path: Sequence[PathPart]) -> str:
    """``("steps", 3, "value")`` -> ``"steps[3].value"``."""
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in path)
    return text.lstrip(".")


def narration(step: Step) -> str | None:
    """The text of a ``say`` or ``log`` step; None for other steps."""
    if isinstance(step, SayStep):
        return step.say
    if isinstance(step, LogStep):
        return step.log
    return None


# --- loading --------------------------------------------------------------------------


def load_scenario(path: str | os.PathLike[str]) -> Scenario:
    """Read and check the scenario file at ``path``; raises :class:`ScenarioError`."""
    source = os.fspath(path)
    try:
        text = Path(source).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ScenarioError(source, 0, f"cannot read: {error}") from None
    return parse_scenario(text, source)


def bundled_scenarios() -> list[str]:
    """The names of the scenarios shipped with qmpevents (``demo``, ...)."""
    files = resources.files("qmpevents.sim.scenarios").iterdir()
    return sorted(f.name.removesuffix(".toml") for f in files if f.name.endswith(".toml"))


def bundled_scenario(name: str) -> Scenario:
    """The bundled scenario ``name``; raises :class:`ConfigError` for an unknown name."""
    if name not in bundled_scenarios():
        raise ConfigError(f"no bundled scenario {name!r} (have: {', '.join(bundled_scenarios())})")
    resource = resources.files("qmpevents.sim.scenarios") / f"{name}.toml"
    return parse_scenario(resource.read_text(encoding="utf-8"), f"<bundled>/{name}.toml")


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    """Check scenario ``text``; ``source`` names it in messages. Raises :class:`ScenarioError`."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        match = _TOML_POSITION.search(message)
        if match is None:  # "(at end of document)"
            line = text.count("\n") + 1
            message = message.replace(" (at end of document)", " at the end of the file")
        else:
            line = int(match.group(1))
            message = f"{message[: match.start()]} (column {match.group(2)})"
        raise ScenarioError(source, line, message) from None
    # A partial Scenario to map paths to lines until the spec exists.
    locate = Scenario(source, text, ScenarioSpec())
    _tag_steps(document, locate)
    try:
        spec = msgspec.convert(document, ScenarioSpec)
    except msgspec.ValidationError as error:
        message, path, field = parse_error_path(str(error))
        raise locate.error(path, message, at=[field] if field else []) from None
    scenario = Scenario(source, text, spec)
    _check(scenario)
    return scenario


def _tag_steps(document: dict[str, Any], locate: Scenario) -> None:
    """Give each step table the tag of its kind, found from the kind key it has."""
    steps = document.get("steps")
    if not isinstance(steps, list):
        return  # not an array: msgspec reports that
    for index, step in enumerate(steps):
        _tag(step, ("steps", index), STEP_KINDS, locate)
        if isinstance(step, dict) and isinstance(step.get("do"), list):
            for item_index, item in enumerate(step["do"]):
                _tag(item, ("steps", index, "do", item_index), BURST_KINDS, locate)


def _tag(step: Any, path: tuple[PathPart, ...], kinds: Sequence[str], locate: Scenario) -> None:
    if not isinstance(step, dict):
        return  # msgspec reports "Expected `object`"
    found = [kind for kind in kinds if kind in step]
    if len(found) != 1:
        problem = (
            f"unknown step kind (keys: {', '.join(step) or 'none'})"
            if not found
            else f"several step kinds ({', '.join(found)})"
        )
        raise locate.error(path, f"{problem}; a step has exactly one of {', '.join(kinds)}")
    kind = found[0]
    if kind == "guest":
        action = step["guest"]
        if action not in GUEST_ACTIONS:
            raise locate.error(
                (*path, "guest"),
                f"unknown guest action {action!r}; expected one of {', '.join(GUEST_ACTIONS)}",
            )
        kind = f"guest={action}"
    step[TAG_FIELD] = kind


def _size(value: Size) -> int:
    # Checked by _check(): the loader refuses a scenario with a bad size.
    return value if isinstance(value, int) else parse_size(value)


def _check(scenario: Scenario) -> None:
    """What the types cannot say: sizes, references between tables, known events."""
    spec = scenario.spec
    for path, value in _sizes(spec):
        if isinstance(value, str):
            try:
                parse_size(value)
            except OptionError:
                raise scenario.error(
                    path, f"bad size {value!r}: expected a byte count or 64k, 1M, 2G"
                ) from None
    config = scenario.machine_config()
    if config.slots < len(config.dimms):
        message = f"{len(config.dimms)} DIMM(s) need at least that many slots"
        raise scenario.error(("machine", "slots"), message)
    needed = config.ram_size + sum(d.size for d in config.dimms)
    if config.dimms and config.maxmem < needed:
        raise scenario.error(("machine", "maxmem"), f"RAM and DIMMs need at least {needed} bytes")
    images: set[str] = set()
    for index, image in enumerate(spec.images):
        if image.name in images:
            raise scenario.error(("images", index, "name"), f"duplicate image {image.name!r}")
        images.add(image.name)
    for index, drive in enumerate(spec.drives):
        _check_drive(scenario, index, drive, images)
    for path, step in _all_steps(spec.steps):
        _check_step(scenario, path, step, images)


def _sizes(spec: ScenarioSpec) -> Iterator[tuple[tuple[PathPart, ...], Size]]:
    machine = spec.machine
    yield ("machine", "ram"), machine.ram
    if machine.maxmem is not None:
        yield ("machine", "maxmem"), machine.maxmem
    for index, dimm in enumerate(machine.dimms):
        yield ("machine", "dimms", index, "size"), dimm.size
    for index, image in enumerate(spec.images):
        yield ("images", index, "size"), image.size
    for path, step in _all_steps(spec.steps):
        if isinstance(step, CorruptStep):
            yield (*path, "offset"), step.offset
            yield (*path, "length"), step.length
        elif isinstance(step, GuestDirtyRate):
            yield (*path, "bytes-per-second"), step.bytes_per_second


def _all_steps(steps: list[Step]) -> Iterator[tuple[tuple[PathPart, ...], Step]]:
    """Every step with its path, burst items after their burst."""
    for index, step in enumerate(steps):
        yield ("steps", index), step
        if isinstance(step, BurstStep):
            for item_index, item in enumerate(step.do):
                yield ("steps", index, "do", item_index), item


def _check_drive(scenario: Scenario, index: int, drive: DriveSpec, images: set[str]) -> None:
    path: tuple[PathPart, ...] = ("drives", index)
    forms = [key for key in ("image", "quorum", "blockdev") if getattr(drive, key) is not None]
    if len(forms) != 1:
        raise scenario.error(path, "a drive has exactly one of image, quorum, blockdev")
    if drive.quorum is not None and drive.node_name is None:
        raise scenario.error(path, "a quorum needs a node-name")
    for name in [drive.image] if drive.image is not None else drive.quorum or []:
        if name not in images:
            raise scenario.error((*path, forms[0]), f"no image {name!r} in [[images]]")


def _check_step(
    scenario: Scenario, path: tuple[PathPart, ...], step: Step, images: set[str]
) -> None:
    machine = scenario.spec.machine
    if isinstance(step, WaitEventStep) and step.wait_event not in EVENT_TYPES:
        raise scenario.error(
            (*path, "wait-event"),
            f"unknown event {step.wait_event!r}; the simulator raises "
            f"{', '.join(sorted(EVENT_TYPES))}",
        )
    if isinstance(step, CorruptStep) and step.corrupt not in images:
        raise scenario.error((*path, "corrupt"), f"no image {step.corrupt!r} in [[images]]")
    if isinstance(step, GuestVserport) and step.id not in machine.vserports:
        raise scenario.error((*path, "id"), f"no port {step.id!r} in machine.vserports")
    if isinstance(step, GuestUnplugReject) and step.id not in {d.id for d in machine.dimms}:
        raise scenario.error((*path, "id"), f"no DIMM {step.id!r} in machine.dimms")
    if isinstance(step, GuestPanic) and not machine.pvpanic:
        raise scenario.error((*path, "guest"), "a panic needs machine.pvpanic = true")


# --- running --------------------------------------------------------------------------


async def run_scenario(
    machine: Machine,
    scenario: Scenario,
    *,
    on_step: StepHook | None = None,
    workdir: str | os.PathLike[str] | None = None,
) -> None:
    """Play the timeline of ``scenario`` on the started ``machine``.

    First the images are created in ``workdir`` and the drives added; then each
    step runs in order, ``on_step`` awaited before it. Without ``workdir`` a
    temporary directory holds the files and is removed at the end; pass one that
    lives as long as the machine when it keeps serving the drives. Raises
    :class:`ScenarioError` for a step that fails.
    """
    with contextlib.ExitStack() as stack:
        if workdir is None:
            workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="qmpevents-scenario-"))
        runner = _Runner(machine, scenario, Path(workdir))
        try:
            await runner.prepare()
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
            _write_pattern(self.image_path(image.name), 0, _size(image.size), image.fill, True)
        for index, drive in enumerate(spec.drives):
            try:
                self.machine.block.add(self._drive_options(drive), drive.device)
            except QMPCommandFailure as failure:
                raise self.scenario.error(("drives", index), failure.desc) from None
        if any(isinstance(step, WaitEventStep) for step in spec.steps):
            await self._observe()

    async def _observe(self) -> None:
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
            _write_pattern(image, _size(step.offset), _size(step.length), step.pattern, False)
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
    assert isinstance(step, GuestDirtyRate)
    return "x-sim-dirty-rate", {"bytes-per-second": _size(step.bytes_per_second)}, None


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

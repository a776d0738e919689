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

import logging
import os
import re
import tomllib
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Final

import msgspec

from qmpevents.errors import ConfigError
from qmpevents.schema.events import EVENT_TYPES
from qmpevents.sim.config import DimmConfig, MachineConfig, VserportConfig
from qmpevents.sim.opts import OptionError, parse_size
from qmpevents.sim.scenario_devices import SERIAL_BUS
from qmpevents.sim.scenario_format import (
    BURST_KINDS,
    GUEST_ACTIONS,
    STEP_KINDS,
    TAG_FIELD,
    BurstStep,
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
]

log = logging.getLogger("qmpevents.scenario")

StepHook = Callable[[int, Step], Awaitable[None]]
"""``on_step(index, step)``: awaited before step ``index`` of the timeline runs."""

_TOML_POSITION: Final = re.compile(r"\s*\(at line (\d+), column (\d+)\)$")


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
        ram = size_of(spec.ram)
        dimms = [DimmConfig(d.id, f"mem-{d.id}", size_of(d.size)) for d in spec.dimms]
        default_maxmem = ram + sum(d.size for d in dimms) if dimms else 0
        return MachineConfig(
            machine_type=spec.type,
            ram_size=ram,
            slots=spec.slots if spec.slots is not None else len(dimms),
            maxmem=size_of(spec.maxmem) if spec.maxmem is not None else default_maxmem,
            cpus=spec.cpus,
            name=spec.name,
            start_paused=spec.paused,
            panic_action=spec.panic_action,
            shutdown_action="pause" if spec.no_shutdown else "poweroff",
            pvpanic=spec.pvpanic,
            serial_buses=[SERIAL_BUS] if spec.vserports else [],
            vserports=[VserportConfig(port, bus=SERIAL_BUS) for port in spec.vserports],
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


def size_of(value: Size) -> int:
    """A size of a scenario file in bytes (``"64M"`` or a number)."""
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

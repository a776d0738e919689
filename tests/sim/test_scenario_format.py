"""Scenario files: a good file loads; each kind of bad file names the right line."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmpevents.errors import ConfigError
from qmpevents.sim.scenario import (
    ScenarioError,
    bundled_scenario,
    bundled_scenarios,
    load_scenario,
    parse_scenario,
)
from qmpevents.sim.scenario_format import (
    BurstStep,
    CommandStep,
    CorruptStep,
    GuestDirtyRate,
    GuestPanic,
    GuestUnplugReject,
    GuestVserport,
    LogStep,
    SayStep,
    WaitEventStep,
    WaitStep,
)
from qmpevents.sim.scenario_lines import toml_line

GOOD = """\
description = "every step kind"

[machine]
type = "q35"
ram = "64M"
cpus = 2
name = "vm1"
panic-action = "pause"
no-shutdown = true
paused = true
vserports = ["vs0", "vs1"]
dimms = [{ id = "dimm1", size = "128M" }]

[[images]]
name = "a"
size = 4096
fill = 0xff

[[images]]
name = "b"

[[images]]
name = "c"

[[drives]]
image = "a"
device = "disk0"

[[drives]]
quorum = ["a", "b", "c"]
node-name = "q"
vote-threshold = 2
read-pattern = "quorum"

[[steps]]
say = "hello"

[[steps]]
log = "also narration"

[[steps]]
command = "query-status"

[[steps]]
command = "device_del"
arguments = { id = "nope" }
expect-error = "DeviceNotFound"

[[steps]]
guest = "panic"

[[steps]]
guest = "vserport"
id = "vs1"
open = true

[[steps]]
guest = "unplug-reject"
id = "dimm1"

[[steps]]
guest = "dirty-rate"
bytes-per-second = "10M"

[[steps]]
wait = 0.5

[[steps]]
wait-event = "MIGRATION"
where = { status = "completed" }
timeout = 3

[[steps]]
corrupt = "b"
offset = "4k"

[[steps]]
burst = 3
interval = 0
do = [
    { guest = "vserport", id = "vs0", open = true },
    { command = "query-status" },
]
"""


def test_good_file_loads_every_step_kind() -> None:
    scenario = parse_scenario(GOOD, "good.toml")
    kinds = [type(step) for step in scenario.spec.steps]
    assert kinds == [
        SayStep, LogStep, CommandStep, CommandStep, GuestPanic, GuestVserport,
        GuestUnplugReject, GuestDirtyRate, WaitStep, WaitEventStep, CorruptStep, BurstStep,
    ]  # fmt: skip
    steps = scenario.spec.steps
    assert steps[3] == CommandStep(
        command="device_del", arguments={"id": "nope"}, expect_error="DeviceNotFound"
    )
    assert steps[4] == GuestPanic(guest="panic", value=1)
    burst = steps[11]
    assert isinstance(burst, BurstStep) and burst.burst == 3 and len(burst.do) == 2
    config = scenario.machine_config()
    assert (config.machine_type, config.ram_size, config.cpus) == ("q35", 64 << 20, 2)
    assert (config.panic_action, config.shutdown_action, config.start_paused) == (
        "pause", "pause", True,
    )  # fmt: skip
    assert [port.id for port in config.vserports] == ["vs0", "vs1"]
    assert config.serial_buses and config.pvpanic
    assert [(d.id, d.size) for d in config.dimms] == [("dimm1", 128 << 20)]
    assert config.slots == 1 and config.maxmem == 192 << 20
    assert scenario.line(("steps", 11)) == GOOD.splitlines().index("burst = 3")


def test_load_from_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[[steps]]\nwait = "soon"\n')
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    assert str(error.value) == f"{path}:2: steps[0].wait: Expected `float`, got `str`"
    assert error.value.line == 2


def test_unreadable_file() -> None:
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario("/nonexistent/scenario.toml")


def _error(text: str) -> ScenarioError:
    with pytest.raises(ScenarioError) as error:
        parse_scenario(text, "s.toml")
    assert isinstance(error.value, ConfigError)
    return error.value


STEPS = """\
[machine]
vserports = ["vs0"]

[[steps]]
say = "one"

[[steps]]
guest = "vserport"
id = "vs0"
open = true

[[steps]]
# the third step
command = "query-status"
{extra}
"""


@pytest.mark.parametrize(
    ("extra", "line", "message"),
    [
        ('bogus = 1', 15, "steps[2]: Object contains unknown field `bogus`"),
        ('arguments = "x"', 15, "steps[2].arguments: Expected `object`, got `str`"),
        ('expect-error = 3', 15, "steps[2].expect-error: Expected `str | null`, got `int`"),
    ],
)  # fmt: skip
def test_semantic_errors_point_at_the_key_of_the_right_step(
    extra: str, line: int, message: str
) -> None:
    error = _error(STEPS.format(extra=extra))
    assert (error.line, error.message) == (line, message)


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        # TOML syntax: tomllib's own line and column.
        ('[machine]\nram = "64M"\npaused = yes\n', 3,
         "Invalid value (column 10)"),
        # The step table has no kind key at all.
        ('[[steps]]\nsay = "a"\n\n[[steps]]\nexplode = true\n', 4,
         "steps[1]: unknown step kind (keys: explode); a step has exactly one of "
         "command, guest, wait, wait-event, burst, corrupt, say, log"),
        ('[[steps]]\nwait = 1\nsay = "x"\n', 1,
         "steps[0]: several step kinds (wait, say); a step has exactly one of "
         "command, guest, wait, wait-event, burst, corrupt, say, log"),
        ('[[steps]]\nguest = "reboot"\n', 2,
         "steps[0].guest: unknown guest action 'reboot'; expected one of "
         "panic, vserport, unplug-reject, unplug-policy, dirty-rate"),
        # Wrong types and values.
        ('[[steps]]\nguest = "panic"\nvalue = "1"\n', 3,
         "steps[0].value: Expected `int`, got `str`"),
        ('[[steps]]\nguest = "panic"\nvalue = 300\n', 3,
         "steps[0].value: Expected `int` <= 255"),
        ('[[steps]]\nwait = -1\n', 2, "steps[0].wait: Expected `float` >= 0.0"),
        ('[machine]\ncpus = 2\npanic-action = "explode"\n', 3,
         "machine.panic-action: Invalid enum value 'explode'"),
        ('[machine]\nram = "lots"\n', 2,
         "machine.ram: bad size 'lots': expected a byte count or 64k, 1M, 2G"),
        ('description = 1\n', 1, "description: Expected `str`, got `int`"),
        ('\nnonsense = 1\n', 2, "Object contains unknown field `nonsense`"),
        ('[[steps]]\nguest = "vserport"\nid = "vs0"\n', 1,
         "steps[0]: Object missing required field `open`"),
        # Bad event names.
        ('[[steps]]\nwait = 1\n[[steps]]\nwait-event = "DUMP_COMPLETE"\n', 4,
         "steps[1].wait-event: unknown event 'DUMP_COMPLETE'; the simulator raises "),
        # References between tables.
        ('[[steps]]\ncorrupt = "disk"\n', 2, "steps[0].corrupt: no image 'disk' in [[images]]"),
        ('[[steps]]\nguest = "vserport"\nid = "vs9"\nopen = true\n', 3,
         "steps[0].id: no port 'vs9' in machine.vserports"),
        ('[[steps]]\nguest = "unplug-reject"\nid = "d"\n', 3,
         "steps[0].id: no DIMM 'd' in machine.dimms"),
        ('[machine]\npvpanic = false\n[[steps]]\nguest = "panic"\n', 4,
         "steps[0].guest: a panic needs machine.pvpanic = true"),
        ('[[images]]\nname = "a"\n[[drives]]\nimage = "b"\n', 4,
         "drives[0].image: no image 'b' in [[images]]"),
        ('[[images]]\nname = "a"\n[[drives]]\nimage = "a"\nquorum = ["a"]\n', 3,
         "drives[0]: a drive has exactly one of image, quorum, blockdev"),
        ('[[images]]\nname = "a"\n[[images]]\nname = "a"\n', 4,
         "images[1].name: duplicate image 'a'"),
        ('[machine]\ndimms = [{ id = "d", size = "1G" }]\nslots = 0\n', 3,
         "machine.slots: 1 DIMM(s) need at least that many slots"),
    ],
)  # fmt: skip
def test_bad_files(text: str, line: int, message: str) -> None:
    error = _error(text)
    assert error.line == line
    assert error.message.startswith(message)
    assert str(error) == f"s.toml:{line}: {error.message}"


BURST = """\
[machine]
vserports = ["vs0"]

[[steps]]
burst = 2
do = [
    { guest = "vserport", id = "vs0", open = true },
    { guest = "vserport", id = "vs0", open = "yes" },
]
"""


def test_burst_item_errors_point_at_the_item_line() -> None:
    error = _error(BURST)
    assert error.line == 8
    assert error.message == "steps[0].do[1].open: Expected `bool`, got `str`"


def test_burst_cannot_repeat_waits() -> None:
    error = _error("[[steps]]\nburst = 2\ndo = [{ wait = 1 }]\n")
    assert error.line == 3
    assert error.message.startswith(
        "steps[0].do[0]: unknown step kind (keys: wait); a step has exactly one of "
        "command, guest, corrupt"
    )


def test_line_mapper_follows_sub_tables_and_skips_strings() -> None:
    text = """\
top = 1
[[steps]]
say = '''
[[steps]]
'''
[[steps.do]]
guest = "panic"
[[steps.do]]
value = 2
[[steps]]
wait = 1
"""
    assert toml_line(text, ["top"]) == 1
    assert toml_line(text, ["steps", 0]) == 2
    assert toml_line(text, ["steps", 0, "do", 1, "value"]) == 9
    assert toml_line(text, ["steps", 1, "wait"]) == 11
    assert toml_line(text, ["steps", 1, "missing"]) == 10
    assert toml_line(text, ["steps", 7]) == 1


def test_bundled_demo_loads() -> None:
    assert "demo" in bundled_scenarios()
    scenario = bundled_scenario("demo")
    assert scenario.source == "<bundled>/demo.toml"
    assert any(isinstance(step, BurstStep) for step in scenario.spec.steps)
    with pytest.raises(ConfigError, match="no bundled scenario"):
        bundled_scenario("nope")

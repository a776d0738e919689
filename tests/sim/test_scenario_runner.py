"""run_scenario: each step kind against a real machine, watched by a real client."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from qmpevents.client.connection import connect
from qmpevents.schema.events import Event
from qmpevents.sim.block import FileNode
from qmpevents.sim.config import MonitorEndpoint
from qmpevents.sim.machine import Machine
from qmpevents.sim.scenario import (
    Scenario,
    ScenarioError,
    bundled_scenario,
    narration,
    parse_scenario,
)
from qmpevents.sim.scenario_format import Step
from qmpevents.sim.scenario_runner import run_scenario
from qmpevents.throttle import RateLimiter

INTERVAL = 0.2
SEED_EVENTS = {
    "DUMP_COMPLETED", "GUEST_PANICKED", "MEM_UNPLUG_ERROR", "QUORUM_FAILURE",
    "QUORUM_REPORT_BAD", "MIGRATION_PASS", "VSERPORT_CHANGE",
}  # fmt: skip


class Run:
    """A machine for ``scenario`` with a client that records every event it receives."""

    def __init__(self, machine: Machine, scenario: Scenario) -> None:
        self.machine = machine
        self.scenario = scenario
        self.events: list[Event] = []

    def data(self, name: str) -> list[dict[str, Any]]:
        return [dict(e.to_message().get("data", {})) for e in self.events if e.name == name]

    async def settle(self) -> None:
        """Wait until the limiter has delivered what it held, and the client has it."""
        async with asyncio.timeout(5):
            while self.machine.server.rate_limiter.pending():
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.05)


@asynccontextmanager
async def running(text: str, tmp_path: Path) -> AsyncIterator[Run]:
    scenario = parse_scenario(text, "t.toml")
    config = scenario.machine_config()
    path = str(tmp_path / "qmp.sock")
    config.monitors.append(MonitorEndpoint("unix", path=path))
    machine = Machine(
        config,
        rate_limiter=RateLimiter(interval=INTERVAL),
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    await machine.start()
    run = Run(machine, scenario)
    try:
        async with connect(path) as qmp:
            listener = qmp.events()

            async def record() -> None:
                async for item in listener:
                    if isinstance(item, Event):
                        run.events.append(item)

            recorder = asyncio.ensure_future(record())
            try:
                yield run
                await run.settle()
            finally:
                recorder.cancel()
    finally:
        await machine.server.close()


async def test_burst_shows_the_rate_limiter_holding_and_delivering(tmp_path: Path) -> None:
    text = """\
[machine]
vserports = ["vs0"]

[[steps]]
burst = 5
interval = 0.02
do = [
    { guest = "vserport", id = "vs0", open = true },
    { guest = "vserport", id = "vs0", open = false },
]
"""
    async with running(text, tmp_path) as run:
        await run_scenario(run.machine, run.scenario)
        await run.settle()
        # The first at once; the latest of the other four after the interval.
        assert run.data("VSERPORT_CHANGE") == [
            {"id": "vs0", "open": True},
            {"id": "vs0", "open": True},
        ]
        assert run.machine.server.rate_limiter.dropped == 3


async def test_quorum_corruption_and_narration(tmp_path: Path) -> None:
    text = """\
[[images]]
name = "c0"
size = "64k"
[[images]]
name = "c1"
size = "64k"
[[images]]
name = "c2"
size = "64k"

[[drives]]
quorum = ["c0", "c1", "c2"]
node-name = "qD"
device = "disk0"

[[steps]]
say = "corrupt one child"

[[steps]]
corrupt = "c2"
offset = 1024
length = 100

[[steps]]
command = "human-monitor-command"
arguments = { command-line = 'qemu-io qD "read 0 4096"' }

[[steps]]
log = "done"
"""
    seen: list[tuple[int, str | None]] = []

    async def on_step(index: int, step: Step) -> None:
        seen.append((index, narration(step)))

    async with running(text, tmp_path) as run:
        await run_scenario(run.machine, run.scenario, on_step=on_step)
        await run.settle()
        assert run.data("QUORUM_REPORT_BAD") == [
            {"type": "read", "node-name": "c2", "sector-num": 0, "sectors-count": 8}
        ]
    assert seen == [(0, "corrupt one child"), (1, None), (2, None), (3, "done")]


async def test_blockdev_drive_expands_tmp_and_workdir_is_removed(tmp_path: Path) -> None:
    text = """\
[[images]]
name = "a"
size = 4096
fill = 0x5a

[[drives]]
blockdev = { driver = "raw", node-name = "r", file = { driver = "file", filename = "{tmp}/a.img" } }

[[steps]]
command = "human-monitor-command"
arguments = { command-line = 'qemu-io r "read -P 0x5a 0 4096"' }

[[steps]]
command = "dump-guest-memory"
arguments = { paging = false, protocol = "file:{tmp}/guest.dump" }
"""
    async with running(text, tmp_path) as run:
        await run_scenario(run.machine, run.scenario)
        await run.settle()
        assert run.data("DUMP_COMPLETED")[0]["result"]["status"] == "completed"
        assert isinstance(run.machine.stdout, io.StringIO)
        report = run.machine.stdout.getvalue()
        assert "read 4096/4096 bytes at offset 0" in report
        assert "Pattern verification failed" not in report
        file_node = run.machine.block.nodes["r"].children[0]
        assert isinstance(file_node, FileNode)
        assert not Path(file_node.filename).parent.exists()


async def test_given_workdir_is_kept(tmp_path: Path) -> None:
    text = '[[images]]\nname = "keep"\nsize = 512\n'
    async with running(text, tmp_path) as run:
        await run_scenario(run.machine, run.scenario, workdir=tmp_path)
    assert (tmp_path / "keep.img").stat().st_size == 512


async def test_a_guest_that_refuses_unplugs(tmp_path: Path) -> None:
    text = """\
[machine]
dimms = [{ id = "dimm1", size = "128M" }]

[[steps]]
guest = "unplug-policy"
answer = "refuse"

[[steps]]
command = "device_del"
arguments = { id = "dimm1" }

[[steps]]
wait-event = "ACPI_DEVICE_OST"
where = { info = { device = "dimm1", status = 0x82 } }
timeout = 5
"""
    async with running(text, tmp_path) as run:
        await run_scenario(run.machine, run.scenario)
        await run.settle()
        statuses = [d["info"]["status"] for d in run.data("ACPI_DEVICE_OST")]
        assert statuses == [0x84, 0x82]


async def test_expect_error(tmp_path: Path) -> None:
    good = '[[steps]]\ncommand = "device_del"\narguments = { id = "x" }\n'
    good += 'expect-error = "DeviceNotFound"\n'
    async with running(good, tmp_path) as run:
        await run_scenario(run.machine, run.scenario)
    wrong = '[[steps]]\nsay = "a"\n[[steps]]\ncommand = "device_del"\narguments = { id = "x" }\n'
    async with running(wrong, tmp_path) as run:
        with pytest.raises(ScenarioError) as error:
            await run_scenario(run.machine, run.scenario)
    assert str(error.value) == (
        "t.toml:3: steps[1]: device_del failed: DeviceNotFound: Device 'x' not found"
    )
    unexpected = '[[steps]]\ncommand = "query-status"\nexpect-error = "GenericError"\n'
    async with running(unexpected, tmp_path) as run:
        with pytest.raises(ScenarioError, match="query-status succeeded; expected error"):
            await run_scenario(run.machine, run.scenario)


async def test_wait_event_sees_earlier_events_and_times_out(tmp_path: Path) -> None:
    text = """\
[machine]
ram = "16M"

[[steps]]
command = "dump-guest-memory"
arguments = { paging = false, protocol = "file:{tmp}/d", detach = true }

[[steps]]
command = "stop"

[[steps]]
wait-event = "DUMP_COMPLETED"
where = { result.status = "completed" }
timeout = 5

[[steps]]
wait-event = "STOP"
timeout = 5

[[steps]]
wait-event = "SHUTDOWN"
timeout = 0.2
"""
    async with running(text, tmp_path) as run:
        with pytest.raises(ScenarioError) as error:
            await run_scenario(run.machine, run.scenario)
    assert str(error.value) == "t.toml:20: steps[4]: no SHUTDOWN within 0.2 s"


async def test_bad_drive_fails_at_its_line(tmp_path: Path) -> None:
    text = '[[images]]\nname = "a"\n\n[[drives]]\nquorum = ["a"]\nnode-name = "q"\n'
    text += "vote-threshold = 2\n"
    async with running(text, tmp_path) as run:
        with pytest.raises(ScenarioError) as error:
            await run_scenario(run.machine, run.scenario)
    assert str(error.value) == "t.toml:4: drives[0]: threshold may not exceed children count"


async def test_bundled_demo_raises_all_seven_seed_events(tmp_path: Path) -> None:
    scenario = bundled_scenario("demo")
    async with running(scenario.text, tmp_path) as run:
        await run_scenario(run.machine, run.scenario)
        await run.settle()
        names = {event.name for event in run.events}
        assert names >= SEED_EVENTS
        # Five toggles in 0.4 s: the limiter sends fewer, the latest (open) last.
        vserport = run.data("VSERPORT_CHANGE")
        assert 2 <= len(vserport) < 5 and vserport[-1] == {"id": "vs0", "open": True}
        assert run.machine.server.rate_limiter.dropped >= 1
        assert run.data("GUEST_PANICKED") == [{"action": "pause"}]
        assert run.data("QUORUM_FAILURE")[0]["reference"] == "disk0"
        assert [d["pass"] for d in run.data("MIGRATION_PASS")] == [1, 2, 3]

"""The bundled scenarios, one per seed event: each raises its events in QEMU's order.

Each runs in-process against a machine with QEMU's rate limiter (1 s), watched
by a real client connected before the timeline starts.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from qmpevents.client.connection import connect
from qmpevents.schema.events import Event
from qmpevents.sim.config import MonitorEndpoint, PanicAction
from qmpevents.sim.machine import Machine
from qmpevents.sim.scenario import bundled_scenario, bundled_scenarios
from qmpevents.sim.scenario_runner import run_scenario

SEED_SCENARIOS = ("dump", "migration", "panic", "quorum", "unplug", "vserport")


@dataclass
class Watched:
    """What the client received: (arrival time, event) in order."""

    machine: Machine
    received: list[tuple[float, Event]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [event.name for _, event in self.received]

    def data(self, name: str | None = None) -> list[dict[str, Any]]:
        return [
            dict(event.to_message().get("data", {}))
            for _, event in self.received
            if name is None or event.name == name
        ]


@asynccontextmanager
async def watched(
    name: str, tmp_path: Path, panic_action: PanicAction | None = None
) -> AsyncIterator[Watched]:
    """Run bundled scenario ``name`` with a client watching from before its first step."""
    scenario = bundled_scenario(name)
    config = scenario.machine_config()
    if panic_action is not None:
        config.panic_action = panic_action
    path = str(tmp_path / "qmp.sock")
    config.monitors.append(MonitorEndpoint("unix", path=path))
    machine = Machine(config, stdout=io.StringIO(), stderr=io.StringIO())
    await machine.start()
    run = Watched(machine)
    try:
        async with connect(path) as qmp:
            listener = qmp.events()

            async def record() -> None:
                async for item in listener:
                    if isinstance(item, Event):
                        run.received.append((time.monotonic(), item))

            recorder = asyncio.ensure_future(record())
            try:
                await run_scenario(machine, scenario, workdir=tmp_path)
                async with asyncio.timeout(5):  # what the limiter still holds
                    while machine.server.rate_limiter.pending():
                        await asyncio.sleep(0.02)
                await qmp.execute("query-status")  # every event sent so far is read
                yield run
            finally:
                recorder.cancel()
    finally:
        await machine.server.close()


def test_one_bundled_scenario_per_seed_event() -> None:
    assert bundled_scenarios() == ["demo", *SEED_SCENARIOS]
    for name in bundled_scenarios():
        assert bundled_scenario(name).spec.description


async def test_panic_pause(tmp_path: Path) -> None:
    async with watched("panic", tmp_path) as run:
        assert run.names == ["GUEST_PANICKED", "STOP", "RESUME", "GUEST_CRASHLOADED"]
        assert run.data("GUEST_PANICKED") == [{"action": "pause"}]
        assert run.data("GUEST_CRASHLOADED") == [{"action": "run"}]


async def test_panic_follows_the_panic_action(tmp_path: Path) -> None:
    # -action panic=none: the guest keeps running, so `cont` sends nothing.
    async with watched("panic", tmp_path, panic_action="none") as run:
        assert run.names == ["GUEST_PANICKED", "GUEST_CRASHLOADED"]
        assert run.data() == [{"action": "run"}, {"action": "run"}]


async def test_dump(tmp_path: Path) -> None:
    async with watched("dump", tmp_path) as run:
        assert run.names == ["STOP", "DUMP_COMPLETED", "RESUME"]
        result = run.data("DUMP_COMPLETED")[0]["result"]
        assert result["status"] == "completed"
        assert result["completed"] == result["total"] == run.machine.memory.dump_size
        assert (tmp_path / "guest.dump").stat().st_size > 64 << 20


async def test_migration(tmp_path: Path) -> None:
    async with watched("migration", tmp_path) as run:
        names = run.names
        assert names[0] == "MIGRATION" and run.data()[0] == {"status": "setup"}
        passes = [d["pass"] for d in run.data("MIGRATION_PASS")]
        assert len(passes) >= 2 and passes == list(range(1, len(passes) + 1))
        statuses = [d["status"] for d in run.data("MIGRATION")]
        assert statuses == ["setup", "active", "completed"]
        completed = next(
            index
            for index, (_, event) in enumerate(run.received)
            if event.name == "MIGRATION" and run.data()[index] == {"status": "completed"}
        )
        last_pass = len(names) - 1 - names[::-1].index("MIGRATION_PASS")
        # The source stops for the last pass, completes, then `cont` resumes it.
        assert last_pass < completed and names.index("STOP") < completed
        assert names[completed + 1 :] == ["RESUME"]


async def test_quorum(tmp_path: Path) -> None:
    async with watched("quorum", tmp_path) as run:
        assert run.names == ["QUORUM_REPORT_BAD", "QUORUM_FAILURE"]
        assert run.data() == [
            {"type": "read", "node-name": "qA-c1", "sector-num": 0, "sectors-count": 1},
            {"reference": "disk0", "sector-num": 8, "sectors-count": 1},
        ]


async def test_unplug(tmp_path: Path) -> None:
    async with watched("unplug", tmp_path) as run:
        assert run.names == [
            "MEM_UNPLUG_ERROR",
            "DEVICE_UNPLUG_GUEST_ERROR",
            "DEVICE_UNPLUG_GUEST_ERROR",
        ]
        assert run.data("MEM_UNPLUG_ERROR") == [
            {"device": "dimm1", "msg": "Memory hotunplug rejected by the guest for device dimm1"}
        ]
        assert run.data("DEVICE_UNPLUG_GUEST_ERROR")[0] == {
            "device": "dimm1",
            "path": "/machine/peripheral/dimm1",
        }
        assert run.machine.devices.unplug_pending == set()


async def test_vserport_burst_is_held_back_per_id(tmp_path: Path) -> None:
    async with watched("vserport", tmp_path) as run:
        assert run.data() == [
            {"id": "vs0", "open": True},
            {"id": "vs1", "open": True},  # another id: not held by vs0's burst
            {"id": "vs0", "open": True},  # the latest of the burst, a second after the first
        ]
        first, late = run.received[0][0], run.received[2][0]
        assert late - first >= 0.8
        assert run.machine.server.rate_limiter.dropped == 3


@pytest.mark.parametrize("name", SEED_SCENARIOS)
def test_scenario_machine_has_what_its_steps_need(name: str) -> None:
    # The loader checks the guest actions against the machine; this names it per file.
    config = bundled_scenario(name).machine_config()
    assert config.pvpanic or name != "panic"
    assert config.vserports or name != "vserport"
    assert config.dimms or name != "unplug"

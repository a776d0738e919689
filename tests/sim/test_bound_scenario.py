"""``-x-sim-scenario``: a timeline bound to a machine someone else started."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import pytest

from qmpevents.client.connection import QMPClient
from qmpevents.errors import ConfigError
from qmpevents.schema.events import Event
from qmpevents.sim.bound_scenario import load_bound_scenario, play_bound_scenario
from qmpevents.sim.cmdline import parse_command_line
from qmpevents.sim.machine import Machine

PANIC = '[[steps]]\nguest = "panic"\nvalue = 1\n'


def test_a_bound_scenario_has_no_machine_table(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('[machine]\ntype = "pc"\n\n' + PANIC)
    with pytest.raises(ConfigError, match=r"\[machine\] describes a machine"):
        load_bound_scenario(path)


async def test_the_timeline_starts_at_the_guests_first_run(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(PANIC)
    scenario = load_bound_scenario(path)
    tmp = tempfile.mkdtemp(prefix="qs-")
    argv = [
        "-S", "-device", "pvpanic", "-action", "panic=none",
        "-qmp", f"unix:{tmp}/q.sock,server=on,wait=off",
    ]  # fmt: skip
    machine = Machine(parse_command_line(argv))
    await machine.start()
    player = asyncio.create_task(play_bound_scenario(machine, scenario))
    try:
        async with QMPClient(f"{tmp}/q.sock") as client:
            events = client.events()
            await asyncio.sleep(0.2)
            assert not player.done()  # prelaunch: the guest has not run yet
            await client.execute("cont")
            await asyncio.wait_for(player, 10)
            await client.execute("query-status")
            names = []
            while (item := events.get_nowait()) is not None:
                if isinstance(item, Event):
                    names.append(item.name)
    finally:
        player.cancel()
        await machine.server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    assert names == ["RESUME", "GUEST_PANICKED"]

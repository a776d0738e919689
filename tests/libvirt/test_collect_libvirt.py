"""``collect`` from a libvirt host: every domain's events into SQLite, libvirtd restarts as gaps."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from qmpevents.cli import main
from qmpevents.collect.collector import Collector
from qmpevents.collect.config import CollectorConfig, load_config
from qmpevents.collect.history import History
from qmpevents.collect.records import EventRecord, GapRecord
from tests.libvirt.host import URI, Domain, restart_libvirtd, virsh

pytestmark = pytest.mark.timeout(180)


def stored(db: Path, vm: str) -> list[EventRecord | GapRecord]:
    with History(db) as history:
        return [r for r in history.query(vm=vm) if isinstance(r, EventRecord | GapRecord)]


async def until(condition: Callable[[], bool], what: str) -> None:
    async with asyncio.timeout(60):
        while not condition():
            await asyncio.sleep(0.1)


async def test_domains_into_sqlite_across_a_libvirtd_restart(
    domains: Callable[..., Domain], tmp_path: Path
) -> None:
    watched, other = domains(), domains()
    db = tmp_path / "events.db"
    config = CollectorConfig(libvirt=(f"{URI}?domain={watched.name}",), db=db, batch_interval=0.05)
    collector = Collector(config)
    await collector.start()
    try:
        for domain in (watched, other):
            await asyncio.to_thread(domain.start)
        await until(lambda: watched.name in collector.endpoints, "the domain attached")
        endpoint = collector.endpoints[watched.name]
        await until(lambda: endpoint.connected, "the domain attached")
        await asyncio.to_thread(virsh, "suspend", watched.name)
        await asyncio.to_thread(virsh, "suspend", other.name)  # not ours
        await asyncio.to_thread(restart_libvirtd)
        await until(lambda: endpoint.connected, "re-registered after the restart")
        await asyncio.to_thread(virsh, "resume", watched.name)
        # An action's command goes through libvirt too.
        status = await endpoint.execute("query-status", timeout=30)
        assert status["running"] is True

        def names() -> list[str]:
            return [r.name for r in stored(db, watched.name) if isinstance(r, EventRecord)]

        await until(lambda: names()[-2:] == ["STOP", "RESUME"], "the events stored")
    finally:
        await collector.aclose()
    records = stored(db, watched.name)
    gaps = [r for r in records if isinstance(r, GapRecord)]
    restart = [g for g in gaps if "libvirt connection" in g.reason]
    assert len(restart) == 1 and restart[0].ended is not None, gaps
    assert set(collector.endpoints) == set()
    with History(db) as history:
        assert {r.vm for r in history.query()} == {watched.name}


def test_libvirt_in_the_config_file_and_on_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "collect.toml"
    path.write_text('[collector]\nlibvirt = "qemu:///system?domain=web"\n')
    assert load_config(path).libvirt == ("qemu:///system?domain=web",)
    path.write_text('[collector]\nlibvirt = ["qemu://"]\n')
    with pytest.raises(Exception, match=r"libvirt: 'qemu://': a libvirt URI needs a path"):
        load_config(path)
    path.write_text('[[vm]]\nname = "x"\ntarget = "qemu:///system"\n')
    with pytest.raises(Exception, match=r"\[collector\] libvirt = \[\.\.\.\]"):
        load_config(path)
    twice = CliRunner().invoke(main, ["collect", "qemu:///system", "qemu:///system"])
    assert twice.exit_code == 2 and "given twice" in twice.output

"""``collect --listen``: real QEMU 7.2 guests connect to the collector, as to qmeventd."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmpevents.collect.collector import Collector
from qmpevents.collect.config import CollectorConfig
from qmpevents.collect.endpoints import ConnectPolicy
from tests.collect.listen_qemu import Fleet, not_qemu, require_qemu
from tests.collect.sources import stored
from tests.collect.test_collector import received, wait_for

pytestmark = pytest.mark.qemu

WAIT = 30.0  # bound on every wait for the guests (QEMU boots, then reconnects each second)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    fleet = Fleet(require_qemu(), tmp_path, tmp_path / "qmp.sock")
    yield fleet
    fleet.close()


def collector_for(fleet: Fleet, tmp_path: Path) -> Collector:
    config = CollectorConfig(listen=(fleet.listen,), db=tmp_path / "events.db", batch_interval=0.05)
    collector = Collector(config)
    collector.policy = ConnectPolicy(greeting_timeout=1.0)  # the silent peer is dropped sooner
    return collector


def connected(collector: Collector, *names: str) -> bool:
    endpoints = collector.endpoints
    return all(name in endpoints and endpoints[name].connected for name in names)


async def test_three_qemus_are_recorded_under_their_names_and_bad_peers_dropped(
    fleet: Fleet, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "qmpevents.sources.listen")
    collector = collector_for(fleet, tmp_path)
    await collector.start()
    names = ("alpha", "beta", "gamma")
    try:
        # The three spellings of -name that name a guest.
        guests = [
            await fleet.boot("guest=alpha"),
            await fleet.boot("beta,process=qemu-beta"),
            await fleet.boot("process=qemu-gamma,guest=gamma,debug-threads=on"),
        ]
        garbage = not_qemu(fleet.listen, b"HELLO, not QMP\r\n")
        silent = not_qemu(fleet.listen, b"")
        await wait_for(lambda: connected(collector, *names), WAIT)
        for guest in guests:
            await fleet.run(guest, "cont", "stop")
        await wait_for(lambda: all(received(collector, name) == 2 for name in names), WAIT)
        # Both impostors were dropped (they saw EOF), each with one line naming its pid.
        for peer in (garbage, silent):
            assert await asyncio.to_thread(peer.wait, WAIT) == 0
        lines = [r.getMessage() for r in caplog.records]
        assert len([m for m in lines if f"peer pid {garbage.pid} " in m]) == 1, lines
        assert len([m for m in lines if f"peer pid {silent.pid} " in m]) == 1, lines
        assert any("HELLO, not QMP" in m for m in lines)
        assert any("no QMP greeting within 1.0 s" in m for m in lines)
        assert connected(collector, *names)  # nothing else was affected
        assert set(collector.endpoints) == set(names)
    finally:
        await collector.aclose()
    events, _gaps = stored(tmp_path / "events.db")
    for name in names:
        assert [e.name for e in events[name]] == ["RESUME", "STOP"]
    assert set(events) == set(names)
    assert not fleet.listen.exists()  # the collector removed its socket


async def test_a_restarted_qemu_is_the_same_vm_with_a_gap(fleet: Fleet, tmp_path: Path) -> None:
    collector = collector_for(fleet, tmp_path)
    await collector.start()
    try:
        first = await fleet.boot("guest=phoenix,process=qemu-phoenix")
        await wait_for(lambda: connected(collector, "phoenix"), WAIT)
        await fleet.run(first, "cont")
        await wait_for(lambda: received(collector, "phoenix") == 1, WAIT)
        fleet.kill(first)
        await wait_for(lambda: not connected(collector, "phoenix"), WAIT)
        second = await fleet.boot("phoenix")
        await wait_for(lambda: connected(collector, "phoenix"), WAIT)
        await fleet.run(second, "cont")
        await wait_for(lambda: received(collector, "phoenix") == 2, WAIT)
        assert list(collector.endpoints) == ["phoenix"]
    finally:
        await collector.aclose()
    events, gaps = stored(tmp_path / "events.db")
    assert [e.name for e in events["phoenix"]] == ["RESUME", "RESUME"]
    before, after = events["phoenix"]
    lost = [g for g in gaps["phoenix"] if g.reason.startswith("connection lost")]
    assert len(lost) == 1, gaps["phoenix"]
    (gap,) = lost
    assert gap.ended is not None
    assert before.received_at <= gap.started <= gap.ended <= after.received_at
    assert "the peer closed the connection" in gap.reason

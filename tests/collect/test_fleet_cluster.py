"""The fleet on a 3-node NATS cluster: three hosts, one central archive, failures on the way.

Three ``qmpevents collect --nats ... --host hostN --replicas 3`` processes, each fed by
two simulated VMs, and one ``qmpevents collect nats://... --db central.db`` archive.
Mid-stream one NATS node is killed (SIGKILL) and restarted, one VM goes away and comes
back (a gap, opened then closed), and the archive is killed (SIGKILL) and restarted.
Meanwhile ``qmpevents watch nats://... --event GUEST_PANICKED`` shows the panics of
every VM of every host, replayed and then live, and nothing else.
At the end every event every host published is in the central database exactly once
(message ids and counts compared with the stream and with what the VMs sent).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import signal
import sqlite3
import sys
import time
from pathlib import Path

import nats
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

from qmpevents.collect.fanout import COLLECTOR_STOPPED
from qmpevents.collect.history import History
from qmpevents.collect.records import EventRecord, GapRecord
from qmpevents.sources.nats import parse_gap
from tests.collect.nats_cluster import Cluster, nats_binary
from tests.collect.sources import Source
from tests.collect.test_cli_collect import CollectorProcess, wait_for


def archived_ids(db: Path) -> list[str]:
    try:
        with contextlib.closing(sqlite3.connect(db)) as conn:
            return [row[0] for row in conn.execute("SELECT msg_id FROM archive_events")]
    except sqlite3.Error:  # not created yet
        return []


async def stream_contents(
    url: str, timeout: float = 30.0
) -> tuple[list[str], dict[tuple[str, float], bool]]:
    """Every event message id in the stream, and each gap (vm, started) -> closed."""
    nc = await nats.connect(url.split(","))
    try:
        js = nc.jetstream(timeout=5)
        info = await js.stream_info("QMP_EVENTS")
        total = info.state.messages
        sub = await js.pull_subscribe(
            "qmp.>", stream="QMP_EVENTS", config=ConsumerConfig(ack_policy=AckPolicy.NONE)
        )
        ids: list[str] = []
        gaps: dict[tuple[str, float], bool] = {}
        seen = 0
        deadline = time.monotonic() + timeout
        while seen < total:
            assert time.monotonic() < deadline, f"read {seen} of {total} messages"
            with contextlib.suppress(TimeoutError, nats.errors.TimeoutError):
                for msg in await sub.fetch(500, timeout=1):
                    seen += 1
                    if msg.subject.endswith("._GAP"):
                        gap = parse_gap(msg.data)
                        key = (gap.vm, gap.started)
                        gaps[key] = gaps.get(key, False) or gap.ended is not None
                    else:
                        assert msg.headers is not None
                        ids.append(msg.headers["Nats-Msg-Id"])
        return ids, gaps
    finally:
        await nc.close()


WATCH = (sys.executable, "-c", "from qmpevents.cli import main; main()", "watch")


def canonical(raw: bytes) -> str:
    return json.dumps(json.loads(raw), sort_keys=True)


async def read_panics(process: asyncio.subprocess.Process, seen: set[tuple[str, str]]) -> None:
    """Each ``watch --json`` event as (vm, event); an event but a panic fails the test.

    The hosts' gaps are shown too (the VM of host0 that went away; none before a
    VM's first connection), as gaps of a VM of the fleet.
    """
    assert process.stdout is not None
    async for line in process.stdout:
        item = json.loads(line)
        if "gap" in item:
            assert item["vm"].split("-")[0] in ("host0", "host1", "host2"), item
            continue
        assert item["event"]["event"] == "GUEST_PANICKED", item
        seen.add((item["vm"], json.dumps(item["event"], sort_keys=True)))


@pytest.fixture
async def cluster(tmp_path: Path):  # type: ignore[no-untyped-def]
    cluster = Cluster(nats_binary(), tmp_path)
    cluster.start()
    try:
        await cluster.wait_formed()
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.timeout(300)  # a cluster, four collectors and a watch: 20-75 s on 2 cores
async def test_three_hosts_one_archive_node_and_archive_killed_every_event_once(
    tmp_path: Path, cluster: Cluster
) -> None:
    hosts = [f"host{i}" for i in range(3)]
    vms = {
        host: [
            await Source(f"{host}-vm{j}", tmp_path / f"{host}-vm{j}.qmp").start() for j in range(2)
        ]
        for host in hosts
    }
    collectors = {
        host: CollectorProcess(
            "--db",
            str(tmp_path / f"{host}.db"),
            "--nats",
            cluster.url,
            "--host",
            host,
            "--replicas",
            "3",
            "--batch-interval",
            "0.02",
            *(str(vm.path) for vm in vms[host]),
        )
        for host in hosts
    }
    central = tmp_path / "central.db"
    archive_args = (cluster.url, "--db", str(central), "--replicas", "3")
    archive = CollectorProcess(*archive_args)
    for process in collectors.values():
        await process.start()
    await archive.start()
    for process in collectors.values():
        await wait_for(lambda p=process: sum("connected to" in line for line in p.lines) == 2)
    every = [vm for host in hosts for vm in vms[host]]

    def emit(count: int) -> None:
        for vm in every:
            vm.emit(count)

    def sent() -> int:
        return sum(len(vm.sent) for vm in every)

    emit(100)
    cluster.nodes[1].kill()  # mid-stream: a NATS node dies
    emit(100)
    await asyncio.sleep(0.5)
    emit(100)
    cluster.nodes[1].start()  # and comes back with its store

    # one VM goes away and comes back: a gap, opened then closed, on host0
    away = vms["host0"][0]
    await away.close()
    await wait_for(
        lambda: any("lost" in line or "closed" in line for line in collectors["host0"].lines)
    )
    back = Source(away.name, away.path)
    back.sent = away.sent
    vms["host0"][0] = back
    every[0] = back
    await back.start()
    await wait_for(
        lambda: sum("connected to" in line for line in collectors["host0"].lines) == 3, 30
    )

    emit(100)
    await wait_for(lambda: len(archived_ids(central)) > 0, 60)
    assert archive.process is not None
    archive.process.send_signal(signal.SIGKILL)  # the archive dies mid-stream
    await archive.process.wait()
    emit(100)
    archive = CollectorProcess(*archive_args)
    await archive.start()
    # A live view of the whole fleet: every host's panics, and nothing else.
    before = {vm.name: len(vm.sent) for vm in every}
    seen: set[tuple[str, str]] = set()
    watcher = await asyncio.create_subprocess_exec(
        *WATCH,
        cluster.url,
        "--event",
        "GUEST_PANICKED",
        "--since",
        "1h",
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    reader = asyncio.create_task(read_panics(watcher, seen))
    try:
        await wait_for(lambda: len(seen) >= 6, 60)  # the replay has begun
        emit(100)
        live = {
            vm.name: {canonical(raw) for raw in vm.sent[before[vm.name] :] if b"PANICKED" in raw}
            for vm in every
        }
        await wait_for(lambda: all(live[vm] & {e for v, e in seen if v == vm} for vm in live), 60)
    finally:
        watcher.kill()
        await watcher.wait()
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader

    await wait_for(lambda: len(archived_ids(central)) >= sent(), 120)
    for process in collectors.values():
        assert await process.stop(signal.SIGTERM) == 0, process.lines

    stream_ids, stream_gaps = await stream_contents(cluster.url)
    assert len(stream_ids) == len(set(stream_ids)) == sent()  # JetStream kept each once

    def archive_has_the_gaps() -> bool:
        with History(central) as history:
            return len([r for r in history.query() if isinstance(r, GapRecord)]) >= len(stream_gaps)

    await wait_for(archive_has_the_gaps, 60)
    assert await archive.stop(signal.SIGTERM) == 0, archive.lines

    ids = archived_ids(central)
    assert len(ids) == len(set(ids)) == sent()  # exactly once
    assert set(ids) == set(stream_ids)
    with History(central) as history:
        records = history.query()
        for host in hosts:  # every host's events, each as its VM sent it
            got = collections.Counter(
                (r.vm, r.raw) for r in history.query(host=host) if isinstance(r, EventRecord)
            )
            assert got == collections.Counter((vm.name, raw) for vm in vms[host] for raw in vm.sent)
    gaps = [r for r in records if isinstance(r, GapRecord)]
    assert {(g.vm, g.started) for g in gaps} == set(stream_gaps)  # one row per gap
    for gap in gaps:
        assert (gap.ended is not None) == stream_gaps[(gap.vm, gap.started)]
        assert gap.host == gap.vm.split("-")[0]
    lost = [g for g in gaps if g.vm == away.name and "closed the connection" in g.reason]
    assert len(lost) == 1 and lost[0].ended is not None, gaps  # open, then closed: one row
    # and no gap before a VM's first connection: only the loss and the VMs' stops
    stops = [g for g in gaps if g is not lost[0]]
    assert {g.reason for g in stops} <= {COLLECTOR_STOPPED}, gaps
    assert len({g.vm for g in stops}) == len(stops), gaps
    for vm in every:
        await vm.close()

"""A watched socket whose file name is not UTF-8: its VM is ``vm\\xff``, everywhere.

On a collector whose SQLite writer dies of the name (UnicodeEncodeError), nothing of
any VM is stored afterwards, NATS retries the batch for ever and ``/metrics`` answers
500: the bounded waits below fail.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

from qmpevents.collect.collector import Collector
from qmpevents.collect.config import CollectorConfig
from qmpevents.collect.nats_sink import GAP_TOKEN
from tests.collect.conftest import NatsServer
from tests.collect.sources import Source, stored
from tests.collect.test_nats_sink import read_stream

ESCAPED = "vm\\xff"  # the four characters v, m, backslash, x, f, f: what b"vm\xff" decodes to


async def wait_for(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


def scrape(port: int) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        return reply.status, reply.read().decode()


async def test_a_socket_named_with_bytes_that_are_not_utf8(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    watched = tmp_path / "run"
    watched.mkdir()
    undecodable = Path(os.fsdecode(os.fsencode(watched) + b"/vm\xff.sock"))
    bad = await Source("bad", undecodable).start()
    good = await Source("good", watched / "good.sock").start()
    assert b"vm\xff.sock" in os.listdir(os.fsencode(watched))  # a real file name of bytes
    collector = Collector(
        CollectorConfig(
            watch_dir=watched,
            watch_interval=0.02,
            db=tmp_path / "events.db",
            batch_interval=0.02,
            nats=nats_server.url,
            metrics="127.0.0.1:0",
        )
    )
    await collector.start()
    try:
        await wait_for(
            lambda: (
                len(collector.endpoints) == 2
                and all(e.connected for e in collector.endpoints.values())
            )
        )
        bad.emit(20)
        good.emit(20)
        await wait_for(lambda: collector.sqlite.committed >= 40 + 2)  # and two connections
        await wait_for(lambda: collector.nats is not None and collector.nats.published >= 40)
        assert set(collector.endpoints) == {ESCAPED, "good"}
        assert collector.metrics_server is not None
        status, text = scrape(collector.metrics_server.port)
        assert status == 200
        assert 'qmpevents_vm_connected{vm="vm\\\\xff"} 1.0' in text  # label escaping: \\ is \
        bad.emit(5)  # the writer is alive: both VMs are still stored
        good.emit(5)
        await wait_for(lambda: collector.sqlite.committed >= 52)
        before = collector.metrics.value("qmpevents_reconnects_total", vm=ESCAPED) or 0
        for monitor in tuple(bad.server._monitors):  # a loss (the socket stays): its gap's
            monitor.close()  # reason names the socket path, bytes and all
        await wait_for(
            lambda: collector.metrics.value("qmpevents_reconnects_total", vm=ESCAPED) == before + 1
        )
        await wait_for(lambda: collector.sqlite.depth == 0 and collector.sqlite.committed >= 53)
    finally:
        await collector.aclose()
    events, gaps = stored(tmp_path / "events.db")
    assert collections.Counter(r.raw for r in events[ESCAPED]) == bad.counts()
    assert collections.Counter(r.raw for r in events["good"]) == good.counts()
    lost = [gap for gap in gaps[ESCAPED] if gap.reason.startswith("connection lost")]
    assert lost and "vm\\xff.sock" in lost[0].reason, gaps[ESCAPED]
    messages = await read_stream(nats_server.url, 50)
    subjects = {m.subject for m in messages if not m.subject.endswith(GAP_TOKEN)}
    assert "qmp.vm\\xff.MIGRATION_PASS" in subjects
    assert {m.headers["Qmp-Vm"] for m in messages if m.headers} == {ESCAPED, "good"}
    assert sum(collector.sqlite.rejected.values()) == 0  # stored under its escaped name
    assert collector.nats is not None and sum(collector.nats.rejected.values()) == 0
    await bad.close()
    await good.close()

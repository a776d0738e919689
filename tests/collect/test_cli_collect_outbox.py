"""``qmpevents collect --db --nats`` as a process while NATS is away: prompt stop, no loss.

On the old design the collector spent its 10 s NATS close timeout on SIGTERM, exited 1
(records dropped) and the restarted collector never published what the first one had
received: the status, the bound and the stream contents below fail there.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import urllib.request
from pathlib import Path

from qmpevents.collect.nats_messages import GAP_TOKEN
from tests.collect.conftest import NatsServer
from tests.collect.sources import Source, stored
from tests.collect.test_cli_collect import CollectorProcess, committed, wait_for
from tests.collect.test_cli_collect_stop import free_port
from tests.collect.test_nats_sink import read_stream


def backlog(port: int) -> float | None:
    """``qmpevents_nats_backlog`` from the collector's /metrics (``None``: not yet up)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("qmpevents_nats_backlog "):
            return float(line.split()[1])
    return None


async def test_with_nats_away_sigterm_is_prompt_and_a_restart_publishes_it_all(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    vm = await Source("vm", tmp_path / "vm.sock").start()
    db, port = tmp_path / "events.db", free_port()
    args = ("--db", str(db), "--nats", nats_server.url, "--batch-interval", "0.02")
    nats_server.stop()  # away for the whole first run
    first = CollectorProcess(*args, "--metrics", str(port), str(vm.path))
    await first.start()
    assert first.process is not None
    await wait_for(lambda: any("connected to" in line for line in first.lines))
    vm.emit(300)
    await wait_for(lambda: committed(db) == 300)
    await wait_for(lambda: (backlog(port) or 0) >= 300)  # the events and the first gap
    first.process.send_signal(signal.SIGTERM)
    # a bound on waiting, not a timing: the old collector took its 10 s NATS timeout
    status = await asyncio.wait_for(first.process.wait(), 10)
    assert status == 0, first.lines  # nothing lost: the backlog is in the journal
    assert any("stay in the journal" in line for line in first.lines), first.lines
    events, gaps = stored(db)
    assert [r.raw for r in events["vm"]] == vm.sent

    nats_server.start()
    second = CollectorProcess(*args, "--metrics", str(port), str(vm.path))
    await second.start()
    await wait_for(lambda: any("connected to" in line for line in second.lines))
    await wait_for(lambda: backlog(port) == 0, timeout=30)
    assert await second.stop(signal.SIGTERM) == 0, second.lines

    events, gaps = stored(db)
    gap_writes = 2 * len(gaps["vm"]) - 1  # each gap opened and closed, the last one open
    messages = await read_stream(nats_server.url, len(vm.sent) + gap_writes)
    assert all(m.headers for m in messages)
    ids = [m.headers["Nats-Msg-Id"] for m in messages if m.headers]
    assert len(messages) == len(set(ids)) == len(vm.sent) + gap_writes
    published = collections.Counter(m.data for m in messages if not m.subject.endswith(GAP_TOKEN))
    assert published == vm.counts()  # everything from the outage, exactly once
    event_data = [m.data for m in messages if not m.subject.endswith(GAP_TOKEN)]
    assert event_data == vm.sent  # in order
    await vm.close()

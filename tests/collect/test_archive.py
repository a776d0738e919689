"""The central archive against a real nats-server: redelivery makes no second row."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from qmpevents.collect.archive import Archive
from qmpevents.collect.archive_store import ArchiveStore
from qmpevents.collect.fleet_publish import HostOutbox
from qmpevents.collect.history import History
from qmpevents.collect.records import EventRecord, GapRecord, Record
from qmpevents.collect.sqlite_store import BatchPolicy, SQLiteStore
from tests.collect.conftest import NatsServer, event_record
from tests.collect.test_cli_collect_stop import free_port
from tests.collect.test_nats_sink import wait_for


class NeverAcks(Archive):
    """An archive that dies between its commit and its acknowledgements."""

    async def _archive(self, messages: list[Msg]) -> None:
        async def no_ack() -> None:
            return None

        for msg in messages:
            msg.ack = no_ack  # type: ignore[method-assign]
        await super()._archive(messages)


def central_ids(db: Path) -> list[str]:
    store = ArchiveStore(db)
    try:
        return store.message_ids()
    finally:
        store.close()


async def test_redelivered_messages_are_archived_once_with_host_and_closed_gaps(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    journal = SQLiteStore(tmp_path / "host.db", batching=BatchPolicy(size=100, interval=0.01))
    await journal.start()
    outbox = HostOutbox(nats_server.url, journal, host="hv 7", retry_initial=0.05)
    await outbox.start()
    records: list[Record] = [event_record("vm.a", i) for i in range(300)]
    records += [GapRecord("vm.a", 5.0, None, "lost"), GapRecord("vm.a", 5.0, 9.0, "lost")]
    for record in records:
        journal.submit(record)
    await wait_for(lambda: journal.depth == 0 and outbox.backlog == 0)
    await outbox.aclose()
    await journal.aclose()

    central = tmp_path / "central.db"
    first = NeverAcks([nats_server.url], central, ack_wait=1.0, fetch_timeout=0.2)
    task = asyncio.create_task(first.run())
    await wait_for(lambda: first.stored >= 302)
    first.stop()
    await task
    assert len(central_ids(central)) == 300

    second = Archive([nats_server.url], central, ack_wait=1.0, fetch_timeout=0.2)
    task = asyncio.create_task(second.run())
    await wait_for(lambda: second.duplicates >= 300, timeout=30)  # all redelivered
    second.stop()
    await task
    ids = central_ids(central)
    assert len(ids) == len(set(ids)) == 300
    with History(central) as history:
        got = history.query(host="hv 7")
        assert history.query(host="elsewhere") == []
        assert [s.count for s in history.stats(host="hv 7")] == [300]
    events = [r for r in got if isinstance(r, EventRecord)]
    assert [e.raw for e in events] == [r.raw for r in records if isinstance(r, EventRecord)]
    assert all(e.host == "hv 7" for e in events)
    assert [r for r in got if isinstance(r, GapRecord)] == [
        GapRecord("vm.a", 5.0, 9.0, "lost", host="hv 7")
    ]


async def test_an_unreachable_nats_is_logged_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The archive never waits silently: each failed attempt is a log line and a failure."""
    port = free_port()  # nothing listens there
    archive = Archive(
        [f"nats://127.0.0.1:{port}"], tmp_path / "central.db", connect_timeout=0.3, retry_max=0.2
    )
    task = asyncio.create_task(archive.run())
    await wait_for(lambda: archive.failures >= 2)
    archive.stop()
    await asyncio.wait_for(task, 10)
    assert f"NATS nats://127.0.0.1:{port}: no answer within 0.3 s" in caplog.text
    assert archive.stored == 0

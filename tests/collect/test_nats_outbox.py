"""The NATS outbox against a real nats-server and a real SQLite journal.

On the old design (NATS fed from a bounded in-memory buffer, beside SQLite) an outage
longer than the buffer drops records, and a restart forgets what was not published:
the exact counts below fail there.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from nats.aio.msg import Msg

from qmpevents.collect.metrics import CollectorMetrics
from qmpevents.collect.nats_messages import message_id
from qmpevents.collect.nats_outbox import NatsOutbox
from qmpevents.collect.outbox_journal import Cursor, ensure_cursor
from qmpevents.collect.records import Record
from qmpevents.collect.sqlite_schema import connect
from qmpevents.collect.sqlite_store import BatchPolicy, SQLiteStore
from tests.collect.conftest import NatsServer
from tests.collect.test_nats_sink import read_stream, wait_for
from tests.collect.test_outbox_journal import mixed


def ids_by_vm(messages: list[Msg]) -> dict[str, list[str]]:
    """The ``Nats-Msg-Id`` of each VM's messages, in stream order."""
    found: dict[str, list[str]] = collections.defaultdict(list)
    for message in messages:
        assert message.headers is not None
        found[message.headers["Qmp-Vm"]].append(message.headers["Nats-Msg-Id"])
    return found


def expected_by_vm(records: list[Record]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = collections.defaultdict(list)
    for record in records:
        found[record.vm].append(message_id(record))
    return found


@pytest.fixture
async def journal(tmp_path: Path) -> AsyncIterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "events.db", batching=BatchPolicy(size=200, interval=0.02))
    await store.start()
    yield store
    await store.aclose()


def outbox_for(store: SQLiteStore, nats_server: NatsServer, **options: object) -> NatsOutbox:
    settings: dict[str, object] = {
        "page_size": 100,
        "retry_initial": 0.05,
        "retry_max": 0.3,
        "ack_timeout": 1.0,
        "connect_timeout": 0.5,
        "reconnect_wait": 0.1,
    }
    settings.update(options)
    return NatsOutbox(nats_server.url, store, **settings)  # type: ignore[arg-type]


async def test_an_outage_far_longer_than_a_page_loses_nothing_and_keeps_order(
    journal: SQLiteStore, nats_server: NatsServer
) -> None:
    outbox = outbox_for(journal, nats_server)
    metrics = CollectorMetrics()
    metrics.watch_outbox(outbox)
    metrics.watch_sink(outbox)
    await outbox.start()
    sent = mixed(3000)
    first, during, after = sent[:300], sent[300:2700], sent[2700:]
    for record in first:
        journal.submit(record)
    await wait_for(lambda: outbox.backlog == 0 and outbox.cursor == journal.journal_tail)
    assert metrics.value("qmpevents_nats_backlog") == 0

    nats_server.stop()
    for record in during:  # 24 pages' worth while NATS is away
        journal.submit(record)
    await wait_for(lambda: journal.depth == 0 and journal.committed == len(first + during))
    await wait_for(lambda: outbox.failures > 0)
    backlog = metrics.value("qmpevents_nats_backlog")
    assert backlog is not None and backlog >= len(during) - outbox.page_size
    assert metrics.value("qmpevents_sink_queue_depth", sink="nats") == backlog
    assert metrics.value("qmpevents_sink_dropped_total", sink="nats") == 0

    nats_server.start()  # same port, same store
    for record in after:
        journal.submit(record)
    await wait_for(lambda: outbox.backlog == 0 and journal.depth == 0, timeout=60)
    assert metrics.value("qmpevents_nats_backlog") == 0
    assert outbox.last_error is None and outbox.rejected == dict.fromkeys(outbox.rejected, 0)
    await outbox.aclose()

    messages = await read_stream(nats_server.url, len(sent))
    assert len(messages) == len(sent)  # every record, once
    assert ids_by_vm(messages) == expected_by_vm(sent)  # in order per VM
    with contextlib.closing(connect(journal.path)) as conn:
        assert ensure_cursor(conn, "nats") == journal.journal_tail


# A collector's outbox that dies (SIGKILL) after JetStream acknowledged a page and
# before its cursor is stored: the second cursor update never returns.
KILLED = """
import asyncio, sys, time
from pathlib import Path
from qmpevents.collect.nats_outbox import NatsOutbox
from qmpevents.collect.sqlite_store import SQLiteStore

async def main(db, url):
    store = SQLiteStore(Path(db))
    store.open()
    outbox = NatsOutbox(url, store, page_size=500)
    stores = outbox._store
    def store_then_hang(cursor):
        if outbox.cursor.event_id:  # the first page's cursor is stored, not the second's
            print("published", cursor.event_id, flush=True)
            time.sleep(3600)
        stores(cursor)
    outbox._store = store_then_hang
    await outbox.start()
    await asyncio.sleep(3600)

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def test_sigkill_between_publish_and_cursor_update_publishes_no_duplicate(
    tmp_path: Path, nats_server: NatsServer
) -> None:
    path = tmp_path / "events.db"
    store = SQLiteStore(path, batching=BatchPolicy(size=500, interval=0.0))
    await store.start()
    with contextlib.closing(connect(path)) as conn:
        ensure_cursor(conn, "nats")  # as a collector with NATS would at its start
    sent = mixed(1200)
    for record in sent:
        store.submit(record)
    assert store.flush(timeout=20)
    await store.aclose()

    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", KILLED, str(path), nats_server.url, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    line = await asyncio.wait_for(child.stdout.readline(), 30)
    assert line.startswith(b"published"), line
    child.kill()  # SIGKILL: acknowledged by JetStream, cursor not stored
    await child.wait()
    with contextlib.closing(connect(path)) as conn:
        stored_cursor = ensure_cursor(conn, "nats")
    assert Cursor() < stored_cursor < store.journal_tail  # the first page only

    restarted = SQLiteStore(path)
    await restarted.start()
    outbox = NatsOutbox(nats_server.url, restarted, page_size=500)
    await outbox.start()
    await wait_for(lambda: outbox.backlog == 0)
    # it resumed at the cursor: the first page was not published again...
    assert outbox.published == stored_cursor.behind(restarted.journal_tail)
    await outbox.aclose()
    await restarted.aclose()
    # ...and the second page, published twice, is in the stream once
    messages = await read_stream(nats_server.url, len(sent))
    ids = [m.headers["Nats-Msg-Id"] for m in messages if m.headers]
    assert len(messages) == len(set(ids)) == len(sent)
    assert ids_by_vm(messages) == expected_by_vm(sent)


async def test_stopping_with_nats_away_is_prompt_and_keeps_the_backlog(
    journal: SQLiteStore, nats_server: NatsServer
) -> None:
    nats_server.stop()
    outbox = outbox_for(journal, nats_server, connect_timeout=30.0, ack_timeout=30.0)
    await outbox.start()
    sent = mixed(400)
    for record in sent:
        journal.submit(record)
    await wait_for(lambda: journal.depth == 0 and outbox.backlog == len(sent))
    # a bound, not a timing: an outbox that waits for NATS (30 s to connect) fails here
    left = await asyncio.wait_for(outbox.aclose(), 10)
    assert left == len(sent) and outbox.dropped == 0
    nats_server.start()
    again = outbox_for(journal, nats_server)
    await again.start()
    await wait_for(lambda: again.backlog == 0)
    await again.aclose()
    messages = await read_stream(nats_server.url, len(sent))
    assert ids_by_vm(messages) == expected_by_vm(sent)


async def test_submit_is_refused_records_go_through_the_journal(
    journal: SQLiteStore, nats_server: NatsServer
) -> None:
    outbox = outbox_for(journal, nats_server)
    with pytest.raises(TypeError):
        outbox.submit(mixed(1)[0])

"""The NATS JetStream sink against a real nats-server (see conftest: skipped if absent)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import msgspec
import nats
import pytest
from nats.aio.msg import Msg

from qmpevents.collect.nats_sink import STREAM, NatsSink, message_id, subject_of, subject_token
from qmpevents.collect.records import EventRecord, GapRecord, Record
from tests.collect.conftest import NatsServer, event_record


def test_subject_tokens_escape_what_nats_reserves() -> None:
    assert subject_token("web-01") == "web-01"
    assert subject_token("a.b*c>d e%") == "a%2Eb%2Ac%3Ed%20e%25"
    assert subject_token("tab\there") == "tab%09here"
    assert subject_token("a.b") != subject_token("a%2Eb")  # one-to-one
    with pytest.raises(ValueError):
        subject_token("")


def test_subjects_and_ids() -> None:
    record = event_record("db.1", 5)
    assert subject_of(record) == "qmp.db%2E1.VSERPORT_CHANGE"
    assert subject_of(GapRecord("db.1", 1.0, None, "lost")) == "qmp.db%2E1._GAP"
    assert message_id(record) == message_id(event_record("db.1", 5))
    assert message_id(record) != message_id(event_record("db.2", 5))
    assert message_id(record) != message_id(event_record("db.1", 6))
    closed = GapRecord("db.1", 1.0, 2.0, "lost")
    assert message_id(GapRecord("db.1", 1.0, None, "lost")) != message_id(closed)


async def read_stream(url: str, expected: int, timeout: float = 10.0) -> list[Msg]:
    """Every message of the stream, read with a pull consumer (``expected`` bounds the wait)."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        subscription = await js.pull_subscribe("qmp.>", stream=STREAM)
        messages: list[Msg] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                batch = await subscription.fetch(500, timeout=0.5)
            except TimeoutError:  # nats.errors.TimeoutError, or asyncio's from inside fetch
                if len(messages) >= expected:
                    break
                continue
            for message in batch:
                await message.ack()
            messages.extend(batch)
        info = await js.stream_info(STREAM)
        assert info.state.messages == len(messages)
        return messages
    finally:
        await nc.close()


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


@pytest.fixture
async def sink(nats_server: NatsServer) -> AsyncIterator[NatsSink]:
    sink = NatsSink(nats_server.url, retry_initial=0.05, retry_max=0.5, ack_timeout=2.0)
    await sink.start()
    yield sink
    await sink.aclose(timeout=2)


def records(count: int, vm: str = "vm.a") -> list[Record]:
    return [event_record(vm, i, "MIGRATION_PASS") for i in range(count)]


async def test_every_record_is_in_the_stream_exactly_once(
    sink: NatsSink, nats_server: NatsServer
) -> None:
    sent = [*records(1000), GapRecord("vm.a", 5.0, None, "lost"), *records(10, "vm b")]
    for record in sent:
        sink.submit(record)
    await wait_for(lambda: sink.published == len(sent))
    assert (sink.depth, sink.dropped) == (0, 0)

    messages = await read_stream(nats_server.url, len(sent))
    assert len(messages) == len(sent)
    events = [r for r in sent if isinstance(r, EventRecord)]
    assert [m.data for m in messages if not m.subject.endswith("._GAP")] == [r.raw for r in events]
    [gap] = [m for m in messages if m.subject == "qmp.vm%2Ea._GAP"]
    assert msgspec.json.decode(gap.data, type=GapRecord) == sent[1000]
    by_vm = {m.headers["Qmp-Vm"] for m in messages if m.headers}
    assert by_vm == {"vm.a", "vm b"}
    assert messages[0].subject == "qmp.vm%2Ea.MIGRATION_PASS"
    assert messages[-1].subject == "qmp.vm%20b.MIGRATION_PASS"


async def test_a_republished_record_is_deduplicated(
    sink: NatsSink, nats_server: NatsServer
) -> None:
    for record in records(200) + records(200):
        sink.submit(record)
    await wait_for(lambda: sink.published == 400)  # acknowledged both times...
    assert len(await read_stream(nats_server.url, 200)) == 200  # ...stored once


async def test_a_nats_restart_loses_nothing_within_the_buffer(
    sink: NatsSink, nats_server: NatsServer
) -> None:
    sent = records(3000)
    for record in sent[:1000]:
        sink.submit(record)
    await wait_for(lambda: sink.published == 1000)
    nats_server.stop()  # by PID
    for record in sent[1000:2000]:
        sink.submit(record)
    await wait_for(lambda: sink.failures > 0)
    nats_server.start()  # same port, same store directory
    for record in sent[2000:]:
        sink.submit(record)
    await wait_for(lambda: sink.depth == 0 and sink.published >= 3000)
    assert sink.dropped == 0
    messages = await read_stream(nats_server.url, 3000)
    assert sorted(m.data for m in messages) == sorted(
        r.raw for r in sent if isinstance(r, EventRecord)
    )


async def test_while_nats_is_down_the_buffer_is_bounded_and_drops_are_counted(
    nats_server: NatsServer,
) -> None:
    nats_server.stop()
    sink = NatsSink(
        nats_server.url,
        buffer_limit=10,
        window=5,
        retry_initial=0.05,
        retry_max=0.2,
        connect_timeout=0.5,
    )
    await sink.start()  # NATS down: starts anyway, keeps trying
    sent = records(25)
    for record in sent:
        sink.submit(record)
    assert sink.dropped == 15
    await wait_for(lambda: sink.failures >= 2)
    nats_server.start()
    await wait_for(lambda: sink.published == 10)
    assert await sink.aclose() == 0
    messages = await read_stream(nats_server.url, 10)
    assert [m.data for m in messages] == [r.raw for r in sent[15:] if isinstance(r, EventRecord)]


async def test_close_counts_what_it_could_not_publish(nats_server: NatsServer) -> None:
    nats_server.stop()
    sink = NatsSink(nats_server.url, retry_initial=0.05, connect_timeout=0.2)
    await sink.start()
    for record in records(7):
        sink.submit(record)
    assert await sink.aclose(timeout=0.3) == 7
    assert sink.dropped == 7

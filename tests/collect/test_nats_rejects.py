"""NATS: a record that can never be published is rejected, never retried for ever; headers.

Against a real nats-server (see conftest). On a sink that retries a poisoned batch
for ever, nothing behind the poison is published and the bounded waits fail.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Callable

import nats
import pytest

from qmpevents.collect.metrics import CollectorMetrics
from qmpevents.collect.nats_sink import STREAM, NatsSink, message_id
from qmpevents.collect.records import EventRecord, Record
from qmpevents.schema.decode import decode_event
from tests.collect.conftest import NatsServer, event_record
from tests.collect.test_nats_sink import read_stream, wait_for


def raw_named(name: str, size: int = 0, i: int = 0) -> EventRecord:
    """An event called ``name`` whose data holds ``size`` bytes of padding."""
    raw = (
        f'{{"timestamp": {{"seconds": {1_780_000_000 + i}, "microseconds": 0}},'
        f' "event": "{name}", "data": {{"pad": "{"x" * size}"}}}}'
    ).encode()
    return EventRecord.from_event("vm.poison", decode_event(raw), 1_780_000_000.5)


POISONS: dict[str, tuple[str, Callable[[], Record]]] = {
    "empty event name": ("subject", lambda: raw_named("")),
    "5000-character event name": ("subject", lambda: raw_named("E" * 5000)),
    "over max_payload (1 MiB)": ("too_large", lambda: raw_named("BIG", size=1_100_000)),
}


@pytest.fixture
async def sink(nats_server: NatsServer) -> AsyncIterator[NatsSink]:
    sink = NatsSink(nats_server.url, retry_initial=0.05, retry_max=0.2, ack_timeout=2.0)
    yield sink
    await sink.aclose(timeout=2)


def good(count: int, start: int = 0) -> list[Record]:
    return [event_record("vm.good", i, "MIGRATION_PASS") for i in range(start, start + count)]


async def check_rejected_alone(
    sink: NatsSink, nats_server: NatsServer, poison: Record, reason: str
) -> None:
    await sink.start()
    before, after = good(30), good(30, start=30)
    for record in [*before, poison, *after]:
        sink.submit(record)
    await wait_for(lambda: sink.published == 60 and sink.depth == 0)
    assert sink.rejected[reason] == 1 and sum(sink.rejected.values()) == 1
    metrics = CollectorMetrics()
    metrics.watch_sink(sink)
    assert metrics.value("qmpevents_rejected_total", sink="nats", reason=reason) == 1
    # NATS still works for everyone: the next records go through as well
    for record in good(10, start=60):
        sink.submit(record)
    await wait_for(lambda: sink.published == 70 and sink.depth == 0)
    messages = await read_stream(nats_server.url, 70)
    expected = [*before, *after, *good(10, start=60)]
    assert [m.data for m in messages][-70:] == [
        r.raw for r in expected if isinstance(r, EventRecord)
    ]


@pytest.mark.parametrize("case", sorted(POISONS))
async def test_a_record_nats_can_never_take_is_rejected_and_the_rest_published(
    sink: NatsSink, nats_server: NatsServer, case: str
) -> None:
    reason, make = POISONS[case]
    await check_rejected_alone(sink, nats_server, make(), reason)


async def limit_stream(url: str, max_msg_size: int, *, create: bool) -> None:
    """Create the stream with a message size limit, or set one on the existing stream."""
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        if create:
            await js.add_stream(name=STREAM, subjects=["qmp.>"], max_msg_size=max_msg_size)
        else:
            config = (await js.stream_info(STREAM)).config
            config.max_msg_size = max_msg_size
            await js.update_stream(config)
    finally:
        await nc.close()


async def test_a_record_over_the_streams_message_size_is_rejected(
    sink: NatsSink, nats_server: NatsServer
) -> None:
    await limit_stream(nats_server.url, 8192, create=True)  # an operator's stream
    await check_rejected_alone(sink, nats_server, raw_named("LARGE", size=20_000), "too_large")


async def test_a_record_jetstream_refuses_is_retried_alone_then_rejected(
    sink: NatsSink, nats_server: NatsServer
) -> None:
    await sink.start()
    sink.submit(good(1, start=100)[0])  # the sink creates the stream, learns it has no limit
    await wait_for(lambda: sink.published == 1)
    await limit_stream(nats_server.url, 8192, create=False)  # the operator changes it
    sink.published = 0
    await check_rejected_alone(sink, nats_server, raw_named("LARGE", size=20_000), "refused")


VM_NAMES = ["a\r\nb", "a\nb", "a b", "tab\there", " lead", "trail ", "100%", "café", "a%0Ab"]


async def test_the_vm_header_keeps_any_name_exactly(
    sink: NatsSink, nats_server: NatsServer
) -> None:
    await sink.start()
    records = [event_record(vm, 1) for vm in VM_NAMES]  # the same event from each VM
    assert len({message_id(r) for r in records}) == len(records)
    for record in records:
        sink.submit(record)
    await wait_for(lambda: sink.published == len(records) and sink.depth == 0)
    messages = await read_stream(nats_server.url, len(records))
    assert len(messages) == len(records)  # none de-duplicated as another VM's
    headers = [m.headers["Qmp-Vm"] for m in messages if m.headers]
    assert sorted(urllib.parse.unquote(h) for h in headers) == sorted(VM_NAMES)
    assert all(h.isascii() and h.isprintable() for h in headers)
    assert "a b" in headers and "a%0D%0Ab" in headers  # printable ASCII stays readable

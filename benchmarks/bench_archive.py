"""The central archive's ingest rate (JetStream into SQLite) beside a plain ack-only loop.

Publishes N events the way a host's outbox does (message ids, ``Qmp-Vm``/``Qmp-Host``
headers), then drains the stream twice in the same run: a plain nats-py pull
consumer that only acknowledges (the ceiling), and :class:`~qmpevents.collect.archive.Archive`
(decode, one SQLite transaction per batch with the message-id check, then acks).
Prints events/s for both and their ratio. Needs ``nats-server``.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nats
from nats.js.api import AckPolicy, ConsumerConfig

from benchmarks.bench_collect import _listening, free_port, wait_until
from qmpevents.collect.archive import Archive
from qmpevents.collect.nats_messages import message_for
from qmpevents.collect.records import EventRecord


def _records(count: int) -> list[EventRecord]:
    base = 1_780_000_000
    return [
        EventRecord(
            vm=f"vm{i % 50}",
            name="MIGRATION_PASS",
            qemu_seconds=base + i // 1000,
            qemu_micros=(i % 1000) * 1000,
            received_at=float(base),
            raw=(
                f'{{"timestamp": {{"seconds": {base + i // 1000}, "microseconds": '
                f'{(i % 1000) * 1000}}}, "event": "MIGRATION_PASS", "data": {{"pass": {i}}}}}'
            ).encode(),
        )
        for i in range(count)
    ]


async def _publish(url: str, count: int) -> None:
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="QMP_EVENTS", subjects=["qmp.>"])
    futures = []
    for record in _records(count):
        m = message_for(record, 1 << 20)
        headers = {**m.headers, "Qmp-Host": "bench"}
        futures.append(await js.publish_async(m.subject, m.payload, headers=headers))
    await asyncio.gather(*futures)
    await nc.close()


async def _plain(url: str, count: int) -> float:
    nc = await nats.connect(url)
    js = nc.jetstream()
    sub = await js.pull_subscribe(
        "qmp.>",
        durable="plain",
        stream="QMP_EVENTS",
        config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, max_ack_pending=2000),
    )
    start, done = time.perf_counter(), 0
    while done < count:
        for msg in await sub.fetch(500, timeout=5):
            await msg.ack()
            done += 1
    elapsed = time.perf_counter() - start
    await nc.close()
    return count / elapsed


async def _archive(url: str, count: int, db: Path) -> tuple[float, int]:
    """Stored events per second, and how many of ``count`` were not stored."""
    archive = Archive([url], db, durable="bench-archive", batch=500)
    task = asyncio.create_task(archive.run())
    start = time.perf_counter()
    # Bounded: an archive that dies or stalls ends the wait instead of hanging.
    while archive.stored < count and not task.done() and time.perf_counter() - start < 300:
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - start
    archive.stop()
    await task
    return archive.stored / elapsed, count - archive.stored


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    binary = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not Path(binary).exists():
        print("nats-server not installed: archive benchmark skipped")
        return
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        server = subprocess.Popen(
            [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", tmp],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until(lambda: _listening(port), 10, "nats-server")
            url = f"nats://127.0.0.1:{port}"
            asyncio.run(_publish(url, count))
            plain = asyncio.run(_plain(url, count))
            archived, missing = asyncio.run(_archive(url, count, Path(tmp) / "central.db"))
        finally:
            server.terminate()
            server.wait(10)
    print(f"{'consumer':<40} {'events/s':>12}")
    print(f"{'nats-py pull loop, ack only':<40} {plain:>12,.0f}")
    print(f"{'archive: JetStream -> SQLite, then ack':<40} {archived:>12,.0f}")
    print(f"archive / plain: {archived / plain:.2f}; not stored: {missing} of {count}")


if __name__ == "__main__":
    main()

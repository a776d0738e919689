"""The timeline's data load for a big fleet: 500 VMs, 100k events in range.

Run: ``python benchmarks/bench_web.py [vms] [events]`` (default 500, 100000). A
history is written (events spread over one hour, a gap per tenth VM), then the
collector's HTTP server is asked, over real HTTP on loopback, for the page's view at
1600 pixels: the whole hour (200 events per lane: marks, as a lane has 800 two-pixel
buckets), the same with 8-pixel buckets and at 300 pixels (every lane aggregated), the
last minute, and one page of ``/api/events``. Printed: response time (median of 5) and
size, raw and gzip. Nothing is asserted.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from qmpevents.collect.records import EventRecord, GapRecord, Record
from qmpevents.collect.sqlite_store import BatchPolicy, SQLiteStore
from qmpevents.collect.web_app import start_web_server

NAMES = ("MIGRATION_PASS", "VSERPORT_CHANGE", "DUMP_COMPLETED", "QUORUM_REPORT_BAD", "STOP")
BASE = 1_780_000_000.0


def records(vms: int, events: int) -> list[Record]:
    out: list[Record] = []
    for i in range(events):
        ts = BASE + 3600.0 * i / events
        name = NAMES[i % len(NAMES)]
        raw = (
            f'{{"timestamp": {{"seconds": {int(ts)}, "microseconds": {int(ts % 1 * 1e6)}}}, '
            f'"event": "{name}", "data": {{"pass": {i}}}}}'
        ).encode()
        out.append(EventRecord(f"vm{i % vms:03d}", name, int(ts), int(ts % 1 * 1e6), ts, raw))
    out += [GapRecord(f"vm{v:03d}", BASE + 600, BASE + 900, "lost") for v in range(0, vms, 10)]
    return out


async def write(path: Path, items: list[Record]) -> None:
    store = SQLiteStore(path, batching=BatchPolicy(5000, 0.0), buffer_limit=len(items) + 5000)
    await store.start()
    for item in items:
        store.submit(item)
    await store.aclose()


async def measure(session: aiohttp.ClientSession, url: str, gzip: bool) -> tuple[float, int]:
    headers = {"Accept-Encoding": "gzip" if gzip else "identity"}
    times = []
    size = 0
    for _ in range(5):
        start = time.perf_counter()
        async with session.get(url, headers=headers, auto_decompress=False) as reply:
            body = await reply.read()
        times.append(time.perf_counter() - start)
        size = len(body)
    return statistics.median(times), size


async def run(vms: int, events: int) -> None:
    with tempfile.TemporaryDirectory() as directory:
        db = Path(directory) / "events.db"
        start = time.perf_counter()
        await write(db, records(vms, events))
        print(f"history: {vms} VMs, {events} events written in {time.perf_counter() - start:.1f} s")
        server = await start_web_server(db, "127.0.0.1", 0)
        views = {
            "timeline, 1 h, 1600 px": f"api/timeline?since={BASE}&until={BASE + 3600}&width=1600",
            "timeline, 1 h, 1600 px, bucket 8": f"api/timeline?since={BASE}&until={BASE + 3600}"
            "&width=1600&bucket=8",
            "timeline, 1 h, 300 px": f"api/timeline?since={BASE}&until={BASE + 3600}&width=300",
            "timeline, last 1 min": f"api/timeline?since={BASE + 3540}&until={BASE + 3600}"
            "&width=1600",
            "events, one page of 1000": f"api/events?since={BASE}&limit=1000",
        }
        try:
            async with aiohttp.ClientSession() as session:
                print(f"{'view':<34} {'time':>9} {'raw':>10} {'gzip time':>10} {'gzip':>10}")
                for label, path in views.items():
                    raw_t, raw_size = await measure(session, server.url + path, False)
                    gz_t, gz_size = await measure(session, server.url + path, True)
                    print(
                        f"{label:<34} {raw_t * 1000:7.0f}ms {raw_size / 1024:8.0f}kB"
                        f" {gz_t * 1000:8.0f}ms {gz_size / 1024:8.0f}kB"
                    )
        finally:
            await server.aclose()


def main() -> None:
    vms = int(sys.argv[1]) if len(sys.argv) > 1 else 500
    events = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    asyncio.run(run(vms, events))


if __name__ == "__main__":
    main()

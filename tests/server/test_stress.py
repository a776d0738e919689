"""The server under everything at once ends with no traceback, bounded memory, and answers."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from qmpevents.server import QMPServer
from tests.server.conftest import RawClient
from tests.server.stress import PER_CLIENT, run


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def test_stress_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = str(tmp_path / "q.sock")
    # A small output limit, so that the non-reading clients are cut off here.
    server = QMPServer(output_limit=1 << 20)
    await server.listen_unix(path, multi_client=True)
    counter = iter(range(1, 1 << 62))

    def emit(n: int) -> None:
        for _ in range(n):
            server.emit("MIGRATION_PASS", {"pass": next(counter)})

    caplog.set_level(logging.WARNING)
    baseline = _rss()
    try:
        counts = await run(path, 1, emit)
        grown = _rss() - baseline
        client = await RawClient.connect(path)
        await client.negotiate()
        assert (await client.execute("query-status"))["return"]["running"] is True
        await client.close()
    finally:
        await server.close()
    assert counts.inputs == 40 * PER_CLIENT and counts.slow == 20 and counts.churn == 500
    assert counts.stalled == 5
    problems = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert problems == [], [r.getMessage() for r in problems[:5]]
    # What the run left behind is bounded, not the sum of what went through it.
    assert grown < 64 << 20, f"grew {grown >> 20} MiB"

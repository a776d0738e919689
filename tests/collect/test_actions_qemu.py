"""Actions on real QEMU 7.2: a guest that panics on every boot, dumped and reset 3 times.

The coredump-restart rule of ``deploy/actions`` with its guard (3 runs per 600 s):
three panics are dumped (``detach=true``, then ``wait-for DUMP_COMPLETED``), reset and
continued; the fourth suspends the rule for the VM, which stays paused. Without QEMU
the test skips, or fails under ``QMPEVENTS_REQUIRE_QEMU=1``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from qmpevents.collect.actions.store import read_actions
from qmpevents.collect.collector import Collector
from qmpevents.collect.config import load_config
from tests.qemu.conftest import BASE_ARGS, QEMU, _require, _wait_for_socket
from tests.qemu.scenarios import pvpanic_boot_sector

pytestmark = pytest.mark.qemu

RULE = "coredump-restart"
STEPS = ["execute", "wait-for", "execute", "execute"]


async def _until(condition: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.05)


def _config(tmp_path: Path, sock: Path) -> Path:
    example = Path(__file__).parents[2] / "deploy" / "actions" / "coredump-restart.toml"
    text = example.read_text()
    text = text.replace("/run/qemu/web1.qmp", str(sock)).replace('"web1"', '"panicky"')
    text = text.replace("file:/var/tmp/", f"file:{tmp_path}/")
    config = tmp_path / "collect.toml"
    config.write_text(
        f'[collector]\ndb = "{tmp_path / "events.db"}"\nbatch_interval = 0.05\n\n{text}'
    )
    return config


@pytest.mark.timeout(180)
async def test_a_panic_loop_is_dumped_and_reset_three_times_then_left_paused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    binary = _require(QEMU)
    disk = tmp_path / "panic.img"
    disk.write_bytes(pvpanic_boot_sector())
    sock = tmp_path / "panicky.qmp"
    argv = [
        binary,
        *BASE_ARGS,  # starts paused (-S): the collector is attached before the first panic
        "-device",
        "pvpanic",
        "-drive",
        f"file={disk},format=raw,if=ide",
        "-action",
        "panic=pause",
        "-qmp",
        f"unix:{sock},server=on,wait=off",
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await _wait_for_socket(sock, process)
        config = load_config(_config(tmp_path, sock))
        collector = Collector(config)
        caplog.set_level(logging.WARNING, logger="qmpevents.collect.actions.runner")
        await collector.start()
        try:
            endpoint = collector.endpoints["panicky"]
            await _until(lambda: endpoint.connected)
            await endpoint.execute("cont", timeout=10)
            metrics = collector.metrics
            await _until(lambda: metrics.value("qmpevents_actions_suspended_total", rule=RULE) == 1)
            assert collector.actions is not None
            await asyncio.wait_for(collector.actions.join(), 30)
            status = await endpoint.execute("query-status", timeout=10)
            assert status["status"] == "guest-panicked"  # left paused for a human
            assert metrics.value("qmpevents_actions_total", rule=RULE, outcome="ok") == 3
            assert metrics.value("qmpevents_actions_total", rule=RULE, outcome="suspended") == 1
        finally:
            await collector.aclose()
    finally:
        process.kill()
        process.wait(10)
        assert process.stderr is not None
        process.stderr.close()

    assert f"action {RULE} suspended for VM panicky: 3 runs in 600 s" in caplog.text
    dumps = sorted(tmp_path.glob("qmpevents-panicky-*.dump"))
    assert len(dumps) == 3
    assert all(dump.stat().st_size > 0 for dump in dumps)
    conn = sqlite3.connect(tmp_path / "events.db")
    try:
        events = [
            json.loads(raw)
            for (raw,) in conn.execute("SELECT raw FROM events WHERE vm = 'panicky' ORDER BY id")
        ]
        runs = read_actions(conn)
    finally:
        conn.close()
    names = [event["event"] for event in events]
    assert names.count("GUEST_PANICKED") == 4
    assert names.count("DUMP_COMPLETED") == 3
    resets = [e for e in events if e["event"] == "RESET" and not e["data"]["guest"]]
    assert [e["data"]["reason"] for e in resets] == ["host-qmp-system-reset"] * 3
    assert len(runs) == 3
    for run in runs:
        assert (run["rule"], run["vm"], run["event"], run["outcome"]) == (
            RULE,
            "panicky",
            "GUEST_PANICKED",
            "ok",
        )
        assert [step["kind"] for step in run["steps"]] == STEPS
        assert all(step["ok"] and step["error"] is None for step in run["steps"])
        assert [step["target"] for step in run["steps"]] == [
            "dump-guest-memory",
            "DUMP_COMPLETED",
            "system_reset",
            "cont",
        ]

"""Fixtures of the web tests: a history on disk, a live fleet with its collector, a browser.

The fleet runs in a thread of its own (its own event loop), so that the blocking
browser driver in the test never stalls the server it is looking at. The browser is
Debian's headless Chromium driven by chromedriver (Selenium); without it the browser
tests skip, unless ``QMPEVENTS_REQUIRE_BROWSER=1`` (CI) makes them fail.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from qmpevents.collect.collector import Collector
from qmpevents.collect.config import CollectorConfig, VMSpec
from qmpevents.collect.records import EventRecord, GapRecord, Record
from qmpevents.collect.sqlite_store import BatchPolicy, SQLiteStore
from qmpevents.collect.web_app import HttpOptions
from qmpevents.schema.decode import decode_event
from qmpevents.server.server import QMPServer

T = TypeVar("T")
BASE = 1_780_000_000.0
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")

# The seven seed events, with data QEMU 7.2 would send.
SEEDED: tuple[tuple[str, dict[str, Any]], ...] = (
    ("DUMP_COMPLETED", {"result": {"status": "completed", "completed": 4096, "total": 4096}}),
    ("GUEST_PANICKED", {"action": "pause"}),
    ("MEM_UNPLUG_ERROR", {"device": "dimm1", "msg": "rejected"}),
    ("QUORUM_FAILURE", {"reference": "quorum0", "sector-num": 0, "sectors-count": 8}),
    (
        "QUORUM_REPORT_BAD",
        {"type": "read", "node-name": "child1", "sector-num": 0, "sectors-count": 8},
    ),
    ("MIGRATION_PASS", {"pass": 1}),
    ("VSERPORT_CHANGE", {"id": "channel0", "open": True}),
)


def raw_event(name: str, data: dict[str, Any], ts: float) -> bytes:
    seconds, micros = int(ts), round((ts - int(ts)) * 1_000_000)
    body = msgspec.json.encode(data).decode()
    return (
        f'{{"timestamp": {{"seconds": {seconds}, "microseconds": {micros}}}, '
        f'"event": "{name}", "data": {body}}}'
    ).encode()


def record(vm: str, name: str, data: dict[str, Any], ts: float, held: float = 0.0) -> EventRecord:
    event = decode_event(raw_event(name, data, ts))
    return EventRecord.from_event(vm, event, ts + held)


def write_history(path: Path, records: list[Record]) -> None:
    """Store ``records`` at ``path`` as the collector would."""

    async def run() -> None:
        store = SQLiteStore(path, batching=BatchPolicy(1000, 0.0), buffer_limit=len(records) + 1000)
        await store.start()
        for item in records:
            store.submit(item)
        await store.aclose()

    with ThreadPoolExecutor(1) as pool:  # callable from a test's running event loop too
        pool.submit(asyncio.run, run()).result(60)


@pytest.fixture
def history_db(tmp_path: Path) -> Path:
    """Three VMs (one named ``<script>``), the seven seed events each, one gap."""
    records: list[Record] = []
    for v, vm in enumerate(("web-1", "db-1", "<script>")):
        for i, (name, data) in enumerate(SEEDED):
            records.append(record(vm, name, data, BASE + 10 * i + v, held=0.8 if i >= 3 else 0.0))
    records.append(GapRecord("db-1", BASE + 20.5, BASE + 40.5, "connection lost: EOF"))
    path = tmp_path / "events.db"
    write_history(path, records)
    return path


class Fleet:
    """Simulated VMs (QMP servers on unix sockets) and a collector serving ``--http``."""

    def __init__(self, directory: Path, names: tuple[str, ...]) -> None:
        self.directory = directory
        self.names = names
        self.db = directory / "events.db"
        self.servers: dict[str, QMPServer] = {}
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.collector: Collector | None = None
        self.url = ""

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    async def _start(self) -> None:
        specs = []
        for i, name in enumerate(self.names):
            server = QMPServer()
            path = self.directory / f"vm{i}.qmp"
            await server.listen_unix(str(path))
            self.servers[name] = server
            specs.append(VMSpec(name, str(path)))
        config = CollectorConfig(vms=tuple(specs), db=self.db, batch_interval=0.05)
        self.collector = Collector(config, http=HttpOptions("127.0.0.1", 0))
        await self.collector.start()
        assert self.collector.web_server is not None
        self.url = self.collector.web_server.url
        deadline = self.loop.time() + 10
        while any(not e.connected for e in self.collector.endpoints.values()):
            if self.loop.time() > deadline:
                raise RuntimeError("the collector did not connect to every VM")
            await asyncio.sleep(0.02)

    def start(self) -> None:
        self.thread.start()
        self.call(self._start())

    def emit(self, vm: str, name: str, data: dict[str, Any]) -> bytes:
        """QEMU's line of event ``name`` sent by ``vm`` (through its rate limiter)."""

        async def run() -> bytes:
            return self.servers[vm].emit(name, data).rstrip(b"\r\n")

        return self.call(run())

    def stop(self) -> None:
        async def run() -> None:
            if self.collector is not None:
                await self.collector.aclose()
            for server in self.servers.values():
                await server.close()

        try:
            self.call(run())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture
def fleet() -> Iterator[Fleet]:
    """Three VMs, one named ``<script>``, collected with the page on a free port."""
    with tempfile.TemporaryDirectory(prefix="qmpweb-") as directory:  # short socket paths
        fleet = Fleet(Path(directory), ("web-1", "db-1", "<script>"))
        fleet.start()
        try:
            yield fleet
        finally:
            fleet.stop()


def _found(candidates: tuple[str, ...], name: str) -> str | None:
    for path in candidates:
        if os.access(path, os.X_OK):
            return path
    return shutil.which(name)


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium (Selenium + chromedriver), with a fresh profile."""
    chromium = _found(CHROMIUM, "chromium")
    driver_path = _found(CHROMEDRIVER, "chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        selenium_missing = True
    else:
        selenium_missing = False
    if chromium is None or driver_path is None or selenium_missing:
        what = "selenium" if selenium_missing else "chromium and chromium-driver"
        if os.environ.get("QMPEVENTS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{what} required (QMPEVENTS_REQUIRE_BROWSER=1) but not installed")
        pytest.skip(f"{what} not installed (Debian packages chromium chromium-driver)")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        "--window-size=1400,900",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()

"""Records to store, and a NATS server with JetStream on a free loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmpevents.collect.records import EventRecord
from qmpevents.schema.decode import decode_event

BASE_TIME = 1_780_000_000


def raw_event(i: int, name: str = "VSERPORT_CHANGE") -> bytes:
    """QEMU's bytes of event number ``i`` (distinct timestamp and data per ``i``)."""
    seconds, micros = BASE_TIME + i // 1000, (i % 1000) * 1000
    data = {
        "VSERPORT_CHANGE": f'{{"open": true, "id": "channel{i}"}}',
        "MIGRATION_PASS": f'{{"pass": {i + 1}}}',
        "GUEST_PANICKED": '{"action": "pause"}',
    }[name]
    return (
        f'{{"timestamp": {{"seconds": {seconds}, "microseconds": {micros}}}, '
        f'"event": "{name}", "data": {data}}}'
    ).encode()


def event_record(vm: str, i: int, name: str = "VSERPORT_CHANGE") -> EventRecord:
    """The record of event number ``i`` of ``vm``, received 0.25 s after QEMU sent it."""
    event = decode_event(raw_event(i, name))
    return EventRecord.from_event(vm, event, event.timestamp.as_float() + 0.25)


class NatsServer:
    """One ``nats-server -js`` process; :meth:`stop` and :meth:`start` keep port and store."""

    def __init__(self, binary: str, store: Path) -> None:
        self.binary = binary
        self.store = store
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"nats-server did not listen on port {self.port}")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)
            self.process.wait(timeout=10)
        self.process = None


STARTED: list[asyncio.subprocess.Process] = []
"""Processes a test started (``CollectorProcess``); any still running after it are killed."""


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test() -> Iterator[None]:
    # A failing assertion skips a test's own stop(): without this, its collectors
    # would keep running (and publishing) after the test, for the rest of the session.
    yield
    while STARTED:
        process = STARTED.pop()
        if process.returncode is None:  # not reaped: its pid is still its own
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGKILL)


@pytest.fixture
def nats_server(tmp_path: Path) -> Iterator[NatsServer]:
    """A JetStream-enabled nats-server; skipped without the binary unless CI requires it."""
    binary = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if binary is None:
        if os.environ.get("QMPEVENTS_REQUIRE_NATS") == "1":
            pytest.fail("nats-server is required (QMPEVENTS_REQUIRE_NATS=1) but not installed")
        pytest.skip("nats-server is not installed (Debian package nats-server)")
    server = NatsServer(binary, tmp_path / "jetstream")
    server.start()
    try:
        yield server
    finally:
        server.stop()

"""A 3-node NATS cluster with JetStream on loopback ports, for the fleet tests."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import nats
import pytest


def nats_binary() -> str:
    """The nats-server binary; skipped without it unless CI requires it (fails then)."""
    binary = shutil.which("nats-server") or (
        "/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None
    )
    if binary is None:
        if os.environ.get("QMPEVENTS_REQUIRE_NATS") == "1":
            pytest.fail("nats-server is required (QMPEVENTS_REQUIRE_NATS=1) but not installed")
        pytest.skip("nats-server is not installed (Debian package nats-server)")
    return binary


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ClusterNode:
    """One node: client port, cluster port, its own store; restartable on the same ports."""

    def __init__(self, binary: str, index: int, store: Path) -> None:
        self.binary = binary
        self.name = f"n{index}"
        self.store = store
        self.port = _free_port()
        self.cluster_port = _free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.routes: list[str] = []
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                "-js",
                "-n",
                self.name,
                "-a",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-sd",
                str(self.store),
                "--cluster_name",
                "qmp",
                "--cluster",
                f"nats://127.0.0.1:{self.cluster_port}",
                "--routes",
                ",".join(self.routes),
            ],
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
        raise RuntimeError(f"nats-server {self.name} did not listen on port {self.port}")

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)
            self.process.wait(timeout=10)
        self.process = None


class Cluster:
    """Three nodes routed to each other; :attr:`url` names them all (comma-separated)."""

    def __init__(self, binary: str, directory: Path, size: int = 3) -> None:
        self.nodes = [ClusterNode(binary, i, directory / f"js{i}") for i in range(size)]
        for node in self.nodes:
            node.routes = [
                f"nats://127.0.0.1:{other.cluster_port}"
                for other in self.nodes
                if other is not node
            ]
        self.url = ",".join(node.url for node in self.nodes)

    def start(self) -> None:
        for node in self.nodes:
            node.start()

    def stop(self) -> None:
        for node in self.nodes:
            node.kill(signal.SIGTERM)

    async def wait_formed(self, timeout: float = 60.0) -> None:
        """Until a stream with 3 replicas can be created (a JetStream meta leader exists)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                nc = await nats.connect(self.url.split(","), connect_timeout=2)
                try:
                    js = nc.jetstream(timeout=3)
                    await js.add_stream(name="PROBE", subjects=["probe.>"], num_replicas=3)
                    await js.delete_stream("PROBE")
                    return
                finally:
                    await nc.close()
            except Exception as error:  # not formed yet
                last = error
                await asyncio.sleep(0.5)
        raise AssertionError(f"the NATS cluster did not form: {last}")

"""Real QEMU for the tests in this directory.

Without ``qemu-system-x86_64`` the tests are skipped, unless
``QMPEVENTS_REQUIRE_QEMU=1`` (CI sets it): then they fail, so that CI can never
pass by skipping them. Each VM is small and starts paused (``-S``).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from qmpevents.client.connection import QMPClient

QEMU = "qemu-system-x86_64"
BASE_ARGS = ("-display", "none", "-nodefaults", "-accel", "tcg", "-machine", "pc", "-m", "64", "-S")
# How long a booting QEMU may take to create its socket (generous: CI is slow, not QEMU).
SOCKET_WAIT = 10.0


@dataclass
class VM:
    """One running QEMU and our client connected to it."""

    qmp: QMPClient
    process: subprocess.Popen[bytes]


BootVM = Callable[..., AbstractAsyncContextManager[VM]]


def _require(binary: str) -> str:
    path = shutil.which(binary)
    if path is None:
        message = f"{binary} is not installed"
        if os.environ.get("QMPEVENTS_REQUIRE_QEMU") == "1":
            pytest.fail(f"{message}, and QMPEVENTS_REQUIRE_QEMU=1 requires it")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def qemu_binary() -> str:
    """The path of qemu-system-x86_64 (skip or fail without it; see the module docstring)."""
    return _require(QEMU)


@pytest.fixture(scope="session")
def qemu_img() -> str:
    """The path of qemu-img."""
    return _require("qemu-img")


@pytest.fixture
def boot_vm(qemu_binary: str, tmp_path: Path) -> Iterator[BootVM]:
    """``async with boot_vm(*extra_args, name=...) as vm``: a QEMU and our client on it.

    The process is killed when the test ends, whatever state it is in.
    """
    processes: list[subprocess.Popen[bytes]] = []

    @asynccontextmanager
    async def boot(*extra: str, name: str = "vm") -> AsyncIterator[VM]:
        sock = tmp_path / f"{name}.sock"
        argv = [qemu_binary, *BASE_ARGS, "-qmp", f"unix:{sock},server=on,wait=off", *extra]
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        processes.append(process)
        await _wait_for_socket(sock, process)
        async with QMPClient(sock) as qmp:
            yield VM(qmp, process)

    yield boot
    for process in processes:
        if process.poll() is None:
            process.kill()
        process.wait(5)
        assert process.stderr is not None
        process.stderr.close()


async def _wait_for_socket(sock: Path, process: subprocess.Popen[bytes]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SOCKET_WAIT
    while not sock.exists():
        if process.poll() is not None:
            assert process.stderr is not None
            pytest.fail(f"QEMU exited with {process.returncode}: {process.stderr.read().decode()}")
        if loop.time() > deadline:
            pytest.fail(f"QEMU did not create {sock} within {SOCKET_WAIT} s")
        await asyncio.sleep(0.02)

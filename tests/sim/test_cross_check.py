"""The real-QEMU assertions of tests/qemu, run against the simulator: both answer alike.

Each test boots the simulator from the same QEMU arguments the real-QEMU test
uses and calls the same ``check_*`` function through our client; only what a
real guest does by itself (running its boot sector) is replaced by the
``x-sim-`` guest action.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from qmpevents.client.connection import QMPClient
from qmpevents.errors import ConnectionLost
from qmpevents.sim.cmdline import parse_command_line
from qmpevents.sim.machine import Machine
from tests.qemu.conftest import BASE_ARGS
from tests.qemu.scenarios import (
    check_dump_completed,
    check_dump_failed,
    check_guest_panicked,
    check_migration_pass,
    check_quorum,
    check_quorum_io_errors,
    quorum_blkdebug_blockdev,
    quorum_blockdev,
)
from tests.qemu.test_real_qemu import SECTOR

BootSim = Callable[..., AbstractAsyncContextManager[QMPClient]]


@pytest.fixture
def boot_sim(tmp_path: Path) -> BootSim:
    """``async with boot_sim(*qemu_args) as qmp``: the simulator and our client on it."""

    @asynccontextmanager
    async def boot(*extra: str) -> AsyncIterator[QMPClient]:
        sock = tmp_path / "sim.sock"
        argv = [*BASE_ARGS, "-qmp", f"unix:{sock},server=on,wait=off", *extra]
        machine = Machine(parse_command_line(argv))
        await machine.start()
        try:
            async with QMPClient(sock) as qmp:
                yield qmp
        finally:
            await machine.server.close()

    return boot


async def pvpanic(qmp: QMPClient) -> None:
    await qmp.execute("x-sim-pvpanic", {"value": 1})


async def test_dump_and_migration(boot_sim: BootSim, tmp_path: Path) -> None:
    async with boot_sim() as qmp:
        await check_dump_completed(qmp, tmp_path / "dump.elf")
        await check_dump_failed(qmp)
        await check_migration_pass(qmp)
        assert qmp.protocol_errors == 0


def quorum_images(directory: Path) -> list[Path]:
    """The images of tests/qemu (made there with qemu-img): c2 corrupted in sectors
    0..7, all three different in 16..17."""
    images = [directory / f"q-c{i}.raw" for i in range(3)]
    for index, image in enumerate(images):
        with image.open("wb") as f:
            f.truncate(1 << 20)
            f.write((b"\0" if index == 2 else b"\x32") * 8 * SECTOR)
            f.seek(16 * SECTOR)
            f.write(bytes([0x11 * (index + 1)]) * 2 * SECTOR)
    return images


async def test_quorum_report_bad_and_failure(boot_sim: BootSim, tmp_path: Path) -> None:
    images = quorum_images(tmp_path)
    async with boot_sim() as qmp:
        await qmp.execute("blockdev-add", quorum_blockdev("qM", images))
        await check_quorum(qmp, "qM")


@pytest.mark.parametrize(
    ("errno", "error"), [(5, "Input/output error"), (28, "No space left on device")]
)
async def test_quorum_read_errors(
    boot_sim: BootSim, tmp_path: Path, errno: int, error: str
) -> None:
    images = quorum_images(tmp_path)
    async with boot_sim() as qmp:
        await qmp.execute("blockdev-add", quorum_blkdebug_blockdev("qR", images, errno))
        await check_quorum_io_errors(qmp, "qR", error)


@pytest.mark.parametrize(
    ("action_option", "action", "status"),
    [("pause", "pause", "guest-panicked"), ("none", "run", "running")],
)
async def test_guest_panicked(
    boot_sim: BootSim, action_option: str, action: str, status: str
) -> None:
    args = ("-device", "pvpanic", "-action", f"panic={action_option}")
    async with boot_sim(*args) as qmp:
        await check_guest_panicked(qmp, action, guest_panics=pvpanic)  # type: ignore[arg-type]
        assert (await qmp.execute("query-status"))["status"] == status


async def test_guest_panicked_shutdown_ends_the_stream(boot_sim: BootSim) -> None:
    async with boot_sim("-device", "pvpanic", "-action", "panic=shutdown") as qmp:
        shutdown = qmp.events("SHUTDOWN")
        await check_guest_panicked(qmp, "poweroff", guest_panics=pvpanic)
        first = await anext(shutdown)
        assert first.data.reason == "guest-panic"  # type: ignore[union-attr]
        with pytest.raises(ConnectionLost):
            async with asyncio.timeout(20):
                await anext(shutdown)

"""The seed events from a real QEMU 7.2, received through our client.

One VM serves both dump cases and the migration (the dumps do not change what
the migration does); the quorum and each panic action need their own VM.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from qmpevents.errors import ConnectionLost
from tests.qemu.conftest import BootVM
from tests.qemu.scenarios import (
    check_dump_completed,
    check_dump_failed,
    check_guest_panicked,
    check_migration_pass,
    check_quorum,
    check_quorum_io_errors,
    pvpanic_boot_sector,
    quorum_blkdebug_blockdev,
    quorum_blockdev,
)

pytestmark = pytest.mark.qemu

SECTOR = 512


async def test_dump_and_migration(boot_vm: BootVM, tmp_path: Path) -> None:
    async with boot_vm() as vm:
        assert vm.qmp.greeting is not None and vm.qmp.greeting.major >= 7
        await check_dump_completed(vm.qmp, tmp_path / "dump.elf")
        await check_dump_failed(vm.qmp)
        await check_migration_pass(vm.qmp)
        assert vm.qmp.protocol_errors == 0


def _quorum_images(qemu_img: str, directory: Path) -> list[Path]:
    """Three raw images: c2 corrupted in sectors 0..7, all three different in 16..17."""
    images = [directory / f"q-c{i}.raw" for i in range(3)]
    for index, image in enumerate(images):
        subprocess.run([qemu_img, "create", "-q", "-f", "raw", str(image), "1M"], check=True)
        with image.open("r+b") as f:
            f.write((b"\0" if index == 2 else b"\x32") * 8 * SECTOR)
            f.seek(16 * SECTOR)
            f.write(bytes([0x11 * (index + 1)]) * 2 * SECTOR)
    return images


async def test_quorum_report_bad_and_failure(
    boot_vm: BootVM, qemu_img: str, tmp_path: Path
) -> None:
    images = _quorum_images(qemu_img, tmp_path)
    async with boot_vm() as vm:
        await vm.qmp.execute("blockdev-add", quorum_blockdev("qM", images))
        await check_quorum(vm.qmp, "qM")


@pytest.mark.parametrize(
    ("errno", "error"), [(5, "Input/output error"), (28, "No space left on device")]
)
async def test_quorum_read_errors(
    boot_vm: BootVM, qemu_img: str, tmp_path: Path, errno: int, error: str
) -> None:
    images = _quorum_images(qemu_img, tmp_path)
    async with boot_vm(name=f"blkdebug-{errno}") as vm:
        await vm.qmp.execute("blockdev-add", quorum_blkdebug_blockdev("qR", images, errno))
        await check_quorum_io_errors(vm.qmp, "qR", error)


async def test_guest_panicked_exit_failure(boot_vm: BootVM, tmp_path: Path) -> None:
    """``-action panic=exit-failure``: poweroff, SHUTDOWN, and QEMU exits with status 1."""
    disk = tmp_path / "panic.img"
    disk.write_bytes(pvpanic_boot_sector())
    args = ("-device", "pvpanic", "-drive", f"file={disk},format=raw,if=ide")
    async with boot_vm(*args, "-action", "panic=exit-failure", name="panic-exit") as vm:
        shutdown = vm.qmp.wait_for("SHUTDOWN", timeout=20)
        await check_guest_panicked(vm.qmp, "poweroff")
        assert (await shutdown).data.reason == "guest-panic"  # type: ignore[union-attr]
        assert vm.process.wait(20) == 1


@pytest.mark.parametrize(
    ("action_option", "action", "status"),
    [("pause", "pause", "guest-panicked"), ("none", "run", "running")],
)
async def test_guest_panicked(
    boot_vm: BootVM, tmp_path: Path, action_option: str, action: str, status: str
) -> None:
    disk = tmp_path / "panic.img"
    disk.write_bytes(pvpanic_boot_sector())
    drive = f"file={disk},format=raw,if=ide"
    args = ("-device", "pvpanic", "-drive", drive, "-action", f"panic={action_option}")
    async with boot_vm(*args, name=f"panic-{action_option}") as vm:
        await check_guest_panicked(vm.qmp, action)  # type: ignore[arg-type]
        assert (await vm.qmp.execute("query-status"))["status"] == status


async def test_guest_panicked_shutdown_ends_the_stream(boot_vm: BootVM, tmp_path: Path) -> None:
    disk = tmp_path / "panic.img"
    disk.write_bytes(pvpanic_boot_sector())
    args = ("-device", "pvpanic", "-drive", f"file={disk},format=raw,if=ide")
    async with boot_vm(*args, "-action", "panic=shutdown", name="panic-shutdown") as vm:
        shutdown = vm.qmp.events("SHUTDOWN")
        await check_guest_panicked(vm.qmp, "poweroff")
        first = await anext(shutdown)
        assert first.data.reason == "guest-panic"  # type: ignore[union-attr]
        # QEMU exits: the listener ends with a clear error instead of waiting forever.
        with pytest.raises(ConnectionLost):
            async with asyncio.timeout(20):
                await anext(shutdown)
        assert vm.process.wait(20) == 0

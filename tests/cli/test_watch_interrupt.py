"""`qmpevents watch` against a running simulator: live output, Ctrl-C exits 130."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from qmpevents.client.connection import QMPClient

QEMU = [sys.executable, "-m", "qmpevents.sim.main"]
WATCH = [sys.executable, "-c", "from qmpevents.cli import main; main()", "watch"]


async def wait_for_socket(path: Path) -> None:
    async with asyncio.timeout(20):
        while not path.exists():
            await asyncio.sleep(0.02)


async def test_watch_shows_events_then_ctrl_c_exits_130(tmp_path: Path) -> None:
    watched, driver = tmp_path / "vm1.sock", tmp_path / "drive.sock"
    sim = await asyncio.create_subprocess_exec(
        *QEMU,
        *("-qmp", f"unix:{watched},server=on,wait=off", "-qmp", f"unix:{driver},server=on"),
        *("-device", "virtio-serial-pci", "-device", "virtserialport,id=vs0"),
    )
    try:
        await wait_for_socket(watched)
        await wait_for_socket(driver)
        watch = await asyncio.create_subprocess_exec(
            *WATCH, str(watched), stdout=asyncio.subprocess.PIPE
        )
        assert watch.stdout is not None
        async with QMPClient(driver) as qmp:
            # Repeat until watch has connected and shows the event.
            async with asyncio.timeout(20):
                while True:
                    await qmp.execute("x-sim-vserport", {"id": "vs0", "open": True})
                    try:
                        line = await asyncio.wait_for(watch.stdout.readline(), 0.5)
                    except TimeoutError:
                        continue
                    break
        assert b"vm1" in line and b"VSERPORT_CHANGE" in line and b"vs0" in line
        watch.send_signal(signal.SIGINT)
        async with asyncio.timeout(20):
            assert await watch.wait() == 130
    finally:
        sim.terminate()
        await sim.wait()

"""QEMU's own Python client (qemu.qmp) receives every seed event from the simulator."""

from __future__ import annotations

import asyncio
import shutil
import tempfile

import pytest
from qemu.qmp import EventListener, QMPClient

from qmpevents.sim.cmdline import parse_command_line
from qmpevents.sim.machine import Machine, Timing
from qmpevents.throttle import RateLimiter

SEED_EVENTS = {
    "DUMP_COMPLETED",
    "GUEST_PANICKED",
    "MEM_UNPLUG_ERROR",
    "QUORUM_FAILURE",
    "QUORUM_REPORT_BAD",
    "MIGRATION_PASS",
    "VSERPORT_CHANGE",
}


async def test_every_seed_event_reaches_qemu_qmp() -> None:
    tmp = tempfile.mkdtemp(prefix="qs-")
    try:
        for index, byte in enumerate((0x32, 0x32, 0x42)):
            with open(f"{tmp}/c{index}.raw", "wb") as f:
                f.write(bytes([byte]) * 4096)
        argv = [
            # pseries: where QEMU 7.2 reports a refused DIMM unplug with MEM_UNPLUG_ERROR.
            "-qmp", f"unix:{tmp}/q.sock,server=on,wait=off", "-machine", "pseries",
            "-m", "256M,slots=2,maxmem=1G", "-action", "panic=none", "-device", "pvpanic-pci",
            "-device", "virtio-serial-pci,id=v", "-device", "virtserialport,id=vs0",
            "-object", "memory-backend-ram,id=m1,size=256M",
            "-device", "pc-dimm,id=dimm1,memdev=m1",
        ]  # fmt: skip
        machine = Machine(
            parse_command_line(argv),
            rate_limiter=RateLimiter(interval=0.05),
            timing=Timing(dump_rate=2e9, migration_tick=0.01),
        )
        await machine.start()
        client = QMPClient("sim")
        listener = EventListener()
        with client.listen(listener):
            await client.connect(f"{tmp}/q.sock")
            children = [
                {"driver": "raw", "node-name": f"c{i}",
                 "file": {"driver": "file", "filename": f"{tmp}/c{i}.raw"}}
                for i in range(3)
            ]  # fmt: skip
            await client.execute(
                "blockdev-add",
                {"driver": "quorum", "node-name": "q", "vote-threshold": 3, "children": children},
            )
            await client.execute(
                "dump-guest-memory", {"paging": False, "protocol": f"file:{tmp}/d"}
            )
            await client.execute("x-sim-pvpanic", {"value": 1})
            await client.execute("device_del", {"id": "dimm1"})
            await client.execute("x-sim-unplug-reject", {"id": "dimm1"})
            await client.execute("x-sim-vserport", {"id": "vs0", "open": True})
            await client.execute(
                "human-monitor-command", {"command-line": 'qemu-io q "read 0 512"'}
            )
            await client.execute("blockdev-del", {"node-name": "q"})
            # The same children voting with threshold 2: c2 loses and is reported.
            await client.execute(
                "blockdev-add",
                {"driver": "quorum", "node-name": "q2", "vote-threshold": 2, "children": children},
            )
            await client.execute(
                "human-monitor-command", {"command-line": 'qemu-io q2 "read 0 512"'}
            )
            await client.execute(
                "migrate-set-capabilities",
                {"capabilities": [{"capability": "events", "state": True}]},
            )
            await client.execute("migrate", {"uri": "exec:cat > /dev/null"})
            seen: set[str] = set()
            # Bounded: a missing event fails here, naming what never came.
            try:
                async with asyncio.timeout(30):
                    while not seen >= SEED_EVENTS:
                        event = await listener.get()
                        seen.add(event["event"])
            except TimeoutError:
                pytest.fail(f"never received {sorted(SEED_EVENTS - seen)}")
            await client.disconnect()
        await machine.server.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

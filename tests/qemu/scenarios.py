"""What the seed events look like through our client, as reusable assertions.

Every ``check_*`` coroutine takes a connected :class:`~qmpevents.client.connection.QMPClient`
and drives the machine only through QMP, so the same assertions can run against
anything that answers QMP like QEMU 7.2. Hook for the simulator: a test under
``tests/sim/`` connects a client to a simulated machine booted with the same
devices and calls these functions; ``test_real_qemu.py`` does it against a real
QEMU. Setup that only a real machine needs (image files, boot sectors) is passed in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

from qmpevents.client.connection import Dropped, EventListener, Gap, QMPClient
from qmpevents.schema.events import (
    DumpCompleted,
    Event,
    GuestPanicked,
    MigrationPass,
    QuorumFailure,
    QuorumReportBad,
)
from qmpevents.schema.types import GuestPanicAction

GuestAction = Callable[[QMPClient], Awaitable[object]]
"""What a simulated guest does where a real guest runs its own code."""

# Generous bounds for a slow CI machine; a passing run never waits for them.
EVENT_TIMEOUT = 20.0
# What QEMU's own write of a 64 MiB pc machine's guest memory totals (paging off).
DUMP_TOTAL_64M = 67371008


def _hmp_qemu_io(node: str, command: str) -> dict[str, object]:
    return {"command-line": f'qemu-io {node} "{command}"'}


async def check_dump_completed(qmp: QMPClient, target: Path) -> DumpCompleted:
    """A detached dump to a file ends with DUMP_COMPLETED, completed == total."""
    done = qmp.wait_for("DUMP_COMPLETED", timeout=EVENT_TIMEOUT)
    arguments = {"paging": False, "protocol": f"file:{target}", "detach": True}
    assert await qmp.execute("dump-guest-memory", arguments) == {}
    event = await done
    assert isinstance(event, DumpCompleted)
    assert event.data.result.status == "completed"
    assert event.data.result.completed == event.data.result.total == DUMP_TOTAL_64M
    assert event.data.error is None
    assert event.raw is not None and b'"status": "completed"' in event.raw
    return event


async def check_dump_failed(qmp: QMPClient) -> DumpCompleted:
    """A detached dump to /dev/full: the command succeeds, the event carries ``error``."""
    done = qmp.wait_for("DUMP_COMPLETED", where={"result.status": "failed"}, timeout=EVENT_TIMEOUT)
    arguments = {"paging": False, "protocol": "file:/dev/full", "detach": True}
    assert await qmp.execute("dump-guest-memory", arguments) == {}
    event = await done
    assert isinstance(event, DumpCompleted)
    assert event.data.result.completed == 0
    assert event.data.error is not None and "No space left on device" in event.data.error
    return event


async def check_migration_pass(qmp: QMPClient) -> list[MigrationPass]:
    """With the ``events`` capability, a paused VM's migration reports passes 1 and 2."""
    capability = [{"capability": "events", "state": True}]
    await qmp.execute("migrate-set-capabilities", {"capabilities": capability})
    passes: list[MigrationPass] = []
    async with qmp.events("MIGRATION_PASS", "MIGRATION") as events:
        await qmp.execute("migrate", {"uri": "exec:cat > /dev/null"})
        async for item in events:
            if isinstance(item, MigrationPass):
                passes.append(item)
            elif getattr(item, "name", "") == "MIGRATION":
                status = item.data.status  # type: ignore[union-attr]
                assert status not in ("failed", "cancelled")
                if status == "completed":
                    break
    assert [p.data.pass_ for p in passes] == list(range(1, len(passes) + 1))
    assert passes, "no MIGRATION_PASS before completion"
    return passes


def quorum_blockdev(name: str, images: list[Path]) -> dict[str, object]:
    """blockdev-add arguments of a quorum (vote-threshold 2) over raw images."""
    return {
        "driver": "quorum",
        "node-name": name,
        "vote-threshold": 2,
        "children": [
            {
                "driver": "raw",
                "node-name": f"{name}-c{index}",
                "file": {"driver": "file", "filename": str(image), "node-name": f"{name}-f{index}"},
            }
            for index, image in enumerate(images)
        ],
    }


def quorum_blkdebug_blockdev(name: str, images: list[Path], errno: int) -> dict[str, object]:
    """A quorum like :func:`quorum_blockdev` whose children c1 and c2 fail reads.

    blkdebug injects ``errno`` on every read of c1 and c2 (QEMU's ``read_aio``
    event), as in the reference quorum transcript.
    """
    arguments = quorum_blockdev(name, images)
    children: list[dict[str, object]] = arguments["children"]  # type: ignore[assignment]
    for index in (1, 2):
        child = children[index]
        child["file"] = {
            "driver": "blkdebug",
            "node-name": f"{name}-d{index}",
            "inject-error": [{"event": "read_aio", "errno": errno}],
            "image": child["file"],
        }
    return arguments


async def check_quorum_io_errors(qmp: QMPClient, name: str, error: str) -> None:
    """Read errors on two of three children: REPORT_BAD for each (with ``error``),
    then QUORUM_FAILURE, as QEMU 7.2 orders them."""
    events = qmp.events("QUORUM_*")
    command = _hmp_qemu_io(name, "read 1024 512")
    await qmp.execute("human-monitor-command", command)
    first, second, failure = [await _next_event(events) for _ in range(3)]
    for bad, child in ((first, f"{name}-c1"), (second, f"{name}-c2")):
        assert isinstance(bad, QuorumReportBad), bad
        assert bad.data.node_name == child and bad.data.error == error
        assert (bad.data.sector_num, bad.data.sectors_count, bad.data.type) == (2, 1, "read")
    assert isinstance(failure, QuorumFailure), failure
    assert (failure.data.reference, failure.data.sector_num) == (name, 2)
    assert failure.data.sectors_count == 1


async def check_quorum(qmp: QMPClient, name: str) -> None:
    """Quorum ``name`` whose child c2 is corrupted in sectors 0..7 and whose three
    children all differ in sector 16: REPORT_BAD for the bad child (rate-limited per
    node), and QUORUM_FAILURE for the three-way disagreement.
    """
    bad_child = f"{name}-c2"
    async with qmp.events("QUORUM_*") as events:
        await qmp.execute("human-monitor-command", _hmp_qemu_io(name, "read -P 0x32 0 512"))
        first = await _next_event(events)
        assert isinstance(first, QuorumReportBad)
        assert first.data.node_name == bad_child
        assert (first.data.sector_num, first.data.sectors_count, first.data.type) == (0, 1, "read")
        assert first.data.error is None  # a content mismatch, not an I/O error

        # A burst inside the one-second window: QEMU holds the reports back and
        # sends only the latest pending one when the window ends. (A very slow
        # machine may let a window end mid-burst; then one more gets through.)
        burst = range(1, 6)
        for sector in burst:
            command = _hmp_qemu_io(name, f"read -P 0x32 {sector * 512} 512")
            await qmp.execute("human-monitor-command", command)
        held: list[QuorumReportBad] = []
        while not held or held[-1].data.sector_num != burst[-1]:
            report = await _next_event(events)
            assert isinstance(report, QuorumReportBad)
            held.append(report)
        assert len(held) < len(burst)
        assert all(r.data.node_name == bad_child for r in held)
        # The delayed event keeps the time QEMU raised it, after the first one's.
        assert _micros(held[-1]) > _micros(first)

        await qmp.execute("human-monitor-command", _hmp_qemu_io(name, "read 8192 1024"))
        failure = await _next_event(events)
        assert isinstance(failure, QuorumFailure)
        assert (failure.data.reference, failure.data.sector_num) == (name, 16)
        assert failure.data.sectors_count == 2
        assert events.get_nowait() is None


async def _next_event(events: EventListener) -> Event:
    async with asyncio.timeout(EVENT_TIMEOUT):
        item = await anext(events)
    assert not isinstance(item, Gap | Dropped), item
    return item


def _micros(event: Event) -> int:
    return event.timestamp.seconds * 1_000_000 + event.timestamp.microseconds


async def check_guest_panicked(
    qmp: QMPClient, action: GuestPanicAction, *, guest_panics: GuestAction | None = None
) -> GuestPanicked:
    """The guest panics once ``cont`` runs it; ``action`` is QEMU's answer.

    On real QEMU the pvpanic boot sector panics by itself after ``cont``; a
    simulated guest needs ``guest_panics`` to write the pvpanic port.
    """
    panicked = qmp.wait_for("GUEST_PANICKED", timeout=EVENT_TIMEOUT)
    await qmp.execute("cont")
    if guest_panics is not None:
        await guest_panics(qmp)
    event = await panicked
    assert isinstance(event, GuestPanicked)
    assert event.data.action == action
    assert event.data.info is None  # pvpanic carries no panic information
    return event


def pvpanic_boot_sector() -> bytes:
    """``mov dx,0x505; mov al,1; out dx,al; hlt``, padded, with the 0x55AA signature."""
    code = bytes([0xBA, 0x05, 0x05, 0xB0, 0x01, 0xEE, 0xF4])
    return code.ljust(510, b"\0") + b"\x55\xaa"

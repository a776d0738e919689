"""LibvirtSource against a real libvirtd running real QEMU 7.2 TCG domains.

The events come from libvirt's QEMU monitor event API, and must be what a socket
gives: the same typed models, and the exact line QEMU would have written.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from qmpevents.client import Gap
from qmpevents.errors import CommandError, QMPConnectionError
from qmpevents.schema.events import DumpCompleted, Event, GuestPanicked, Resume, Stop
from qmpevents.sources import Connected, Disconnected, DomainSource, LibvirtSource, SourceItem
from tests.libvirt.host import URI, Domain, restart_libvirtd, virsh

pytestmark = pytest.mark.timeout(180)

WAIT = 60.0
QEMU_LINE = re.compile(
    rb'^\{"timestamp": \{"seconds": \d+, "microseconds": \d+\}, "event": "[A-Z_]+"'
    rb'(, "data": \{.*\})?\}$'
)


async def next_domain(source: LibvirtSource, name: str) -> DomainSource:
    async with asyncio.timeout(WAIT):
        async for item in source:
            if isinstance(item, DomainSource) and item.name == name:
                return item
    raise AssertionError(f"the source ended before domain {name} was announced")


async def take(items: AsyncIterator[SourceItem], kinds: tuple[type, ...]) -> SourceItem:
    """The next item of one of ``kinds`` (other items before it are skipped)."""
    async with asyncio.timeout(WAIT):
        async for item in items:
            if isinstance(item, kinds):
                return item
    raise AssertionError(f"ended before a {kinds}")


async def panic(domain: Domain, items: AsyncIterator[SourceItem]) -> GuestPanicked:
    """Press a key until the guest panics (a key during the BIOS's boot is not seen)."""
    waiting = asyncio.ensure_future(take(items, (GuestPanicked,)))
    try:
        async with asyncio.timeout(WAIT):
            while not waiting.done():
                await asyncio.to_thread(domain.panic)
                await asyncio.wait([waiting], timeout=1.0)
    finally:
        waiting.cancel()
    event = waiting.result()
    assert isinstance(event, GuestPanicked)
    return event


async def run(*args: str) -> str:
    return await asyncio.to_thread(virsh, *args)


async def test_every_domain_and_its_events(domains: Callable[..., Domain], tmp_path: Path) -> None:
    domain = domains()
    async with LibvirtSource(URI) as source:
        await asyncio.to_thread(domain.start)  # started after we attached: attached as it starts
        vm = await next_domain(source, domain.name)
        items = aiter(vm)
        assert isinstance(await take(items, (Connected,)), Connected)
        # libvirt starts QEMU with -S and then runs it: we saw it from the start.
        assert isinstance(await take(items, (Event,)), Resume)

        await run("suspend", domain.name)
        stop = await take(items, (Event,))
        await run("resume", domain.name)
        resume = await take(items, (Event,))
        assert isinstance(stop, Stop) and isinstance(resume, Resume)
        assert QEMU_LINE.match(stop.raw) and QEMU_LINE.match(resume.raw)

        dump = tmp_path / "memory.elf"
        await run("dump", "--memory-only", domain.name, str(dump))
        completed = await take(items, (DumpCompleted,))
        assert isinstance(completed, DumpCompleted)
        assert completed.data.result.status == "completed"
        assert completed.data.result.completed == completed.data.result.total > 0
        assert dump.read_bytes()[:4] == b"\x7fELF"
        assert QEMU_LINE.match(completed.raw)

        panicked = await panic(domain, items)
        assert isinstance(panicked, GuestPanicked)
        assert panicked.data.action == "pause"  # <on_crash>preserve</on_crash>
        assert panicked.raw.endswith(b'"event": "GUEST_PANICKED", "data": {"action": "pause"}}')

        # A command through libvirt, on the same domain.
        status = await vm.execute("query-status")
        assert status["status"] == "guest-panicked" and status["running"] is False
        with pytest.raises(CommandError, match="CommandNotFound"):
            await vm.execute("no-such-command")

        await asyncio.to_thread(domain.destroy)
        gone = await take(items, (Disconnected,))
        assert isinstance(gone, Disconnected) and "stopped (destroyed)" in gone.reason


async def test_one_domain_of_many(domains: Callable[..., Domain]) -> None:
    mine, other = domains(), domains()
    for domain in (mine, other):
        await asyncio.to_thread(domain.start)
    async with LibvirtSource(f"{URI}?domain={mine.name}", names=("STOP",)) as source:
        vm = await next_domain(source, mine.name)
        items = aiter(vm)
        assert isinstance(await take(items, (Connected,)), Connected)
        await run("suspend", other.name)
        await run("suspend", mine.name)
        await run("resume", mine.name)  # filtered out by names=("STOP",)
        stop = await take(items, (Event,))
        assert isinstance(stop, Stop)
        assert set(source.domains) == {mine.name}


async def test_libvirtd_restart_is_a_gap(domains: Callable[..., Domain]) -> None:
    domain = domains()
    await asyncio.to_thread(domain.start)
    async with LibvirtSource(f"{URI}?domain={domain.name}") as source:
        vm = await next_domain(source, domain.name)
        items = aiter(vm)
        assert isinstance(await take(items, (Connected,)), Connected)
        await asyncio.to_thread(restart_libvirtd)
        lost = await take(items, (Disconnected,))
        assert isinstance(lost, Disconnected) and "lost" in lost.reason
        back = await take(items, (Connected,))
        gap = await take(items, (Gap,))
        assert isinstance(back, Connected) and isinstance(gap, Gap)
        assert gap.started == lost.at and gap.ended >= gap.started
        # Re-registered: events flow again.
        await run("suspend", domain.name)
        assert isinstance(await take(items, (Event,)), Stop)


async def test_without_reconnect_a_dead_uri_fails_at_once() -> None:
    from tests.libvirt.host import require_libvirt

    require_libvirt()
    source = LibvirtSource("qemu+unix:///system?socket=/nonexistent/libvirt-sock", reconnect=False)
    with pytest.raises(QMPConnectionError, match="nonexistent"):
        await source.start()
    await source.aclose()

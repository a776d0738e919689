"""``qmpevents demo``: the simulator raises every seed event, and a real client shows them.

The demo runs in one process but over a real socket: it starts a simulated
machine on a temporary unix socket, connects the asyncio client to it as any
management tool would, replays the bundled ``demo`` scenario and prints each
event as ``qmpevents watch`` does (the same pure formatter), between the
scenario's narration lines. Exit statuses: 0 when all seven seed events were
received, 1 when one is missing or a step failed, 2 when the simulator cannot
start, 130 interrupted.

With ``--http HOST:PORT`` a collector attaches to the same machine through a second
monitor (as QEMU allows several ``-mon``), stores the events in a temporary
database and serves the timeline (:mod:`qmpevents.collect.web_app`); after the
summary the demo prints its URL and keeps serving until SIGINT or SIGTERM.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import click
from rich.console import Console
from rich.text import Text

from qmpevents.cli.collect import http_options
from qmpevents.cli.event_lines import format_item
from qmpevents.client.connection import EventListener, ListenerItem, QMPClient, connect
from qmpevents.collect.collector import Collector
from qmpevents.collect.config import CollectorConfig, VMSpec
from qmpevents.collect.web_app import HttpOptions
from qmpevents.errors import ConfigError, QMPEventsError
from qmpevents.schema.events import Event
from qmpevents.sim.config import MonitorEndpoint
from qmpevents.sim.machine import Machine
from qmpevents.sim.scenario import bundled_scenario, narration
from qmpevents.sim.scenario_format import Step
from qmpevents.sim.scenario_runner import run_scenario
from qmpevents.throttle import QEMU_RULES, RateLimiter

__all__ = ["SEED_EVENTS", "CountingRateLimiter", "demo", "run_demo"]

SEED_EVENTS: Final = (
    "DUMP_COMPLETED",
    "GUEST_PANICKED",
    "MEM_UNPLUG_ERROR",
    "QUORUM_FAILURE",
    "QUORUM_REPORT_BAD",
    "MIGRATION_PASS",
    "VSERPORT_CHANGE",
)
"""The seven events of the seed document, which the demo must show."""

_VM: Final = "demo"
# An in-process event reaches the client within milliseconds; one that arrives
# later than this after its timestamp was held by the rate limiter.
_HELD_AFTER: Final = 0.05


class CountingRateLimiter(RateLimiter[bytes]):
    """QEMU's rate limiter that also counts the events it held back (:attr:`held`)."""

    __slots__ = ("held",)

    def __init__(self, *, interval: float | None = None) -> None:
        super().__init__(interval=interval)
        self.held = 0

    def submit(
        self, event: str, data: Mapping[str, Any] | None, item: bytes, now: float
    ) -> bytes | None:
        """As :meth:`RateLimiter.submit`, counting each event it does not send at once."""
        sent = super().submit(event, data, item, now)
        if sent is None:
            self.held += 1
        return sent


class _View:
    """Prints events and narration in the order they happened, and counts the events."""

    def __init__(self, client: QMPClient, listener: EventListener) -> None:
        self.client = client
        self.listener = listener
        self.counts: Counter[str] = Counter()
        self.console = Console(highlight=False, soft_wrap=True) if sys.stdout.isatty() else None

    def echo(self, text: Text) -> None:
        if self.console is not None:
            self.console.print(text)
        else:
            click.echo(text.plain)

    def show(self, item: ListenerItem) -> None:
        line = format_item(_VM, item)
        if isinstance(item, Event):
            self.counts[item.name] += 1
            stamp = item.timestamp.seconds + item.timestamp.microseconds / 1e6
            delay = time.time() - stamp
            if item.name in QEMU_RULES and delay >= _HELD_AFTER:
                line.append(f" <- held back {delay:.2f} s", "bold yellow")
        self.echo(line)

    async def pump(self) -> None:
        async for item in self.listener:
            self.show(item)

    async def catch_up(self) -> None:
        """Show every event the server sent so far (those the limiter holds excepted)."""
        # The reply comes after every event the server sent before it, and the
        # client queues the events of a read before it resumes the command.
        await self.client.execute("query-status")
        while (item := self.listener.get_nowait()) is not None:
            self.show(item)

    async def on_step(self, index: int, step: Step) -> None:
        text = narration(step)
        if text is not None:
            await self.catch_up()
            self.echo(Text(f"» {text}", "bold cyan"))


async def run_demo(*, interval: float | None = None, http: HttpOptions | None = None) -> int:
    """Run the demo and print it to stdout; returns the exit status (see the module).

    ``interval`` replaces the rate limiter's 1 s (tests shorten it). With ``http``
    the timeline of the demo's events is served there until SIGINT or SIGTERM.
    """
    scenario = bundled_scenario("demo")
    limiter = CountingRateLimiter(interval=interval)
    with contextlib.ExitStack() as stack:
        workdir = stack.enter_context(tempfile.TemporaryDirectory(prefix="qmpevents-demo-"))
        # The simulator's qemu-io reports and guest messages are not part of the show.
        devnull = stack.enter_context(open(os.devnull, "w"))
        config = scenario.machine_config()
        path = os.path.join(workdir, "qmp.sock")
        config.monitors.append(MonitorEndpoint("unix", path=path))
        timeline_path = os.path.join(workdir, "timeline.sock")
        if http is not None:
            config.monitors.append(MonitorEndpoint("unix", path=timeline_path))
        machine = Machine(config, rate_limiter=limiter, stdout=devnull, stderr=devnull)
        try:
            await machine.start()
        except (ConfigError, OSError) as error:
            click.echo(f"qmpevents demo: cannot start the simulator: {error}", err=True)
            return 2
        collector: Collector | None = None
        if http is not None:
            try:
                collector = await _start_collector(http, timeline_path, Path(workdir))
            except (ConfigError, OSError, TimeoutError) as error:
                await machine.server.close()
                click.echo(f"qmpevents demo: cannot serve the timeline: {error}", err=True)
                return 2
        started = time.monotonic()
        try:
            async with connect(path) as qmp:
                view = _View(qmp, qmp.events())
                click.echo(f"qmpevents demo: a simulated QEMU on {path}, watched by a client")
                click.echo(f"qmpevents demo: {scenario.spec.description}\n")
                pump = asyncio.ensure_future(view.pump())
                try:
                    await run_scenario(machine, scenario, on_step=view.on_step, workdir=workdir)
                    await _drain(limiter, interval)
                    await view.catch_up()
                finally:
                    pump.cancel()
            status = _summary(view.counts, limiter, time.monotonic() - started)
            if collector is not None and collector.web_server is not None:
                click.echo(
                    f"\nThe timeline of the demo's events: {collector.web_server.url}"
                    "  (Ctrl-C to stop)"
                )
                await _until_signalled()
            elif http is None:
                click.echo("To see them on a timeline in a browser: qmpevents demo --http 8080")
        except QMPEventsError as error:  # a failed step (ScenarioError) or a lost connection
            click.echo(f"qmpevents demo: {error}", err=True)
            return 1
        finally:
            if collector is not None:
                await collector.aclose()
            await machine.server.close()
    return status


async def _start_collector(http: HttpOptions, target: str, workdir: Path) -> Collector:
    """A collector on the demo machine's second monitor, connected, serving ``http``."""
    config = CollectorConfig(vms=(VMSpec(_VM, target),), db=workdir / "demo.db", batch_interval=0.1)
    collector = Collector(config, http=http)
    try:
        await collector.start()
        # Bounded: the machine is in this process and listening already.
        async with asyncio.timeout(10):
            while not collector.endpoints[_VM].connected:
                await asyncio.sleep(0.01)
    except BaseException:
        await collector.aclose()
        raise
    return collector


async def _until_signalled() -> None:
    """Wait for SIGINT or SIGTERM (the page is served meanwhile)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        for signum in signals:
            loop.remove_signal_handler(signum)


async def _drain(limiter: RateLimiter[bytes], interval: float | None) -> None:
    """Wait until the limiter has delivered what it holds (at most two intervals)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(2 * (1.0 if interval is None else interval) + 0.5):
            while limiter.pending():
                await asyncio.sleep(0.02)


def _summary(counts: Counter[str], limiter: CountingRateLimiter, seconds: float) -> int:
    click.echo(f"\nSummary: {sum(counts.values())} events in {seconds:.1f} s")
    others = sorted(name for name in counts if name not in SEED_EVENTS)
    for name in (*SEED_EVENTS, *others):
        mark = "seed " if name in SEED_EVENTS else "     "
        click.echo(f"  {mark}{name:<26} {counts[name]}")
    late = limiter.held - limiter.dropped - limiter.pending()
    click.echo(
        f"Rate limiter: held back {limiter.held} event(s): {late} delivered late, "
        f"{limiter.dropped} dropped (replaced by a newer one for the same key)"
    )
    missing = [name for name in SEED_EVENTS if not counts[name]]
    if missing:
        click.echo(f"MISSING seed event(s): {', '.join(missing)}")
        return 1
    click.echo("All seven seed events were received.")
    return 0


@click.command()
@click.option(
    "--interval",
    type=click.FloatRange(min=0, min_open=True),
    help="The rate limiter's interval in seconds (QEMU's is 1).",
)
@click.option(
    "--http",
    metavar="HOST:PORT",
    help="Also serve the timeline of the demo's events here (PORT: on 127.0.0.1), until Ctrl-C.",
)
@click.option("--http-public", is_flag=True, help="Allow a non-loopback --http.")
def demo(interval: float | None, http: str | None, http_public: bool) -> None:
    """Run a simulated QEMU that raises all seven seed events, and watch them live.

    The bundled demo scenario dumps guest memory, bursts a virtio-serial port
    (the rate limiter holds events back), corrupts a quorum child, has the guest
    refuse a DIMM unplug, migrates and panics. Exit status 0 when every seed
    event was received, 1 otherwise.
    """
    options = http_options(http, http_public)
    try:
        status = asyncio.run(run_demo(interval=interval, http=options))
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)

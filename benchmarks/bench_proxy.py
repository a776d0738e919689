"""Events/s one client receives through ``qmpevents proxy`` versus directly, in one run.

Run: ``python benchmarks/bench_proxy.py [events]``. The upstream is a QMPServer
in a child process emitting MIGRATION_PASS bursts (the server of
bench_server.py, paced on its unread output); the proxy runs in a second child
process with its defaults (4 MiB output limit); the client, in this process,
negotiates and only counts lines. Each burst is received once directly from
the upstream and once through the proxy, alternating, three times each; the
best of each is shown, and their ratio. A client cut off at the output limit
would show as a failed run, not as a rate.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

try:
    from benchmarks.bench_server import _SERVER, Counter, _control, _counters
except ImportError:  # run as a script
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.bench_server import _SERVER, Counter, _control, _counters

SRC = Path(__file__).resolve().parent.parent / "src"

_PROXY = """
import asyncio, sys
from qmpevents.addresses import parse_address
from qmpevents.proxy import Proxy, ProxyConfig

async def main():
    proxy = Proxy(ProxyConfig(parse_address(sys.argv[1]), unix=[sys.argv[2]]))
    await proxy.start()
    print("ready", flush=True)
    await proxy.wait_closed()

asyncio.run(main())
"""


async def _receive(control_path: str, path: str, events: int) -> float:
    """Events/s one client on ``path`` receives for one burst."""
    control = await _control(control_path)
    (counter,) = await _counters(path, 1)
    done = counter.expect(events)
    start = time.perf_counter()
    await control.execute("x-burst", count=events)
    try:
        await asyncio.wait_for(done, 120)
    except TimeoutError:
        raise SystemExit(f"only {counter.lines} of {events} events arrived") from None
    elapsed = time.perf_counter() - start
    _close(counter)
    control.writer.close()
    return events / elapsed


def _close(counter: Counter) -> None:
    assert counter.transport is not None
    counter.transport.close()


async def _child(code: str, *argv: str) -> asyncio.subprocess.Process:
    env = dict(os.environ, PYTHONPATH=str(SRC))
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, *argv, stdout=subprocess.PIPE, env=env
    )
    assert child.stdout is not None
    await asyncio.wait_for(child.stdout.readline(), 30)
    return child


async def _run(events: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        upstream = os.path.join(tmp, "qmp.sock")
        proxied = os.path.join(tmp, "proxy.sock")
        server = await _child(_SERVER, upstream)
        # The server serves many clients at once (multi_client): the proxy, and the
        # control and direct clients beside it.
        proxy = await _child(_PROXY, upstream, proxied)
        try:
            direct, through = [], []
            for _ in range(3):
                direct.append(await _receive(upstream, upstream, events))
                through.append(await _receive(upstream, proxied, events))
            best_direct, best_through = max(direct), max(through)
            print(f"{'one client, ' + format(events, ',') + ' events':<34} {'events/s':>10}")
            print(f"{'directly from the upstream':<34} {best_direct:>10,.0f}")
            print(f"{'through qmpevents proxy':<34} {best_through:>10,.0f}")
            print(f"{'ratio proxy / direct':<34} {best_through / best_direct:>10.2f}")
        finally:
            for child in (proxy, server):
                child.terminate()
                await child.wait()


def main() -> None:
    """Print the table; ``argv[1]`` is the events per burst (default 50000)."""
    events = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    asyncio.run(_run(events))


if __name__ == "__main__":
    main()

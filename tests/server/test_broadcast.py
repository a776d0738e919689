"""Events through the server: timestamps, QEMU's rate limiter in real time, delivery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest

from qmpevents.errors import ConfigError
from qmpevents.schema.events import VserportChangeData
from qmpevents.server.broadcast import EventBroadcaster
from qmpevents.throttle import RateLimiter
from tests.server.conftest import RawClient


class RecordingClock:
    """The real wall clock, remembering every reading (the events' timestamps)."""

    def __init__(self) -> None:
        self.readings: list[float] = []

    def __call__(self) -> float:
        now = time.time()
        self.readings.append(now)
        return now


def stamp(message: dict[str, Any]) -> float:
    timestamp = message["timestamp"]
    return float(timestamp["seconds"]) + timestamp["microseconds"] / 1e6


async def test_timestamp_is_whole_microseconds_of_the_wall_clock() -> None:
    lines: list[bytes] = []
    broadcaster = EventBroadcaster(
        lines.append, RateLimiter(), wall_clock=lambda: 1795799141.999206, monotonic=time.monotonic
    )
    broadcaster.emit("VSERPORT_CHANGE", VserportChangeData(id="vs0", open=True))
    broadcaster.emit("STOP")
    broadcaster.close()
    assert lines == [
        b'{"timestamp": {"seconds": 1795799141, "microseconds": 999206}, '
        b'"event": "VSERPORT_CHANGE", "data": {"open": true, "id": "vs0"}}\r\n',
        b'{"timestamp": {"seconds": 1795799141, "microseconds": 999206}, "event": "STOP"}\r\n',
    ]


async def test_undeclared_event_is_refused(make_server: Callable[..., Any]) -> None:
    server, _ = await make_server()
    with pytest.raises(ConfigError, match="NO_SUCH_EVENT"):
        server.emit("NO_SUCH_EVENT")
    server.register_event("NO_SUCH_EVENT")
    assert server.emit("NO_SUCH_EVENT").endswith(b'"event": "NO_SUCH_EVENT"}\r\n')


async def _negotiated(path: str, clients: list[RawClient]) -> RawClient:
    client = await RawClient.connect(path)
    clients.append(client)
    await client.negotiate()
    return client


@pytest.mark.parametrize("interval", [0.2, None], ids=["0.2s", "qemu-default-1s"])
async def test_burst_for_one_key(
    make_server: Callable[..., Any], clients: list[RawClient], interval: float | None
) -> None:
    clock = RecordingClock()
    limiter: RateLimiter[bytes] = RateLimiter(interval=interval)
    server, path = await make_server(rate_limiter=limiter, wall_clock=clock)
    client = await _negotiated(path, clients)
    for n in range(5):
        server.emit("VSERPORT_CHANGE", {"id": "vs0", "open": n % 2 == 0})
    first = await client.message()
    first_arrival = time.time()
    delayed = await client.message(timeout=3)
    arrival = time.time()
    assert first["data"] == {"open": True, "id": "vs0"}
    assert stamp(first) == pytest.approx(clock.readings[0], abs=1e-6)
    # The last of the burst, with the timestamp it was created with.
    assert delayed["data"] == {"open": True, "id": "vs0"}
    assert stamp(delayed) == pytest.approx(clock.readings[4], abs=1e-6)
    assert stamp(delayed) < arrival
    assert arrival - first_arrival > (interval or 1.0) / 2
    assert limiter.dropped == 3
    assert await client.silent((interval or 1.0) * 1.5)  # the middle ones never come


async def test_burst_for_two_keys_is_throttled_per_key(
    make_server: Callable[..., Any], clients: list[RawClient]
) -> None:
    server, path = await make_server(rate_limiter=RateLimiter(interval=0.2))
    client = await _negotiated(path, clients)
    for port, state in [("vs0", True), ("vs1", True), ("vs0", False), ("vs1", False)]:
        server.emit("VSERPORT_CHANGE", VserportChangeData(id=port, open=state))
    server.emit("VSERPORT_CHANGE", VserportChangeData(id="vs0", open=True))
    server.emit("MIGRATION_PASS", {"pass": 1})
    server.emit("MIGRATION_PASS", {"pass": 2})
    received = [(await client.message())["data"] for _ in range(6)]
    assert received == [
        {"open": True, "id": "vs0"},
        {"open": True, "id": "vs1"},
        {"pass": 1},
        {"pass": 2},  # not throttled
        {"open": True, "id": "vs0"},  # delayed: the last for vs0
        {"open": False, "id": "vs1"},  # delayed: the last for vs1
    ]
    assert await client.silent(0.4)


async def test_monitor_negotiating_during_a_window_gets_the_delayed_event(
    make_server: Callable[..., Any], clients: list[RawClient]
) -> None:
    server, path = await make_server(rate_limiter=RateLimiter(interval=0.3))
    early = await _negotiated(path, clients)
    late = await RawClient.connect(path)
    clients.append(late)
    server.emit("VSERPORT_CHANGE", {"id": "vs0", "open": True})
    server.emit("VSERPORT_CHANGE", {"id": "vs0", "open": False})
    assert (await early.message())["data"]["open"] is True
    await late.negotiate()  # inside the window: the first event is not replayed
    late_event = await late.message(timeout=3)
    early_event = await early.message(timeout=3)
    assert late_event == early_event
    assert late_event["data"] == {"open": False, "id": "vs0"}


async def test_events_reach_only_negotiated_monitors(
    make_server: Callable[..., Any], clients: list[RawClient]
) -> None:
    server, path = await make_server()
    negotiated = await _negotiated(path, clients)
    greeted = await RawClient.connect(path)
    clients.append(greeted)
    server.emit("STOP")
    assert (await negotiated.message())["event"] == "STOP"
    assert await greeted.silent(0.2)


async def test_held_events_are_dropped_on_close(make_server: Callable[..., Any]) -> None:
    server, _ = await make_server(rate_limiter=RateLimiter(interval=0.1))
    server.emit("QUORUM_FAILURE", {"reference": "q", "sector-num": 0, "sectors-count": 1})
    server.emit("QUORUM_FAILURE", {"reference": "q", "sector-num": 1, "sectors-count": 1})
    assert server.rate_limiter.pending() == 1
    await server.close()
    await asyncio.sleep(0.2)  # the timer was cancelled: nothing runs after close
    assert server.rate_limiter.pending() == 1

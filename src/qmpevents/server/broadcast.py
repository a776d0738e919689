"""Event emission: timestamp, encode once, QEMU's global rate limiter, deliver.

This is ``monitor_qapi_event_queue()`` of QEMU's monitor/monitor.c on asyncio.
An event is stamped with the wall clock (``g_get_real_time()``: whole
microseconds), encoded once, and offered to the one :class:`RateLimiter` shared
by every monitor. What the limiter lets through is delivered at once; what it
holds is delivered by a timer on the monotonic clock, to the monitors that are
negotiated *when it fires*, so a monitor that negotiated in the meantime gets it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from qmpevents.protocol.encoding import encode_event
from qmpevents.throttle import RateLimiter

__all__ = ["EventBroadcaster", "EventData"]

EventData = Mapping[str, Any] | msgspec.Struct | None
"""Event members: a mapping in QAPI schema order, a ``data`` Struct, or None for none."""


class EventBroadcaster:
    """Stamps, encodes and rate-limits events, then hands each line to ``deliver``.

    ``deliver(line)`` writes one encoded event to every negotiated monitor.
    ``wall_clock`` gives seconds since the epoch (the timestamp); ``monotonic``
    gives the seconds the limiter and its timer run on.
    """

    def __init__(
        self,
        deliver: Callable[[bytes], None],
        limiter: RateLimiter[bytes],
        *,
        wall_clock: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self._deliver = deliver
        self.limiter = limiter
        self._wall_clock = wall_clock
        self._monotonic = monotonic
        self._timer: asyncio.TimerHandle | None = None
        self._timer_deadline = 0.0

    def emit(self, name: str, data: EventData = None) -> bytes:
        """Send event ``name`` with ``data`` now, or hold it if QEMU would throttle it.

        Returns the encoded line (sent now or later, unless a newer event for the
        same throttle key replaces it). Holding an event needs a running event loop.
        """
        members: Mapping[str, Any] | None = (
            msgspec.to_builtins(data) if isinstance(data, msgspec.Struct) else data
        )
        # Rounded, not truncated: a float time near 1.8e9 s is 0.2 us coarse, and
        # truncation would turn ...999206 into ...999205.
        microseconds = round(self._wall_clock() * 1_000_000)
        seconds, micro = divmod(microseconds, 1_000_000)
        line = encode_event(name, seconds, micro, members)
        if self.limiter.submit(name, members, line, self._monotonic()) is not None:
            self._deliver(line)
        self._schedule()
        return line

    def close(self) -> None:
        """Cancel the timer; held events are dropped, as when QEMU exits."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _schedule(self) -> None:
        deadline = self.limiter.next_deadline()
        if deadline is None:
            return
        if self._timer is not None:
            if self._timer_deadline <= deadline:
                return
            self._timer.cancel()
        # loop.call_at would tie the limiter to loop.time(); a delay keeps any
        # injected monotonic clock valid.
        delay = max(0.0, deadline - self._monotonic())
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)
        self._timer_deadline = deadline

    def _fire(self) -> None:
        self._timer = None
        for line in self.limiter.due(self._monotonic()):
            self._deliver(line)
        self._schedule()

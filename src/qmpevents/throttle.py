"""QEMU's monitor event rate limiter, as a pure object.

This reproduces ``monitor_qapi_event_queue_no_reenter`` and
``monitor_qapi_event_handler`` of QEMU's ``monitor/monitor.c``. Some events are
throttled per *(event name, key)*, where the key is one member of the event's
``data`` (or nothing, for events that get a single slot):

1. The first event for a key is sent at once, and a timer is armed for
   ``now + interval``.
2. Events that arrive while the timer is armed go into one pending slot. The
   latest wins, and the event it replaces is dropped (counted in
   :attr:`RateLimiter.dropped`).
3. When the timer fires, a pending event is sent and the timer is re-armed for
   ``now + interval``. With nothing pending, the key is forgotten, so the next
   event for it is sent at once again.

A delayed event is sent exactly as it was submitted: it keeps the timestamp it
was created with, so timestamps on the wire are not always in order.

The limiter holds no clock, tasks or threads. Every call takes ``now``, a
monotonic time in seconds, and the caller runs :meth:`RateLimiter.due` when
:meth:`RateLimiter.next_deadline` says so. As in QEMU, only ``due`` makes a
timer fire: an expired timer that ``due`` has not run yet still counts as
armed, so an event submitted then waits for the next ``due`` call.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Generic, TypeVar, cast

from qmpevents.errors import ConfigError

__all__ = ["QEMU_RULES", "RateLimiter", "ThrottleRule"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ThrottleRule:
    """How one event is throttled.

    ``key_member`` names the ``data`` member whose value selects the slot
    (``None``: one slot for the whole event). ``interval`` is the minimum time
    between two sends for one slot, in seconds; 0 turns throttling off, as a
    rate of 0 does in QEMU.
    """

    event: str
    key_member: str | None
    interval: float = 1.0

    def __post_init__(self) -> None:
        _check_interval(self.interval)


def _check_interval(interval: float) -> None:
    # A negative, infinite or NaN interval would hold events forever or never;
    # refuse it where it is configured rather than misbehave later.
    if not (math.isfinite(interval) and interval >= 0):
        raise ConfigError(f"throttle interval must be a finite number >= 0, not {interval!r}")


QEMU_RULES: Mapping[str, ThrottleRule] = {
    rule.event: rule
    for rule in (
        ThrottleRule("RTC_CHANGE", None),
        ThrottleRule("WATCHDOG", None),
        ThrottleRule("BALLOON_CHANGE", None),
        ThrottleRule("QUORUM_REPORT_BAD", "node-name"),
        ThrottleRule("QUORUM_FAILURE", None),
        ThrottleRule("VSERPORT_CHANGE", "id"),
        ThrottleRule("MEMORY_DEVICE_SIZE_CHANGE", "qom-path"),
    )
}
"""QEMU's table (``monitor_qapi_event_conf``): every other event passes straight through."""


class _Slot(Generic[T]):
    """The state of one armed (event, key): its timer and its pending event."""

    __slots__ = ("has_pending", "interval", "key", "pending")

    def __init__(self, key: tuple[str, Hashable], interval: float) -> None:
        self.key = key
        self.interval = interval
        # A flag rather than a sentinel in ``pending``, because None is a valid T.
        self.has_pending = False
        self.pending: T | None = None


class RateLimiter(Generic[T]):
    """QEMU's event rate limiter over items of any type ``T``.

    ``rules`` maps an event name to its :class:`ThrottleRule` (default: QEMU's
    table). ``interval``, when given, replaces the interval of every rule.
    Events without a rule, and rules whose interval is 0, are never held.

    ``T`` is whatever the caller wants back when an event is due, typically the
    encoded bytes; the limiter never looks inside it.

    Memory is bounded by the keys seen in the last interval: each holds at most
    one pending item, and a key is released when its window ends with nothing
    pending (in :meth:`due`).
    """

    __slots__ = ("_dropped", "_heap", "_pending", "_rules", "_seq", "_slots")

    def __init__(
        self, rules: Mapping[str, ThrottleRule] = QEMU_RULES, *, interval: float | None = None
    ) -> None:
        if interval is not None:
            _check_interval(interval)
        table: dict[str, ThrottleRule] = {}
        for name, rule in rules.items():
            if rule.event != name:
                raise ConfigError(f"throttle rule for {rule.event!r} is filed under {name!r}")
            if interval is not None:
                rule = replace(rule, interval=interval)
            if rule.interval > 0:
                table[name] = rule
        self._rules = table
        self._slots: dict[tuple[str, Hashable], _Slot[T]] = {}
        # One entry per armed slot: (deadline, seq, slot). ``seq`` orders equal
        # deadlines by arming order and keeps tuple comparison away from slots.
        # An entry is popped before its slot is re-armed or forgotten, so the
        # heap never holds a stale entry and always has len(self._slots) items.
        self._heap: list[tuple[float, int, _Slot[T]]] = []
        self._seq = 0
        self._pending = 0
        self._dropped = 0

    @property
    def rules(self) -> Mapping[str, ThrottleRule]:
        """The effective rules (after ``interval``), throttled events only."""
        return self._rules

    @property
    def dropped(self) -> int:
        """How many items were replaced in a pending slot and so never sent."""
        return self._dropped

    def submit(self, event: str, data: Mapping[str, Any] | None, item: T, now: float) -> T | None:
        """Offer ``item``, the event ``event`` with members ``data``, at time ``now``.

        Returns ``item`` when it must be sent now, or ``None`` when it is held
        (it then comes out of a later :meth:`due`, unless a newer item for the
        same key replaces it first). A throttled event whose ``data`` lacks the
        key member, or has no ``data``, uses the key ``None``: all such events
        of one name share a slot, apart from the slots of real key values.
        """
        rule = self._rules.get(event)
        if rule is None:
            return item
        member = rule.key_member
        value: Hashable = None if member is None or data is None else data.get(member)
        key = (event, value)
        try:
            slot = self._slots.get(key)
        except TypeError:
            # An unhashable key value (a list or object where QEMU has a
            # string) comes from a malformed event; key it by its text rather
            # than fail the emitter.
            key = (event, ("unhashable", repr(value)))
            slot = self._slots.get(key)
        if slot is None:
            slot = _Slot(key, rule.interval)
            self._slots[key] = slot
            self._arm(slot, now)
            return item
        if slot.has_pending:
            self._dropped += 1
        else:
            slot.has_pending = True
            self._pending += 1
        slot.pending = item
        return None

    def due(self, now: float) -> list[T]:
        """Fire every timer whose deadline is at or before ``now``.

        Returns the pending items of those slots, to be sent now, in deadline
        order (ties in the order the timers were armed). A slot that sent an
        item is re-armed for ``now + interval``; a slot with nothing pending is
        forgotten.
        """
        heap = self._heap
        out: list[T] = []
        while heap and heap[0][0] <= now:
            slot = heapq.heappop(heap)[2]
            if slot.has_pending:
                out.append(cast(T, slot.pending))  # has_pending: it holds a T
                slot.pending = None
                slot.has_pending = False
                self._pending -= 1
                # Re-armed from the time the timer ran, not its deadline, as
                # QEMU does; the new deadline is > now, so this loop ends.
                self._arm(slot, now)
            else:
                del self._slots[slot.key]
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`due` next has work (the earliest armed timer), or ``None`` when idle.

        The deadline may have nothing pending: ``due`` then only forgets the key.
        """
        return self._heap[0][0] if self._heap else None

    def pending(self) -> int:
        """How many items are held, waiting for :meth:`due` (at most one per key)."""
        return self._pending

    def active_keys(self) -> int:
        """How many (event, key) slots have an armed timer."""
        return len(self._slots)

    def _arm(self, slot: _Slot[T], now: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (now + slot.interval, self._seq, slot))

"""When a rule may run for a VM: debounce, rate limit and the crash-loop guard.

Pure logic; the caller passes the clock. Per VM, :meth:`Guard.admit` says:

- ``"run"``: start a run now (it counts from now on);
- ``"debounced"``: a run of this rule for the VM started less than ``debounce`` s ago;
- ``"rate-limited"``: ``rate`` runs already started in the last 60 s;
- ``"suspend"``: ``max-runs`` runs in ``window`` s: the rule is now suspended for the
  VM (reported once; the caller logs and counts it);
- ``"suspended"``: suspended already; it stays so while the collector runs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Literal

from qmpevents.collect.actions.rules import Rule

__all__ = ["Guard", "Verdict"]

Verdict = Literal["run", "debounced", "rate-limited", "suspend", "suspended"]
RATE_PERIOD = 60.0


class Guard:
    """The guards of one ``rule`` for every VM, on ``clock`` (seconds, monotonic)."""

    def __init__(self, rule: Rule, clock: Callable[[], float]) -> None:
        self.rule = rule
        self.clock = clock
        self._starts: dict[str, deque[float]] = {}
        self._suspended: set[str] = set()

    def suspended(self, vm: str) -> bool:
        """Whether the rule is suspended for ``vm``."""
        return vm in self._suspended

    def runs_in_window(self, vm: str) -> int:
        """Runs started for ``vm`` within the last ``window`` seconds."""
        now = self.clock()
        return sum(1 for t in self._starts.get(vm, ()) if now - t < self.rule.window)

    def admit(self, vm: str) -> Verdict:
        """Whether a match for ``vm`` now runs; a ``"run"`` counts as started now."""
        if vm in self._suspended:
            return "suspended"
        rule = self.rule
        now = self.clock()
        starts = self._starts.setdefault(vm, deque())
        keep = max(rule.window, RATE_PERIOD, rule.debounce)
        while starts and now - starts[0] >= keep:
            starts.popleft()
        if starts and now - starts[-1] < rule.debounce:
            return "debounced"
        if rule.max_runs is not None and self.runs_in_window(vm) >= rule.max_runs:
            self._suspended.add(vm)
            return "suspend"
        if rule.rate is not None and sum(1 for t in starts if now - t < RATE_PERIOD) >= rule.rate:
            return "rate-limited"
        starts.append(now)
        return "run"

    def forget(self, vm: str) -> None:
        """Drop what is known of ``vm`` (it was detached)."""
        self._starts.pop(vm, None)
        self._suspended.discard(vm)

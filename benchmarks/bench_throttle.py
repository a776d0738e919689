"""Cost per event of the rate limiter (qmpevents.throttle), with an anchor in the same run.

Run: ``python benchmarks/bench_throttle.py [n]``. Prints ns/event for each case and its
ratio to the anchor, a loop that only does the one dict lookup a pass-through needs.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    from qmpevents.throttle import QEMU_RULES, RateLimiter
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from qmpevents.throttle import QEMU_RULES, RateLimiter

ITEM = b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "X"}\r\n'


def _anchor(n: int) -> float:
    """The floor: one dict lookup per event, as in the pass-through path."""
    rules = QEMU_RULES
    start = time.perf_counter()
    for _ in range(n):
        rules.get("MIGRATION_PASS")
    return time.perf_counter() - start


def _pass_through(n: int) -> float:
    limiter: RateLimiter[bytes] = RateLimiter()
    submit = limiter.submit
    data = {"pass": 1}
    start = time.perf_counter()
    for i in range(n):
        submit("MIGRATION_PASS", data, ITEM, i * 1e-3)
    return time.perf_counter() - start


def _throttled_held(n: int) -> float:
    """A burst on one key: all but the first are held and replace each other."""
    limiter: RateLimiter[bytes] = RateLimiter()
    submit = limiter.submit
    data = {"open": True, "id": "vs0"}
    start = time.perf_counter()
    for i in range(n):
        submit("VSERPORT_CHANGE", data, ITEM, i * 1e-9)
    return time.perf_counter() - start


def _throttled_new_keys(n: int) -> float:
    """Every event on a fresh key: sent at once, timer armed, then forgotten by due()."""
    limiter: RateLimiter[bytes] = RateLimiter()
    submit = limiter.submit
    datas = [{"node-name": f"q-c{i}", "sector-num": 0} for i in range(n)]
    start = time.perf_counter()
    for i, data in enumerate(datas):
        submit("QUORUM_REPORT_BAD", data, ITEM, i * 1e-6)
    limiter.due(1e9)
    return time.perf_counter() - start


def _delayed_send(n: int) -> float:
    """n keys, each with a held event, all released by one due() (heap pops and re-arms)."""
    limiter: RateLimiter[bytes] = RateLimiter()
    datas = [{"id": f"vs{i}", "open": True} for i in range(n)]
    for data in datas:
        limiter.submit("VSERPORT_CHANGE", data, ITEM, 0.0)
        limiter.submit("VSERPORT_CHANGE", data, ITEM, 0.0)
    start = time.perf_counter()
    sent = limiter.due(1.0)
    elapsed = time.perf_counter() - start
    assert len(sent) == n
    return elapsed


CASES: dict[str, Callable[[int], float]] = {
    "anchor dict.get": _anchor,
    "pass-through submit": _pass_through,
    "throttled submit, held": _throttled_held,
    "throttled submit, new key + due": _throttled_new_keys,
    "due, delayed send + re-arm": _delayed_send,
}


def run(n: int) -> dict[str, float]:
    """ns per event for each case (best of three runs of ``n`` events)."""
    return {name: min(case(n) for _ in range(3)) / n * 1e9 for name, case in CASES.items()}


def main(argv: list[Any]) -> None:
    n = int(argv[1]) if len(argv) > 1 else 200_000
    results = run(n)
    anchor = results["anchor dict.get"]
    print(f"rate limiter, {n} events per case (ns/event, ratio to the anchor)")
    for name, ns in results.items():
        print(f"  {name:34} {ns:8.1f} ns/event  {ns / anchor:6.1f}x")


if __name__ == "__main__":
    main(sys.argv)

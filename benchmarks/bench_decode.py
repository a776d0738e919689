"""Decode + classify + validate throughput of server output, against the anchors.

One stream of N mixed seed events in QEMU's exact byte format (``\\r\\n`` lines,
QEMU's member order) is decoded, in the same run, by:

* ``qmpevents``: ``ClientSession.receive_data`` on 64 KiB chunks, i.e. line
  framing, classification (greeting / reply / event) and typed, validated
  events that keep their raw bytes;
* ``json.loads``: a plain loop over the lines, dicts only, no validation;
* ``orjson``: the same loop with orjson.loads.

Run: ``python benchmarks/bench_decode.py [N]`` (default 1,000,000). Prints events/s
and the ratio of each to the ``json.loads`` anchor.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson

try:
    from qmpevents.protocol.client_session import ClientSession
    from qmpevents.protocol.encoding import encode_event
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
    from qmpevents.protocol.client_session import ClientSession
    from qmpevents.protocol.encoding import encode_event

GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
    b'"package": ""}, "capabilities": ["oob"]}}\r\n'
)

# The seven seed events with the data QEMU 7.2 sent in the reference transcripts.
SEED_EVENTS: list[tuple[str, dict[str, object]]] = [
    (
        "DUMP_COMPLETED",
        {"result": {"status": "completed", "completed": 67371008, "total": 67371008}},
    ),
    ("GUEST_PANICKED", {"action": "pause"}),
    (
        "MEM_UNPLUG_ERROR",
        {"device": "dimm1", "msg": "Memory hotunplug rejected by the guest for device dimm1"},
    ),
    ("QUORUM_FAILURE", {"reference": "qM", "sector-num": 16, "sectors-count": 2}),
    (
        "QUORUM_REPORT_BAD",
        {
            "type": "read",
            "error": "Input/output error",
            "node-name": "qM-c2",
            "sector-num": 0,
            "sectors-count": 1,
        },
    ),
    ("MIGRATION_PASS", {"pass": 3}),
    ("VSERPORT_CHANGE", {"id": "vs0", "open": True}),
]


def event_stream(n: int) -> bytes:
    """N seed events in QEMU's byte format, cycling through the seven."""
    lines = [
        encode_event(name, 1795799056 + i, i % 1_000_000, data)
        for i, (name, data) in zip(range(len(SEED_EVENTS)), SEED_EVENTS, strict=True)
    ]
    cycle = b"".join(lines)
    full, rest = divmod(n, len(lines))
    return cycle * full + b"".join(lines[:rest])


def run_qmpevents(stream: bytes) -> int:
    session = ClientSession()
    session.receive_data(GREETING)
    count = 0
    chunk = 1 << 16
    receive = session.receive_data
    for start in range(0, len(stream), chunk):
        count += len(receive(stream[start : start + chunk]))
    assert session.protocol_errors == 0
    return count


def run_json(stream: bytes) -> int:
    loads = json.loads
    return sum(1 for line in stream.splitlines() if loads(line))


def run_orjson(stream: bytes) -> int:
    loads = orjson.loads
    return sum(1 for line in stream.splitlines() if loads(line))


CASES: dict[str, Callable[[bytes], int]] = {
    "json.loads per line (anchor)": run_json,
    "orjson.loads per line": run_orjson,
    "qmpevents ClientSession (typed, validated)": run_qmpevents,
}


def main(n: int | None = None) -> dict[str, float]:
    """Run every case on the same stream; print and return events/s per case."""
    if n is None:
        n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    stream = event_stream(n)
    rates: dict[str, float] = {}
    for name, case in CASES.items():
        best = float("inf")
        for _ in range(2):
            start = time.perf_counter()
            count = case(stream)
            best = min(best, time.perf_counter() - start)
            assert count == n, (name, count)
        rates[name] = n / best
    anchor = rates["json.loads per line (anchor)"]
    print(f"decode {n:,} QEMU-format seed events (best of 2)")
    for name, rate in rates.items():
        print(f"  {name:<45} {rate:>12,.0f} events/s  {rate / anchor:5.2f}x")
    return rates


if __name__ == "__main__":
    main()

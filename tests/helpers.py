"""Shared test doubles and paths to the test data carried in this repository."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
# Recorded from a real QEMU 7.2 by tools/record_reference.py (see tests/data/README.md).
REFERENCE = DATA / "qemu-7.2"
# Our own fixture of the seven events' documentation examples, quirks included.
EVENT_EXAMPLES = DATA / "event-examples.txt"
TRANSCRIPTS = (
    "protocol", "dump", "migration", "guest_panic", "quorum", "vserport", "mem_unplug",
    "dimm_unplug_pc", "reset",
)  # fmt: skip


def load_transcript(name: str) -> dict[str, Any]:
    """One reference transcript (qmp-acceptance-transcript/1) as a dict."""
    with (REFERENCE / f"{name}.json").open() as f:
        data: dict[str, Any] = json.load(f)
    return data


def raw_bytes(line: dict[str, Any]) -> bytes:
    """The exact bytes of one transcript line."""
    if "raw_b64" in line:
        import base64

        return base64.b64decode(line["raw_b64"])
    raw: str = line["raw"]
    return raw.encode("utf-8", "surrogateescape")


def step_events(name: str, label_prefix: str) -> list[tuple[float, float, dict[str, Any]]]:
    """The events received during one transcript step, derived from its lines.

    Each is ``(received, stamped, message)``: both times in seconds after the
    step began (``stamped`` from QEMU's timestamp, against the wall clock of the
    step's first line).
    """
    transcript = load_transcript(name)
    starts = [step["seq_from"] for step in transcript["steps"]]
    start = next(
        step["seq_from"] for step in transcript["steps"] if step["label"].startswith(label_prefix)
    )
    end = min((seq for seq in starts if seq > start), default=len(transcript["lines"]))
    lines = transcript["lines"][start:end]
    first = lines[0]
    found = []
    for line in lines:
        if line.get("kind") == "event":
            message = json.loads(raw_bytes(line))
            stamp = message["timestamp"]["seconds"] + message["timestamp"]["microseconds"] / 1e6
            found.append((line["rel"] - first["rel"], stamp - first["wall"], message))
    return found


class FakeClock:
    """A monotonic clock that only moves when a test moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

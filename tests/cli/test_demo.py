"""`qmpevents demo` end to end: a subprocess that shows all seven seed events."""

from __future__ import annotations

import re
import subprocess
import sys

from qmpevents.cli.demo import SEED_EVENTS

DEMO = [sys.executable, "-c", "from qmpevents.cli import main; main()", "demo"]


def test_demo_shows_every_seed_event_and_exits_0() -> None:
    result = subprocess.run(DEMO, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    for name in SEED_EVENTS:
        assert any(f" demo {name} " in line for line in lines), name
    # The burst: a VSERPORT_CHANGE the rate limiter delivered late, and the summary's counts.
    assert any("VSERPORT_CHANGE" in line and "held back" in line for line in lines)
    assert "All seven seed events were received." in lines
    assert any(re.match(r"Rate limiter: held back [1-9]\d* event", line) for line in lines)
    assert any(line.startswith("» ") for line in lines)

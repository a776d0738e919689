"""`qmpevents demo` end to end: a subprocess that shows all seven seed events."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request

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
    assert lines[-1] == "To see them on a timeline in a browser: qmpevents demo --http 8080"
    assert any(re.match(r"Rate limiter: held back [1-9]\d* event", line) for line in lines)
    assert any(line.startswith("» ") for line in lines)


def test_demo_serves_the_timeline_of_its_events_until_interrupted() -> None:
    """``demo --http``: the URL comes after the summary, the API has all seven seed
    events (stored by a collector on a second monitor), and SIGINT ends it with 0."""
    process = subprocess.Popen(
        [*DEMO, "--interval", "0.2", "--http", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = None
        for line in process.stdout:  # bounded by the pytest timeout
            if match := re.match(r"The timeline of the demo's events: (http://\S+)", line):
                url = match.group(1)
                break
        assert url is not None and not url.endswith(":0/"), process.stderr
        with urllib.request.urlopen(url + "api/stats", timeout=10) as response:
            stats = json.load(response)
        assert set(SEED_EVENTS) <= set(stats["events"]), stats
        with urllib.request.urlopen(url, timeout=10) as response:
            assert b"<html" in response.read().lower()
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        process.kill()
        process.wait()


def test_demo_refuses_a_timeline_reachable_from_the_network() -> None:
    result = subprocess.run(
        [*DEMO, "--http", "0.0.0.0:0"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert "reachable from the network" in result.stderr

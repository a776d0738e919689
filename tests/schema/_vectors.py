"""Test vectors shared by the schema tests: recorded events and the documentation examples."""

from __future__ import annotations

import json
from typing import Any

from tests.helpers import EVENT_EXAMPLES, TRANSCRIPTS, load_transcript, raw_bytes


def recorded_events() -> list[tuple[str, int, bytes]]:
    """(transcript, seq, raw) of every event QEMU 7.2 sent in the reference transcripts."""
    found = []
    for name in TRANSCRIPTS:
        for line in load_transcript(name)["lines"]:
            if line.get("dir") == "recv" and line.get("kind") == "event":
                found.append((name, line["seq"], raw_bytes(line)))
    return found


def documented_examples() -> list[tuple[str, Any]]:
    """(event name, decoded example) for each documentation example that is valid JSON.

    Examples are found by brace balance; one (MEM_UNPLUG_ERROR's, which lacks a comma)
    is not JSON and is skipped, as documentation printed it.
    """
    text = EVENT_EXAMPLES.read_text()
    examples: list[tuple[str, Any]] = []
    depth = 0
    start = 0
    for index, char in enumerate(text):
        if char == "{":
            if depth == 0:
                start = index
            depth += 1
        elif char == "}" and depth:
            depth -= 1
            if depth == 0:
                try:
                    value = json.loads(text[start : index + 1])
                except json.JSONDecodeError:
                    continue
                examples.append((value["event"], value))
    return examples

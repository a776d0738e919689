"""``qmpevents shell`` under a pseudo-terminal, as a person types it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest

from qmpevents.cli.shell import QMPCompleter
from tests.helpers import REFERENCE
from tests.sim.programs import simulated_vm

STEP = 20  # seconds pexpect waits for each expected text


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[str]:
    with simulated_vm(tmp_path / "vm.sock") as path:
        yield path


def spawn(target: str, home: Path) -> pexpect.spawn:
    command = Path(sys.executable).parent / "qmpevents"
    env = dict(os.environ, TERM="dumb", XDG_DATA_HOME=str(home), PYTHONUNBUFFERED="1")
    child = pexpect.spawn(str(command), ["shell", target], env=env, encoding="utf-8", timeout=STEP)
    child.expect_exact("(QEMU) ")
    return child


def test_commands_replies_events_history_and_completion(vm: str, tmp_path: Path) -> None:
    child = spawn(vm, tmp_path)
    try:
        child.sendline("query-status")
        child.expect(r'"status": "running"')
        child.sendline("stop")
        # the event comes above the prompt, without pressing Enter again
        child.expect(r"\bSTOP\b")
        child.sendline("device_del id=nope")
        child.expect_exact("error: DeviceNotFound: Device 'nope' not found")
        # Tab completes the command name (the second Tab picks it from the menu)
        child.send("query-stat\t")
        child.send("\t")
        child.send("\r")
        child.expect(r'"status": "paused"')
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    history = (tmp_path / "qmpevents" / "shell_history").read_text()
    assert "query-status" in history and "stop" in history


def test_the_completer_offers_commands_then_their_arguments() -> None:
    from prompt_toolkit.completion import CompleteEvent
    from prompt_toolkit.document import Document

    completer = QMPCompleter(json.loads((REFERENCE / "qmp_schema_full.json").read_text()))

    def complete(text: str) -> list[str]:
        found = completer.get_completions(Document(text), CompleteEvent())
        return [c.text for c in found]

    assert "query-status" in complete("query-st")
    assert all(name.startswith("dump-") for name in complete("dump-"))
    offered = complete("migrate-set-parameters max-band")
    assert offered == ["max-bandwidth="]
    assert "downtime-limit=" not in complete("migrate-set-parameters downtime-limit=5 ")


def test_an_unreachable_target_exits_2(tmp_path: Path) -> None:
    command = Path(sys.executable).parent / "qmpevents"
    result = subprocess.run(
        [str(command), "shell", str(tmp_path / "none.sock")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "cannot connect" in result.stderr

"""Action rules without QEMU: parsing and line numbers, the guards on a fake clock, the runner."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from click.testing import CliRunner

from qmpevents.cli import main
from qmpevents.cli.history import history
from qmpevents.collect.actions.guards import Guard
from qmpevents.collect.actions.rules import Rule, Step
from qmpevents.collect.actions.runner import ActionRunner
from qmpevents.collect.actions.store import ActionRecord, ActionStore, StepRecord, read_actions
from qmpevents.collect.config import load_config
from qmpevents.collect.metrics import CollectorMetrics
from qmpevents.errors import ConfigError
from tests.collect.conftest import event_record

GOOD = """\
[collector]
batch_size = 10

[[action]]
name = "first"
event = "VSERPORT_*"
steps = [{execute = "cont"}]

# a comment
[[action]]
name = "second"
event = "GUEST_PANICKED"
vm = "web?"
where = {action = "pause"}
debounce = 5
rate = 2
max-runs = 3
window = 60
steps = [{execute = "stop"}, {wait-for = "STOP", timeout = 3}, {exec = ["true"]},
         {post = "http://127.0.0.1:1/x", timeout = 1}]
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "collect.toml"
    path.write_text(text)
    return path


def test_rules_are_read_from_the_config(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, GOOD))
    first, second = config.actions
    assert (first.name, first.line, second.name, second.line) == ("first", 4, "second", 10)
    assert second.matches("web1", "GUEST_PANICKED") and not second.matches("db1", "GUEST_PANICKED")
    assert [s.kind for s in second.steps] == ["execute", "wait-for", "exec", "post"]
    assert (second.max_runs, second.window, second.rate, second.debounce) == (3, 60, 2, 5)
    assert second.matches_data({"action": "pause"}) and not second.matches_data({"action": "run"})
    assert load_config(_write(tmp_path, "[collector]\n")).actions == ()


@pytest.mark.parametrize(
    ("change", "message", "line"),
    [
        ("debounce = 5\n", "debounce = 5\nbogus = 1\n", 16),
        ('vm = "web?"', 'vm = "web["', 13),
        ('{exec = ["true"]}', '{spawn = ["true"]}', 19),
        ("max-runs = 3", "max-runs = -3", 17),
        ('{execute = "stop"}', "{execute = 12}", 19),
        ('event = "GUEST_PANICKED"\n', "", 10),  # a missing key: the rule's header
        ("window = 60", "window = -1", 18),
    ],
)
def test_a_bad_rule_names_file_rule_and_line(
    tmp_path: Path, change: str, message: str, line: int
) -> None:
    path = _write(tmp_path, GOOD.replace(change, message, 1))
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value).startswith(f"{path}:{line}: action 'second': ")


def test_bad_rule_messages_say_what_is_wrong(tmp_path: Path) -> None:
    cases = {
        "bogus = 1": "bogus: unknown key",
        'vm = "web["': "vm: not a valid glob",
        "{spawn = 1}": "steps[0]: expected exactly one of execute, wait-for, exec, post",
        "{execute = 12}": "steps[0].execute: expected a non-empty string, got 12",
        "max-runs = -3": "max-runs: must be at least 1",
        "debounce = -1": "debounce: must be >= 0",
        '{post = "ftp://x"}': "steps[0].post: expected an http:// or https:// URL",
    }
    for line, expected in cases.items():
        key = line.split(" ")[0]
        text = '[[action]]\nname = "r"\nevent = "X"\n'
        if key.startswith("{"):
            text += f"steps = [{line}]\n"
        else:
            text += f'steps = [{{execute = "cont"}}]\n{line}\n'
        number = 4 if key.startswith("{") else 5  # the line of the key at fault
        with pytest.raises(ConfigError) as caught:
            load_config(_write(tmp_path, text))
        assert str(caught.value).startswith(f"{tmp_path / 'collect.toml'}:{number}: action 'r': ")
        assert expected in str(caught.value)


def _rule(**options: Any) -> Rule:
    return Rule(name="r", event="GUEST_PANICKED", steps=(Step("execute", "cont"),), **options)


def test_debounce_ignores_matches_soon_after_a_run() -> None:
    clock = Clock()
    guard = Guard(_rule(debounce=10), clock)
    assert guard.admit("a") == "run"
    clock.now += 5
    assert (guard.admit("a"), guard.admit("b")) == ("debounced", "run")
    clock.now += 5
    assert guard.admit("a") == "run"


def test_rate_limits_runs_per_minute_per_vm() -> None:
    clock = Clock()
    guard = Guard(_rule(rate=2), clock)
    assert [guard.admit("a") for _ in range(3)] == ["run", "run", "rate-limited"]
    assert guard.admit("b") == "run"
    clock.now += 60
    assert guard.admit("a") == "run"


def test_the_crash_loop_guard_suspends_after_max_runs_in_the_window() -> None:
    clock = Clock()
    guard = Guard(_rule(max_runs=3, window=600), clock)
    assert [guard.admit("a") for _ in range(3)] == ["run"] * 3
    assert guard.runs_in_window("a") == 3
    assert guard.admit("a") == "suspend"
    clock.now += 10_000
    assert guard.admit("a") == "suspended"  # until the collector restarts
    assert guard.admit("b") == "run"


def test_runs_spread_over_more_than_the_window_are_not_a_loop() -> None:
    clock = Clock()
    guard = Guard(_rule(max_runs=2, window=100), clock)
    for _ in range(5):
        assert guard.admit("a") == "run"
        clock.now += 60


class FakeVM:
    def __init__(self) -> None:
        self.commands: list[tuple[str, str, Mapping[str, Any]]] = []
        self.runner: ActionRunner | None = None

    async def execute(self, vm: str, command: str, arguments: Mapping[str, Any], _t: float) -> Any:
        self.commands.append((vm, command, dict(arguments)))
        if command == "dump-guest-memory":  # detach: the event comes right after the reply
            assert self.runner is not None
            asyncio.get_running_loop().call_soon(
                self.runner.on_event, vm, event_record(vm, 7, "MIGRATION_PASS")
            )
        if command == "fail":
            raise RuntimeError("no such command")
        return {}


async def test_a_run_executes_its_steps_and_is_recorded(tmp_path: Path) -> None:
    vm = FakeVM()
    out = tmp_path / "exec.json"
    steps = (
        Step("execute", "dump-guest-memory", {"protocol": "file:/d/{vm}-{event}-{timestamp}"}),
        Step("wait-for", "MIGRATION_PASS", timeout=5),
        Step(
            "exec",
            (
                sys.executable,
                "-c",
                f"import sys; open({str(out)!r}, 'wb').write(sys.stdin.buffer.read())",
            ),
        ),
        Step("execute", "fail"),
        Step("execute", "never"),
    )
    metrics = CollectorMetrics()
    db = tmp_path / "events.db"
    runner = ActionRunner(
        [Rule("r", "GUEST_*", steps)], vm.execute, metrics=metrics, store=ActionStore(db)
    )
    vm.runner = runner
    runner.start()
    trigger = event_record("web", 3, "GUEST_PANICKED")
    runner.on_event("web", trigger)
    runner.on_event("web", event_record("web", 4))  # not a match
    await asyncio.wait_for(runner.join(), 10)
    await runner.aclose()
    assert vm.commands[0] == (
        "web",
        "dump-guest-memory",
        {"protocol": "file:/d/web-GUEST_PANICKED-1780000000.003000"},
    )
    assert [c[1] for c in vm.commands] == ["dump-guest-memory", "fail"]
    assert json.loads(out.read_bytes())["event"] == "GUEST_PANICKED"
    assert metrics.value("qmpevents_actions_total", rule="r", outcome="error") == 1
    with sqlite3.connect(db) as conn:
        (run,) = read_actions(conn)
    assert (run["vm"], run["event"], run["outcome"]) == ("web", "GUEST_PANICKED", "error")
    assert [(s["kind"], s["ok"]) for s in run["steps"]] == [
        ("execute", True),
        ("wait-for", True),
        ("exec", True),
        ("execute", False),
    ]
    assert run["steps"][3]["error"] == "RuntimeError: no such command"


async def test_a_wait_for_that_times_out_ends_the_run() -> None:
    vm = FakeVM()
    rule = Rule("r", "GUEST_*", (Step("wait-for", "NEVER", timeout=0.05),))
    metrics = CollectorMetrics()
    runner = ActionRunner([rule], vm.execute, metrics=metrics)
    runner.start()
    runner.on_event("web", event_record("web", 1, "GUEST_PANICKED"))
    await asyncio.wait_for(runner.join(), 10)
    await runner.aclose()
    assert metrics.value("qmpevents_actions_total", rule="r", outcome="error") == 1


async def test_a_full_queue_drops_and_counts_without_blocking(
    caplog: pytest.LogCaptureFixture,
) -> None:
    vm = FakeVM()
    rule = Rule("r", "GUEST_*", (Step("execute", "cont"),), queue=2)
    metrics = CollectorMetrics()
    runner = ActionRunner([rule], vm.execute, metrics=metrics)  # not started: nothing runs
    for i in range(5):
        runner.on_event(f"vm{i}", event_record(f"vm{i}", i, "GUEST_PANICKED"))
    assert metrics.value("qmpevents_actions_total", rule="r", outcome="dropped") == 3
    assert "queue full (2), run dropped" in caplog.text
    runner.start()
    await asyncio.wait_for(runner.join(), 10)
    await runner.aclose()
    assert len(vm.commands) == 2


async def test_a_post_step_sends_the_event_json() -> None:
    bodies: list[bytes] = []

    async def hook(request: web.Request) -> web.Response:
        bodies.append(await request.read())
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/hook", hook)
    app_runner = web.AppRunner(app)
    await app_runner.setup()
    site = web.TCPSite(app_runner, "127.0.0.1", 0)
    await site.start()
    port = app_runner.addresses[0][1]
    try:
        vm = FakeVM()
        rule = Rule("r", "GUEST_*", (Step("post", f"http://127.0.0.1:{port}/hook", timeout=5),))
        metrics = CollectorMetrics()
        runner = ActionRunner([rule], vm.execute, metrics=metrics)
        runner.start()
        record = event_record("web", 1, "GUEST_PANICKED")
        runner.on_event("web", record)
        await asyncio.wait_for(runner.join(), 10)
        await runner.aclose()
    finally:
        await app_runner.cleanup()
    assert bodies == [record.raw]
    assert metrics.value("qmpevents_actions_total", rule="r", outcome="ok") == 1


async def test_history_actions_lists_the_runs(tmp_path: Path) -> None:
    db = tmp_path / "events.db"
    store = ActionStore(db)
    run = ActionRecord("r", "web", "GUEST_PANICKED", 1.5, 2.0, 0.25, "error")
    run.steps.append(StepRecord("execute", "cont", 0.25, False, "CommandError: no"))
    await store.record(run)
    await store.record(ActionRecord("r", "db", "GUEST_PANICKED", 1.5, 3.0))
    store.close()
    result = CliRunner().invoke(history, ["--db", str(db), "--actions", "--vm", "web", "--json"])
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    assert json.loads(line)["steps"] == [
        {
            "kind": "execute",
            "target": "cont",
            "duration": 0.25,
            "ok": False,
            "error": "CommandError: no",
        }
    ]
    table = CliRunner().invoke(history, ["--db", str(db), "--actions"])
    assert table.exit_code == 0, table.output
    assert "execute cont: CommandError: no" in table.stdout
    assert "2 action run(s)" in table.stderr


def test_collect_refuses_a_bad_rule_with_status_2(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace('{execute = "stop"}', '{execute = ["stop"]}'))
    result = CliRunner().invoke(main, ["collect", "--config", str(path)])
    assert result.exit_code == 2
    assert f"{path}:19: action 'second': steps[0].execute: expected a non-empty string" in (
        result.output
    )


async def test_a_failing_program_is_an_error_with_the_tail_of_its_stderr(tmp_path: Path) -> None:
    """It gets the event in its environment; 8 MiB on stderr are not kept, only the end."""
    script = (
        "import os, sys\n"
        "assert os.environ['QMP_VM'] == 'web' and os.environ['QMP_EVENT'] == 'GUEST_PANICKED'\n"
        "sys.stderr.write('x' * (8 << 20) + 'the last words')\n"
        "sys.exit(3)\n"
    )
    rule = Rule("r", "GUEST_*", (Step("exec", (sys.executable, "-c", script)),))
    db = tmp_path / "events.db"
    runner = ActionRunner([rule], FakeVM().execute, store=ActionStore(db))
    runner.start()
    runner.on_event("web", event_record("web", 1, "GUEST_PANICKED"))
    await asyncio.wait_for(runner.join(), 30)
    await runner.aclose()
    with sqlite3.connect(db) as conn:
        (run,) = read_actions(conn)
    (step,) = run["steps"]
    assert step["error"].startswith("RuntimeError: exited with 3: xxx")
    assert step["error"].endswith("the last words") and len(step["error"]) < 300

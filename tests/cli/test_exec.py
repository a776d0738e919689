"""``qmpevents exec`` against a simulated machine: replies, errors, typing, several commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from qmpevents.cli import main
from qmpevents.cli.exec import CommandTypes, parse_arguments, split_commands
from tests.helpers import REFERENCE
from tests.sim.programs import simulated_vm


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[str]:
    """A qmpevents-qemu process, running, with its QMP socket."""
    with simulated_vm(tmp_path / "vm.sock") as path:
        yield path


@pytest.fixture(scope="module")
def types() -> CommandTypes:
    return CommandTypes(json.loads((REFERENCE / "qmp_schema_full.json").read_text()))


def test_split_commands() -> None:
    assert split_commands(["stop", "--", "query-status", "--", "cont"]) == [
        ("stop", []),
        ("query-status", []),
        ("cont", []),
    ]
    with pytest.raises(click.UsageError, match="empty command"):
        split_commands(["stop", "--", "--", "cont"])


def test_key_value_pairs_are_typed_from_qemus_schema(types: CommandTypes) -> None:
    args = parse_arguments(
        "migrate-set-parameters",
        ["max-bandwidth=4194304", "tls-creds=123", "block-incremental=true"],
        types,
    )
    assert args == {"max-bandwidth": 4194304, "tls-creds": "123", "block-incremental": True}
    # a str member stays a string even when it looks like a number
    assert parse_arguments("device_del", ["id=42"], types) == {"id": "42"}
    assert parse_arguments("x-unknown", ["a.b=1", "a.c=x"], types) == {"a": {"b": 1, "c": "x"}}
    with pytest.raises(click.BadParameter, match="expected int"):
        parse_arguments("migrate-set-parameters", ["max-bandwidth=lots"], types)
    with pytest.raises(click.BadParameter, match="KEY=VALUE"):
        parse_arguments("device_del", ["id"], types)
    assert parse_arguments("device_del", ['{"id": "d"}'], None) == {"id": "d"}


def test_exec_prints_replies_and_stops_at_the_first_error(vm: str) -> None:
    runner = CliRunner()
    ok = runner.invoke(main, ["exec", vm, "query-status", "--", "stop", "--", "query-status"])
    assert ok.exit_code == 0, ok.output
    first, stopped, second = (json.loads(line) for line in ok.stdout.splitlines())
    assert first["running"] and stopped == {} and second["status"] == "paused"
    bad = runner.invoke(main, ["exec", vm, "device_del", "id=nope", "--", "cont"])
    assert bad.exit_code == 1
    assert "device_del: DeviceNotFound: Device 'nope' not found" in bad.stderr
    assert bad.stdout == ""  # cont was not sent after the error


def test_exec_usage_errors_and_unreachable_targets_exit_2(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(main, ["exec", str(tmp_path / "none.sock"), "stop"]).exit_code == 2
    assert runner.invoke(main, ["exec", "host:0", "stop"]).exit_code == 2
    assert runner.invoke(main, ["exec", str(tmp_path / "x.sock")]).exit_code == 2


@pytest.mark.parametrize(
    "command", [["exec", "nats://127.0.0.1:4222", "stop"], ["shell", "nats://127.0.0.1:4222"]]
)
def test_a_fleet_target_is_not_a_monitor(command: list[str]) -> None:
    result = CliRunner().invoke(main, command)
    assert result.exit_code == 2
    assert "not a QMP monitor" in result.output

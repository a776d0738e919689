"""QEMU 7.2's recorded answers in the simulator: what it answers, and what it refuses.

No libvirt here: the recording ships in the package, and these tests ask the
simulator the questions libvirt asks (tests/libvirt/test_domcapabilities.py
lets libvirt ask them itself).
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from qmpevents.errors import ConfigError
from qmpevents.server.commands import QMPCommandFailure
from qmpevents.server.server import QMPServer
from qmpevents.sim import recorded
from qmpevents.sim.config import MachineConfig
from qmpevents.sim.machine import Machine
from qmpevents.sim.recorded import Recording
from qmpevents.sim.recorded_schema import RecordedSchema, RecordedSchemaError

CPU = "/machine/unattached/device[0]"


async def ask(machine: Machine, command: str, arguments: dict[str, Any] | None = None) -> Any:
    return msgspec.to_builtins(await machine.execute(command, arguments))


async def refusal(machine: Machine, command: str, arguments: dict[str, Any]) -> tuple[str, str]:
    with pytest.raises(QMPCommandFailure) as failure:
        await machine.execute(command, arguments)
    return failure.value.error_class, failure.value.desc


def test_the_bundled_recording_is_qemu_7_2_asked_by_libvirt() -> None:
    recording = recorded.bundled()
    assert recording.recorded_value("query-version")["qemu"] == {
        "major": 7, "minor": 2, "micro": 22,
    }  # fmt: skip
    assert recording.questions("qom-get") > 300
    assert recording.recorded_value("query-kvm") == {"enabled": False, "present": True}
    assert {"device-list-properties", "query-cpu-definitions", "qom-list"} <= set(
        recording.commands
    )


async def test_listed_commands_are_exactly_the_answered_ones() -> None:
    machine = Machine(MachineConfig())
    listed = {entry["name"] for entry in await ask(machine, "query-commands")}
    schema = await ask(machine, "query-qmp-schema")
    described = [entry["name"] for entry in schema if entry["meta-type"] == "command"]
    assert sorted(described) == sorted(listed)
    assert listed == {spec.name for spec in machine.server.commands}
    # Every recorded command is answered by the model or the recording, none twice.
    assert set(recorded.bundled().commands) <= listed


async def test_recorded_arguments_get_the_recorded_answer() -> None:
    machine = Machine(MachineConfig())
    assert await ask(machine, "qom-get", {"property": "sse2", "path": CPU}) is True
    assert await ask(machine, "query-target") == {"arch": "x86_64"}
    properties = await ask(machine, "qom-list", {"path": CPU})
    assert {"name": "type", "type": "string"} in properties
    expansion = await ask(
        machine, "query-cpu-model-expansion", {"type": "static", "model": {"name": "host"}}
    )
    assert expansion["model"]["name"] == "base"


async def test_recorded_errors_come_back_as_recorded() -> None:
    machine = Machine(MachineConfig())
    assert await refusal(machine, "query-sev-capabilities", {}) == (
        "GenericError", "KVM not enabled",
    )  # fmt: skip


async def test_unrecorded_arguments_are_refused_by_name() -> None:
    machine = Machine(MachineConfig())
    error_class, desc = await refusal(machine, "qom-get", {"path": CPU, "property": "nope"})
    assert error_class == "GenericError"
    assert desc.startswith(
        'qmpevents-qemu cannot answer qom-get {"path":"/machine/unattached/device[0]",'
        '"property":"nope"}: it knows only QEMU 7.2\'s answers to the arguments libvirt sends ('
    )


EXPANSION = "query-cpu-model-expansion"


@pytest.mark.parametrize(
    ("command", "arguments", "desc"),
    [
        ("qom-get", {"path": CPU}, "Parameter 'property' is missing"),
        ("qom-get", {"path": CPU, "property": 1},
         "Invalid parameter type for 'property', expected: string"),
        ("qom-list", {"path": CPU, "depth": 1}, "Parameter 'depth' is unexpected"),
        (EXPANSION, {"type": "bogus", "model": {"name": "max"}},
         "Parameter 'type' does not accept value 'bogus'"),
        (EXPANSION, {"type": "full", "model": {}}, "Parameter 'model.name' is missing"),
    ],
)  # fmt: skip
async def test_bad_arguments_get_qemus_errors(
    command: str, arguments: dict[str, Any], desc: str
) -> None:
    machine = Machine(MachineConfig())
    assert await refusal(machine, command, arguments) == ("GenericError", desc)


async def test_the_model_wins_over_the_recording() -> None:
    machine = Machine(MachineConfig())
    # The simulator's own migration state, not the recorded all-false list.
    capability = {"capability": "events", "state": True}
    await machine.execute("migrate-set-capabilities", {"capabilities": [capability]})
    assert capability in await ask(machine, "query-migrate-capabilities")
    version = await ask(machine, "query-version")
    assert version["package"].startswith("qmpevents ")
    assert await ask(machine, "query-kvm") == {"enabled": False, "present": True}


def test_a_registered_command_is_never_shadowed() -> None:
    server = QMPServer()
    server.register("qom-get", lambda args, ctx: "mine")
    installed = recorded.bundled().install(server)
    assert "qom-get" not in installed
    assert "qom-list" in installed
    assert "query-qmp-schema" not in installed


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([1], "entry 0: not a JSON object"),
        ([{"arguments": {}, "return": 1}], "entry 0: 'execute' must be a command name"),
        ([{"execute": "x", "arguments": [], "return": 1}], "'arguments' of x must be an object"),
        ([{"execute": "x"}], "x needs either 'return' or 'error', nothing else"),
        ([{"execute": "x", "return": 1, "error": {}}], "x needs either 'return' or 'error'"),
        ([{"execute": "x", "return": 1, "id": 3}], "x needs either 'return' or 'error'"),
        ([{"execute": "x", "error": {"class": "GenericError"}}], "needs 'class' and 'desc'"),
        ([{"execute": "x", "return": 1}, {"execute": "x", "arguments": {}, "return": 2}],
         "entry 1: x is recorded twice"),
    ],
)  # fmt: skip
def test_a_bad_data_file_is_refused_clearly(entries: list[Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        Recording(entries, "test.json")


def test_a_command_the_recorded_schema_does_not_declare_is_refused() -> None:
    recording = Recording([{"execute": "x", "return": 1}], "test.json")
    with pytest.raises(ConfigError, match="declares no command 'x'"):
        recording.install(QMPServer())


SCHEMA = [
    {"name": "cmd", "meta-type": "command", "arg-type": "1", "ret-type": "[2]", "allow-oob": True},
    {"name": "union-cmd", "meta-type": "command", "arg-type": "3", "ret-type": "3"},
    {"name": "1", "meta-type": "object", "members": [
        {"name": "a-b", "type": "str"}, {"name": "if", "type": "4", "default": None},
        {"name": "c", "type": "5", "default": None}]},
    {"name": "[2]", "meta-type": "array", "element-type": "2"},
    {"name": "2", "meta-type": "enum", "values": ["x", "y"], "members": []},
    {"name": "3", "meta-type": "object", "members": [], "tag": "t",
     "variants": [{"case": "x", "type": "1"}]},
    {"name": "4", "meta-type": "alternate", "members": [{"type": "str"}, {"type": "int"}]},
    {"name": "5", "meta-type": "builtin", "json-type": "value"},
    {"name": "str", "meta-type": "builtin", "json-type": "string"},
    {"name": "int", "meta-type": "builtin", "json-type": "int"},
]  # fmt: skip


def test_recorded_declarations_become_structs() -> None:
    declared = RecordedSchema(SCHEMA).command("cmd")
    assert declared.allow_oob
    value = msgspec.convert({"a-b": "s", "if": 3}, declared.args)
    assert msgspec.to_builtins(value) == {"a-b": "s", "if": 3}
    with pytest.raises(msgspec.ValidationError):
        msgspec.convert({"a-b": "s", "x": 1}, declared.args)
    assert str(declared.returns) == "list[typing.Literal['x', 'y']]"


def test_a_flat_union_argument_is_refused_not_guessed() -> None:
    with pytest.raises(RecordedSchemaError, match="type '3' is a flat union"):
        RecordedSchema(SCHEMA).command("union-cmd")

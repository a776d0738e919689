"""What the simulated binary says about itself: its machine types, QOM types and options.

These answers are the model's, built from QEMU 7.2's recorded ones where the
simulator has the same thing; the cross-checks here keep the two in step.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from qmpevents.server.commands import QMPCommandFailure
from qmpevents.sim import recorded
from qmpevents.sim.cmdline import OPTIONS, CommandLineError, parse_command_line
from qmpevents.sim.config import MachineConfig
from qmpevents.sim.help import DEVICE_MODELS, MACHINE_TYPES
from qmpevents.sim.machine import Machine
from qmpevents.sim.opts import OptionError
from qmpevents.sim.qom import CHARDEV_TYPES, OBJECT_TYPES


async def ask(command: str, arguments: dict[str, Any] | None = None) -> Any:
    machine = Machine(MachineConfig())
    return msgspec.to_builtins(await machine.execute(command, arguments))


async def refusal(command: str, arguments: dict[str, Any]) -> tuple[str, str]:
    machine = Machine(MachineConfig())
    with pytest.raises(QMPCommandFailure) as failure:
        await machine.execute(command, arguments)
    return failure.value.error_class, failure.value.desc


async def test_query_machines_lists_the_modelled_machine_types() -> None:
    machines = await ask("query-machines")
    assert [m["name"] for m in machines] == [m.name for m in MACHINE_TYPES]
    assert [m["name"] for m in machines if m.get("is-default")] == ["pc-i440fx-7.2"]
    # The x86 ones are exactly what QEMU 7.2 says of them.
    qemu = {m["name"]: m for m in recorded.bundled().recorded_value("query-machines")}
    for machine in machines:
        if machine["name"] in qemu:
            assert machine == qemu[machine["name"]]
    # pseries, which the x86_64 binary has for the demo, is qemu-system-ppc64's but
    # for being the default there.
    ppc64 = {m["name"]: m for m in recorded.bundled("ppc64").recorded_value("query-machines")}
    pseries = machines[[m["name"] for m in machines].index("pseries-7.2")]
    assert pseries == {
        key: value for key, value in ppc64["pseries-7.2"].items() if key != "is-default"
    }


async def test_the_ppc64_binary_lists_its_machine_types_as_qemu_system_ppc64() -> None:
    machine = Machine(MachineConfig("pseries", target="ppc64"))
    machines = msgspec.to_builtins(await machine.execute("query-machines"))
    qemu = {m["name"]: m for m in recorded.bundled("ppc64").recorded_value("query-machines")}
    assert machines == [qemu["pseries-7.2"], qemu["none"]]
    assert msgspec.to_builtins(await machine.execute("query-target")) == {"arch": "ppc64"}
    assert msgspec.to_builtins(await machine.execute("query-kvm")) == {
        "enabled": False,
        "present": False,
    }
    types = {t["name"]: t for t in msgspec.to_builtins(await machine.execute("qom-list-types"))}
    assert "pc-i440fx-7.2-machine" not in types and "kvm-accel" not in types
    qemu_types = {t["name"]: t for t in recorded.bundled("ppc64").recorded_value("qom-list-types")}
    assert types["pseries-7.2-machine"] == qemu_types["pseries-7.2-machine"]
    assert types["power9_v2.0-powerpc64-cpu"] == qemu_types["power9_v2.0-powerpc64-cpu"]
    assert all(name in qemu_types for name in types)


async def test_qom_list_types_lists_what_the_simulator_has() -> None:
    types = {t["name"]: t for t in await ask("qom-list-types")}
    expected = {model.name for model in DEVICE_MODELS}
    expected |= {f"{machine.name}-machine" for machine in MACHINE_TYPES}
    expected |= {"tcg-accel", "kvm-accel", *OBJECT_TYPES, *CHARDEV_TYPES, "qemu64-x86_64-cpu"}
    assert expected <= set(types)
    assert "virtio-net-pci" not in types and "cirrus-vga" not in types
    qemu = {t["name"]: t for t in recorded.bundled().recorded_value("qom-list-types")}
    assert types["pvpanic"] == qemu["pvpanic"] == {"name": "pvpanic", "parent": "isa-device"}
    pseries = {"name": "pseries-7.2-machine", "parent": "spapr-machine"}
    assert types["pseries-7.2-machine"] == pseries
    assert pseries in recorded.bundled("ppc64").recorded_value("qom-list-types")
    assert all(name in qemu or name == "pseries-7.2-machine" for name in types)


DEVICES, CLASSES, LINE_OPTIONS = (
    "device-list-properties",
    "qom-list-properties",
    "query-command-line-options",
)
NOT_A_DEVICE = "Parameter 'typename' expects a non-abstract device type"


@pytest.mark.parametrize(
    ("command", "arguments", "error"),
    [
        (DEVICES, {"typename": "virtio-net-pci"},
         ("DeviceNotFound", "Device 'virtio-net-pci' not found")),
        (DEVICES, {"typename": "memory-backend-ram"}, ("GenericError", NOT_A_DEVICE)),
        (CLASSES, {"typename": "nope"}, ("DeviceNotFound", "Class 'nope' not found")),
        (LINE_OPTIONS, {"option": "spice"}, ("GenericError", "invalid option name: spice")),
        (LINE_OPTIONS, {"option": "nope"}, ("GenericError", "invalid option name: nope")),
    ],
)  # fmt: skip
async def test_questions_about_what_the_simulator_lacks(
    command: str, arguments: dict[str, Any], error: tuple[str, str]
) -> None:
    assert await refusal(command, arguments) == error


async def test_a_modelled_device_without_recorded_properties_is_not_guessed() -> None:
    error_class, desc = await refusal("device-list-properties", {"typename": "pvpanic"})
    assert error_class == "GenericError"
    assert desc.startswith("qmpevents-qemu cannot answer device-list-properties")


async def test_qom_list_properties_answers_as_qemu_for_the_classes_libvirt_asks() -> None:
    qemu = recorded.bundled()
    for typename in ("memory-backend-file", "max-x86_64-cpu", "none-machine"):
        answer = await ask("qom-list-properties", {"typename": typename})
        assert answer == qemu.recorded_value("qom-list-properties", {"typename": typename})
    # A machine type QEMU was not asked about has what every machine type has.
    assert await ask("qom-list-properties", {"typename": "pseries-7.2-machine"}) == (
        qemu.recorded_value("qom-list-properties", {"typename": "none-machine"})
    )


async def test_no_tpm() -> None:
    assert await ask("query-tpm-models") == []
    assert await ask("query-tpm-types") == []


async def test_command_line_options_are_the_groups_the_simulator_takes() -> None:
    groups = {group["option"] for group in await ask("query-command-line-options")}
    taken = {"machine", "memory", "smp-opts", "mon", "device", "object", "chardev", "drive"}
    assert taken <= groups
    assert not groups & {"spice", "vnc", "fsdev", "virtfs", "tpmdev", "netdev", "iscsi", ""}
    renamed = {"memory": "-m", "smp-opts": "-smp", "boot-opts": "-boot"}
    assert all(renamed.get(group, f"-{group}") in OPTIONS for group in groups)
    (machine,) = await ask("query-command-line-options", {"option": "machine"})
    assert {"name": "usb", "help": "Set on/off to enable/disable usb", "type": "boolean"} in (
        machine["parameters"]
    )


def _takes(option: str, value: str, name: str) -> bool:
    """Whether the command line takes type ``name``: any error but one naming the type."""
    try:
        parse_command_line([option, value])
    except (CommandLineError, OptionError) as error:
        return f"'{name}'" not in str(error) and f"type: {name}" not in str(error)
    return True


def test_object_and_chardev_types_are_the_command_lines() -> None:
    """qom-list-types names what -object and -chardev take: keep both in step."""
    names = [t["name"] for t in recorded.bundled().recorded_value("qom-list-types")]
    objects = [
        name
        for name in names
        if not name.startswith("chardev-") and _takes("-object", f"{name},id=o,size=1M", name)
    ]
    assert sorted(objects) == sorted(OBJECT_TYPES)
    chardevs = [
        name
        for name in names
        if name.startswith("chardev-")
        and _takes(
            "-chardev",
            f"{name.removeprefix('chardev-')},id=c,path=/tmp/x.sock,server=on",
            name.removeprefix("chardev-"),
        )
    ]
    assert sorted(chardevs) == sorted(CHARDEV_TYPES)

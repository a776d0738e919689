"""The program name picks the QEMU binary the simulator stands in for, and its choices."""

from __future__ import annotations

import asyncio
import io

import msgspec
import pytest

from qmpevents.sim.cmdline import CommandLineError, parse_command_line
from qmpevents.sim.cpus import cpu_model
from qmpevents.sim.machine import Machine
from qmpevents.sim.target import PPC64, X86_64, Target, target_of_program


@pytest.mark.parametrize(
    ("program", "arch"),
    [("qmpevents-qemu", "x86_64"), ("qmpevents-qemu-ppc64", "ppc64"),
     ("qemu-system-ppc64", "ppc64"), ("qemu-system-x86_64", "x86_64"), ("", "x86_64")],
)  # fmt: skip
def test_the_program_name_picks_the_target(program: str, arch: str) -> None:
    assert target_of_program(program).arch == arch


def test_ppc64_defaults_to_pseries_and_power9() -> None:
    config = parse_command_line([], PPC64)
    assert (config.machine_type, config.target, cpu_model(config)) == (
        "pseries",
        "ppc64",
        "power9_v2.0",
    )
    assert parse_command_line([]).machine_type == "pc"
    for name in ("POWER9", "power9", "power9_v2.0"):
        assert parse_command_line(["-cpu", name], PPC64).cpu_model == "power9_v2.0"


@pytest.mark.parametrize(
    ("target", "argv", "message"),
    [
        (PPC64, ["-machine", "pc"], "unsupported machine type"),
        (PPC64, ["-machine", "q35"], "unsupported machine type"),
        (PPC64, ["-cpu", "qemu64"], "simulates only the power9 or power9_v2.0 CPU model"),
        (PPC64, ["-cpu", "POWER9,vsx=off"], "no CPU features can be changed"),
        (PPC64, ["-machine", "none", "-device", "pvpanic"], "'pvpanic' is not a valid device"),
        (X86_64, ["-cpu", "POWER9"], "simulates only the qemu64 CPU model, not 'POWER9'"),
        (X86_64, ["-machine", "pseries", "-cpu", "qemu64"], "unable to find CPU model 'qemu64'"),
    ],
)
def test_what_a_binary_does_not_have_is_refused(
    target: Target, argv: list[str], message: str
) -> None:
    with pytest.raises(CommandLineError, match=message):
        parse_command_line(argv, target)


def test_ppc64_lacks_isa_devices_and_kvm() -> None:
    assert "pvpanic" not in {model.name for model in PPC64.device_models}
    assert "pvpanic" in {model.name for model in X86_64.device_models}
    assert PPC64.accelerators == ("tcg",) and not PPC64.kvm_present
    assert [m.name for m in PPC64.machine_types] == ["pseries-7.2", "none"]


def test_os_term_only_on_pseries() -> None:
    async def run() -> None:
        machine = Machine(parse_command_line(["-machine", "pc"]))
        with pytest.raises(Exception, match="RTAS call of the pseries machine, not of pc"):
            await machine.execute("x-sim-os-term", {"message": "x"})
        stderr = io.StringIO()
        config = parse_command_line(["-machine", "pseries", "-action", "panic=none"])
        pseries = Machine(config, stderr=stderr)
        reply = await pseries.execute("x-sim-os-term", {"message": "oops\x00hidden"})
        assert msgspec.to_builtins(reply) == {}
        assert stderr.getvalue() == "qmpevents-qemu: OS terminated: oops\n"

    asyncio.run(run())

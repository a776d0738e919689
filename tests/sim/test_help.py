"""qmpevents-qemu's -h, -version, -machine help and -device help, in QEMU 7.2's formats.

The exact texts are checked here; against real QEMU, the same command lines must
end the same way (which help, or an error; and the exit status), and every line
we print for a device or machine must be QEMU's own line for it.
"""

from __future__ import annotations

import re
import subprocess
from importlib import metadata

import pytest

from qmpevents.sim.cmdline import _FLAGS, _WITH_ARGUMENT, parse_command_line
from qmpevents.sim.help import DEVICE_MODELS, HelpRequested
from tests.qemu.conftest import _require
from tests.sim.programs import PPC64_QEMU, PPC64_SIM, PROGRAMS, SIM, program

VERSION = (
    f"QEMU emulator version 7.2.22 (qmpevents {metadata.version('qmpevents')})\n"
    "Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n"
)
MACHINES = """\
Supported machines are:
pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)
pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)
q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)
pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)
pseries              pSeries Logical Partition (PAPR compliant) (alias of pseries-7.2)
pseries-7.2          pSeries Logical Partition (PAPR compliant)
none                 empty machine
"""
DEVICES = """\
USB devices:
name "piix3-usb-uhci", bus PCI
name "qemu-xhci", bus PCI

Storage devices:
name "ide-hd", bus IDE, desc "virtual IDE disk"
name "virtio-blk-pci", bus PCI, alias "virtio-blk"

Input devices:
name "virtio-serial-pci", bus PCI, alias "virtio-serial"
name "virtserialport", bus virtio-serial-bus

Misc devices:
name "pvpanic", bus ISA
name "pvpanic-pci", bus PCI
name "virtio-balloon-pci", bus PCI, alias "virtio-balloon"

Uncategorized devices:
name "pc-dimm", desc "DIMM memory module"
"""
TIMEOUT = 30


def run(command: tuple[str, ...], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=TIMEOUT, check=False
    )


def sim(*args: str) -> subprocess.CompletedProcess[str]:
    return run(SIM, *args)


@pytest.mark.parametrize("option", ["-version", "--version"])
def test_version(option: str) -> None:
    result = sim(option)
    assert (result.returncode, result.stdout, result.stderr) == (0, VERSION, "")


@pytest.mark.parametrize("option", ["-h", "-help", "--help"])
def test_help_lists_every_option_it_accepts(option: str) -> None:
    result = sim(option)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith(VERSION + "usage: qmpevents-qemu [options]\n\n")
    listed = set(re.findall(r"^(-[a-zA-Z-]+)", result.stdout, re.MULTILINE)) | {"-help"}
    # -M is QEMU's undocumented short -machine; QEMU's help does not list it either.
    assert listed == (_FLAGS | _WITH_ARGUMENT) - {"-M"}


@pytest.mark.parametrize(
    "args",
    [("-machine", "help"), ("-M", "help"), ("-machine", "?"), ("-machine", "help,accel=tcg")],
)
def test_machine_help(args: tuple[str, ...]) -> None:
    result = sim(*args)
    assert (result.returncode, result.stdout, result.stderr) == (0, MACHINES, "")


@pytest.mark.parametrize(
    "args", [("-device", "help"), ("-device", "?"), ("-device", "driver=help"),
             ("-device", "help,id=x")],
)  # fmt: skip
def test_device_help(args: tuple[str, ...]) -> None:
    result = sim(*args)
    assert (result.returncode, result.stdout, result.stderr) == (0, DEVICES, "")


def test_listed_devices_and_machines_are_accepted() -> None:
    memory = ["-m", "64,slots=1,maxmem=1G", "-object", "memory-backend-ram,id=m,size=64M"]
    needs = {
        "virtserialport": ["-device", "virtio-serial-pci"],
        "ide-hd": ["-blockdev", "driver=file,filename=/dev/null,node-name=n"],
        "virtio-blk-pci": ["-blockdev", "driver=file,filename=/dev/null,node-name=n"],
        "virtio-blk": ["-blockdev", "driver=file,filename=/dev/null,node-name=n"],
    }
    properties = {
        "pc-dimm": ",memdev=m",
        "ide-hd": ",drive=n",
        "virtio-blk-pci": ",drive=n",
        "virtio-blk": ",drive=n",
    }
    for model in DEVICE_MODELS:
        for name in filter(None, (model.name, model.alias)):
            device = ["-device", f"{name},id=d{properties.get(name, '')}"]
            parse_command_line([*memory, *needs.get(name, []), *device])
    for line in MACHINES.splitlines()[1:]:
        parse_command_line(["-machine", line.split()[0]])


# QEMU's order: option names first, then -h/-version/-machine help where they stand,
# the other options in turn, -device help once all are read, the machine, the devices.
ORDER_CASES = [
    ("-foo", "-h"),
    ("-h", "-foo"),
    ("-h", "-m", "bogus"),
    ("-m", "bogus", "-h"),
    ("-version", "-m", "bogus"),
    ("-machine", "help", "-m", "bogus"),
    ("-m", "bogus", "-device", "help"),
    ("-device", "help", "-m", "bogus"),
    ("-machine", "nosuch", "-device", "help"),
    ("-device", "nosuch", "-device", "help"),
    ("-device", "help", "-machine", "help"),
    ("-device", "help", "-version"),
    ("-machine", "help", "-version"),
    ("-machine", "type=help"),
    ("-h", "-M"),
]


def outcome(result: subprocess.CompletedProcess[str]) -> tuple[int, str]:
    """Which answer a run gave: its status and the kind of text on stdout."""
    lines = result.stdout.splitlines()
    if not lines:
        kind = "error" if result.returncode else "nothing"
    elif lines[0].startswith("QEMU emulator version"):
        kind = "help" if len(lines) > 2 and lines[2].startswith("usage:") else "version"
    elif lines[0] == "Supported machines are:":
        kind = "machine"
    elif lines[0].endswith(" devices:"):
        kind = "device"
    else:
        kind = "other"
    return result.returncode, kind


@pytest.mark.parametrize("args", ORDER_CASES, ids=" ".join)
def test_same_answer_as_qemu(args: tuple[str, ...]) -> None:
    qemu, _ = program("qemu")
    assert outcome(sim(*args)) == outcome(run(qemu, *args))


@pytest.mark.parametrize(
    ("args", "topic"),
    [(("-h", "-m", "bogus"), "help"), (("-machine", "nosuch", "-device", "help"), "device"),
     (("-device", "help", "-machine", "help"), "machine"), (("-device", "help", "-version"),
     "version")],
)  # fmt: skip
def test_parser_raises_the_help_topic(args: tuple[str, ...], topic: str) -> None:
    with pytest.raises(HelpRequested) as raised:
        parse_command_line(list(args))
    assert raised.value.topic == topic


@pytest.mark.parametrize("which", PROGRAMS)
def test_version_format(which: str) -> None:
    command, _ = program(which)
    lines = run(command, "-version").stdout.splitlines()
    assert re.fullmatch(r"QEMU emulator version 7\.2\.\d+ \(.+\)", lines[0])
    assert lines[1:] == VERSION.splitlines()[1:]


def test_machine_lines_are_qemus() -> None:
    qemu, _ = program("qemu")
    theirs = run(qemu, "-machine", "help").stdout.splitlines()
    # pseries is qemu-system-ppc64's; the x86 lines must be QEMU's, in QEMU's order.
    ours = [line for line in MACHINES.splitlines() if "pseries" not in line]
    assert [line for line in theirs if line in ours] == ours


def test_device_lines_are_qemus() -> None:
    qemu, _ = program("qemu")
    category = ""
    theirs: set[tuple[str, str]] = set()
    for line in run(qemu, "-device", "help").stdout.splitlines():
        if line.endswith(" devices:"):
            category = line
        elif line:
            theirs.add((category, line))
    category = ""
    for line in DEVICES.splitlines():
        if line.endswith(" devices:"):
            category = line
        elif line:
            assert (category, line) in theirs


# --- qmpevents-qemu-ppc64, for qemu-system-ppc64 ------------------------------------

PPC64_MACHINES = """\
Supported machines are:
pseries              pSeries Logical Partition (PAPR compliant) (alias of pseries-7.2)
pseries-7.2          pSeries Logical Partition (PAPR compliant) (default)
none                 empty machine
"""


def test_ppc64_machine_and_accel_help() -> None:
    result = run(PPC64_SIM, "-machine", "help")
    assert (result.returncode, result.stdout, result.stderr) == (0, PPC64_MACHINES, "")
    result = run(PPC64_SIM, "-accel", "help")
    assert result.stdout == "Accelerators supported in QEMU binary:\ntcg\n"


def test_ppc64_devices_are_the_x86_ones_but_isa_pvpanic() -> None:
    result = run(PPC64_SIM, "-device", "help")
    assert result.returncode == 0
    assert result.stdout == DEVICES.replace('name "pvpanic", bus ISA\n', "")


def test_ppc64_lines_are_qemu_system_ppc64s() -> None:
    qemu = _require(PPC64_QEMU)
    for option in ("-machine", "-device", "-accel"):
        theirs = set(run((qemu,), option, "help").stdout.splitlines())
        ours = run(PPC64_SIM, option, "help").stdout.splitlines()
        assert [line for line in ours if line not in theirs] == []

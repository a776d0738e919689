"""The qmpevents-qemu command line: QEMU's options, and QEMU-style failures."""

from __future__ import annotations

import subprocess
import sys

import pytest

from qmpevents.sim.cmdline import CommandLineError, parse_command_line


def test_reference_command_lines_parse() -> None:
    config = parse_command_line(
        ["-display", "none", "-nodefaults", "-accel", "tcg", "-qmp",
         "unix:/tmp/q.sock,server=on,wait=off", "-machine", "pseries", "-m",
         "1G,slots=4,maxmem=4G", "-S", "-object", "memory-backend-ram,id=mem1,size=256M",
         "-device", "pc-dimm,id=dimm1,memdev=mem1", "-action", "panic=none", "-no-shutdown"]
    )  # fmt: skip
    assert config.machine_type == "pseries"
    assert config.ram_size == 1 << 30
    assert config.dimms[0].size == 256 << 20
    assert config.panic_action == "none" and config.shutdown_action == "pause"
    assert config.monitors[0].path == "/tmp/q.sock"


def test_drive_quorum_keeps_its_device_name() -> None:
    config = parse_command_line(
        ["-drive", "if=none,id=drv0,driver=quorum,vote-threshold=2,node-name=qD,"
         "children.0.driver=raw,children.0.file.driver=file,children.0.file.filename=/x"]
    )  # fmt: skip
    drive = config.drives[0]
    assert drive.device == "drv0"
    assert drive.options["vote-threshold"] == 2
    assert drive.options["children"][0]["file"]["filename"] == "/x"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-foo"], "-foo: invalid option"),
        (["-m"], "-m: requires an argument"),
        (["-device", "bogus"], "-device bogus: 'bogus' is not a valid device model name"),
        (["-action", "panic=bogus"], "Parameter 'panic' does not accept value 'bogus'"),
        (["-action", "bogus=1"], "-action bogus=1: Invalid parameter 'bogus'"),
        (["-uuid", "nope"], "failed to parse UUID string: wrong format"),
        (["-msg", "timestamp=maybe"], "Parameter 'timestamp' expects 'on' or 'off'"),
        (["-device", "pvpanic,foo=1"], "Property 'pvpanic.foo' not found"),
        (["-mon", "chardev=nope,mode=control"], 'chardev "nope" not found'),
        (["-device", "pc-dimm,id=d1"], "no slots where allocated"),
        (["-device", "virtserialport,id=vs0"], "No 'virtio-serial-bus' bus found"),
    ],
)
def test_bad_options_fail_like_qemu(argv: list[str], message: str) -> None:
    with pytest.raises(CommandLineError, match=message.replace("(", r"\(")):
        parse_command_line(argv)


def test_executable_reports_on_stderr_with_status_1() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "qmpevents.sim.main", "-foo"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert proc.stderr == "main.py: -foo: invalid option\n"

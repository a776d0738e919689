"""The options of libvirt's command lines, accepted and refused as QEMU 7.2 does.

Every case runs against the simulator's parser and, where QEMU is installed,
against ``qemu-system-x86_64`` itself, so the expected messages stay QEMU's.
The cases QEMU accepts but the simulator cannot honour are refused with a
message that names the simulator, never dropped.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from qmpevents.sim.cmdline import CommandLineError, parse_command_line
from qmpevents.sim.cmdline_host import compute_topology
from qmpevents.sim.config import CpuTopology
from tests.sim.programs import program

BASE = ["-display", "none", "-nodefaults", "-S", "-accel", "tcg", "-machine", "pc", "-m", "64"]
DIMMS = ["-m", "64,slots=2,maxmem=1G", "-object", "memory-backend-ram,id=d,size=64M"]
SERIAL = ["-device", "virtio-serial-pci,id=vs"]
DRIVE = ["-blockdev", "driver=file,filename={dir}/disk.img,node-name=f"]
MONITOR = ["-chardev", "socket,id=c,path={dir}/c.sock,server=on,wait=off"]
RAM = ["-object", "memory-backend-ram,id=r0,size=64M"]


def js(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


# (argv after BASE, QEMU's message after "qemu-system-x86_64: ")
REFUSED = [
    (["-name", "debug-threads=maybe"],
     "-name debug-threads=maybe: Parameter 'debug-threads' expects 'on' or 'off'"),
    (["-name", "guest=a,foo=bar"], "-name guest=a,foo=bar: Invalid parameter 'foo'"),
    (["-overcommit", "mem-lock=maybe"],
     "-overcommit mem-lock=maybe: Parameter 'mem-lock' expects 'on' or 'off'"),
    (["-overcommit", "foo=bar"], "-overcommit foo=bar: Invalid parameter 'foo'"),
    (["-rtc", "base=bogus"],
     "invalid datetime format\nvalid formats: '2006-06-17T16:01:21' or '2006-06-17'"),
    (["-rtc", "clock=bogus"], "invalid option value 'bogus'"),
    (["-rtc", "foo=bar"], "-rtc foo=bar: Invalid parameter 'foo'"),
    (["-boot", "strict=maybe"], "Parameter 'boot.strict' expects 'on' or 'off'"),
    (["-boot", "order=z"], "Invalid boot device 'z'"),
    (["-boot", "foo=1"], "Parameter 'boot.foo' is unexpected"),
    (["-smp", "2,sockets=1,cores=1,threads=1"],
     "Invalid CPU topology: product of the hierarchy must match maxcpus: "
     "sockets (1) * dies (1) * cores (1) * threads (1) != maxcpus (2)"),
    (["-smp", "2,maxcpus=1"],
     "Invalid CPU topology: maxcpus must be equal to or greater than smp: "
     "sockets (1) * dies (1) * cores (1) * threads (1) == maxcpus (1) < smp_cpus (2)"),
    (["-smp", "1,dies=2"],
     "Invalid CPU topology: product of the hierarchy must match maxcpus: "
     "sockets (1) * dies (2) * cores (0) * threads (1) != maxcpus (1)"),
    (["-smp", "foo"], "Parameter 'smp.cpus' expects integer"),
    (["-smp", "1,foo=2"], "Parameter 'smp.foo' is unexpected"),
    (["-smp", "300"],
     "Invalid SMP CPUs 300. The max CPUs supported by machine 'pc-i440fx-7.2' is 255"),
    (["-numa", "node,nodeid=0,cpus=0"],
     "total memory for NUMA nodes (0x0) should equal RAM size (0x4000000)"),
    (["-numa", "node,nodeid=0,cpus=0,mem=64"],
     "-numa node,nodeid=0,cpus=0,mem=64: Parameter -numa node,mem is not supported by this "
     "machine type\nUse -numa node,memdev instead"),
    (["-numa", "node,memdev=nope"], "-numa node,memdev=nope: memdev=nope is ambiguous"),
    ([*RAM, "-numa", "node,cpus=1,memdev=r0"],
     "-numa node,cpus=1,memdev=r0: CPU index (1) should be smaller than maxcpus (1)"),
    ([*RAM, "-numa", "node,memdev=r0,foo=1"],
     "-numa node,memdev=r0,foo=1: Invalid parameter 'foo'"),
    (["-numa", "node,nodeid=x"], "-numa node,nodeid=x: Parameter 'nodeid' expects a uint64 value"),
    (["-numa", "node,cpus=1-0"],
     "-numa node,cpus=1-0: Parameter 'cpus' expects a uint64 value or range"),
    (["-numa", "node,nodeid=200"], "-numa node,nodeid=200: Max number of NUMA nodes reached: 200"),
    ([*RAM, "-numa", "node,nodeid=0,memdev=r0", "-numa", "node,nodeid=0"],
     "-numa node,nodeid=0: Duplicate NUMA nodeid: 0"),
    (["-numa", "bogus"], "-numa bogus: Parameter 'type' does not accept value 'bogus'"),
    ([*RAM, "-numa", "node,memdev=r0", "-device", "pc-dimm,memdev=r0",
      "-m", "64,slots=1,maxmem=1G"],
     "-device pc-dimm,memdev=r0: can't use already busy memdev: r0"),
    ([*DIMMS, "-device", "pc-dimm,memdev=d,node=1"],
     "-device pc-dimm,memdev=d,node=1: 'DIMM property node has value 1' which exceeds the "
     "number of numa nodes: 1"),
    ([*DIMMS, "-device", "pc-dimm,memdev=d,slot=5"],
     "-device pc-dimm,memdev=d,slot=5: invalid slot number 5, valid range is [0-1]"),
    ([*DIMMS, "-device", "pc-dimm,memdev=d", "-device", "pc-dimm,memdev=d"],
     "-device pc-dimm,memdev=d: can't use already busy memdev: d"),
    (["-device", js({"driver": "piix3-usb-uhci", "addr": "0x1.0x1"})],
     '-device {"driver":"piix3-usb-uhci","addr":"0x1.0x1"}: PCI: slot 1 function 1 not '
     "available for piix3-usb-uhci, in use by piix3-ide,id=(null)"),
    (["-device", js({"driver": "piix3-usb-uhci", "bus": "pci.9"})],
     '-device {"driver":"piix3-usb-uhci","bus":"pci.9"}: Bus \'pci.9\' not found'),
    (["-device", js({"driver": "piix3-usb-uhci", "foo": 1})],
     '-device {"driver":"piix3-usb-uhci","foo":1}: Property \'piix3-usb-uhci.foo\' not found'),
    (["-device", "piix3-usb-uhci,id=u", "-device", "piix3-usb-uhci,id=u"],
     "-device piix3-usb-uhci,id=u: Duplicate ID 'u' for device"),
    (["-device", js({"driver": "piix3-usb-uhci", "addr": 3})],
     '-device {"driver":"piix3-usb-uhci","addr":3}: PCI: single function device can\'t be '
     "populated in function 0.3"),
    (["-device", js({"driver": "piix3-usb-uhci", "addr": "zz"})],
     '-device {"driver":"piix3-usb-uhci","addr":"zz"}: Property \'piix3-usb-uhci.addr\' '
     "doesn't take value 'zz'"),
    (["-device", js({"driver": "piix3-usb-uhci", "addr": True})],
     '-device {"driver":"piix3-usb-uhci","addr":true}: Invalid parameter type for \'addr\', '
     "expected int or str"),
    # JSON devices come after the others: the second balloon is the JSON one.
    (["-device", js({"driver": "virtio-balloon-pci", "id": "b"}), "-device", "virtio-balloon-pci"],
     '-device {"driver":"virtio-balloon-pci","id":"b"}: Only one balloon device is supported'),
    (["-device", js({"driver": "virtio-balloon-pci", "addr": "0x3"}),
      "-device", "virtio-serial-pci,addr=3"],
     '-device {"driver":"virtio-balloon-pci","addr":"0x3"}: PCI: slot 3 function 0 not '
     "available for virtio-balloon-pci, in use by virtio-serial-pci,id=(null)"),
    (["-device", "ide-hd,bus=ide.0"], "-device ide-hd,bus=ide.0: No drive specified"),
    (["-device", "ide-hd,drive=nope"], "-device ide-hd,drive=nope: Property 'ide-hd.drive' can't "
     "find value 'nope'"),
    ([*DRIVE, "-device", "ide-hd,drive=f,unit=2"],
     "-device ide-hd,drive=f,unit=2: Can't create IDE unit 2, bus supports only 2 units"),
    ([*DRIVE, "-device", "ide-hd,drive=f,bus=ide.2"], "-device ide-hd,drive=f,bus=ide.2: Bus "
     "'ide.2' not found"),
    ([*DRIVE, "-device", "ide-hd,drive=f,id=d", "-device", "ide-hd,drive=f,id=e"],
     "-device ide-hd,drive=f,id=e: Permission conflict on node 'f': permissions 'write' are "
     "both required by block device 'd' (uses node 'f' as 'root' child) and unshared by block "
     "device 'e' (uses node 'f' as 'root' child)."),
    ([*DRIVE, "-blockdev", "driver=file,filename={dir}/disk.img,node-name=g",
      "-device", "ide-hd,drive=f,unit=0", "-device", "ide-hd,drive=g,unit=0"],
     "-device ide-hd,drive=g,unit=0: IDE unit 0 is in use"),
    ([*DRIVE, "-machine", "q35", "-device", "ide-hd,drive=f,bus=ide.0,unit=1"],
     "-device ide-hd,drive=f,bus=ide.0,unit=1: Can't create IDE unit 1, bus supports only 1 units"),
    (["-machine", "none", "-device", "pvpanic"],
     "-device pvpanic: No 'ISA' bus found for device 'pvpanic'"),
    (["-machine", "none", "-device", "pvpanic-pci"],
     "-device pvpanic-pci: No 'PCI' bus found for device 'pvpanic-pci'"),
    (["-device", "pvpanic-pci,ioport=5"],
     "-device pvpanic-pci,ioport=5: Property 'pvpanic-pci.ioport' not found"),
    (["-machine", "none", "-device", "virtio-serial-pci"],
     "-device virtio-serial-pci: No 'PCI' bus found for device 'virtio-serial-pci'"),
    (["-machine", "q35", "-device", "virtio-serial-pci,bus=pci.0"],
     "-device virtio-serial-pci,bus=pci.0: Bus 'pci.0' not found"),
    (["-machine", "q35", "-device", "piix3-usb-uhci,addr=0x1f.0x3"],
     "-device piix3-usb-uhci,addr=0x1f.0x3: PCI: slot 31 function 3 not available for "
     "piix3-usb-uhci, in use by ICH9-SMB,id=(null)"),
    (["-device", "pvpanic", "-device", "pvpanic"],
     "-device pvpanic: duplicate fw_cfg file name: etc/pvpanic-port"),
    ([*SERIAL, "-device", js({"driver": "virtserialport", "bus": "virtio-serial0.0"})],
     '-device {"driver":"virtserialport","bus":"virtio-serial0.0"}: Bus \'virtio-serial0.0\' '
     "not found"),
    ([*SERIAL, "-device", js({"driver": "virtserialport", "nr": 0})],
     '-device {"driver":"virtserialport","nr":0}: Port number 0 on virtio-serial devices '
     "reserved for virtconsole devices for backward compatibility."),
    ([*SERIAL, "-device", "virtserialport,nr=1", "-device", "virtserialport,nr=1,id=c1"],
     "-device virtserialport,nr=1,id=c1: virtio-serial-bus: A port already exists at id 1"),
    ([*SERIAL, "-device", js({"driver": "virtserialport", "nr": "1"})],
     '-device {"driver":"virtserialport","nr":"1"}: Parameter \'nr\' expects uint64'),
    ([*SERIAL, "-device", js({"driver": "virtserialport", "nr": -1})],
     '-device {"driver":"virtserialport","nr":-1}: Parameter \'nr\' expects uint32_t'),
    ([*SERIAL, "-device", js({"driver": "virtserialport", "name": 5})],
     '-device {"driver":"virtserialport","name":5}: Invalid parameter type for \'name\', '
     "expected: string"),
    ([*SERIAL, "-device", "virtserialport,nr=abc"],
     "-device virtserialport,nr=abc: Parameter 'nr' expects integer"),
    ([*DRIVE, "-device", js({"driver": "ide-hd", "drive": "f", "bootindex": "1"})],
     '-device {"driver":"ide-hd","drive":"f","bootindex":"1"}: Invalid parameter type for '
     "'bootindex', expected: integer"),
    (["-object", js({"qom-type": "memory-backend-ram", "id": "m", "size": "1M"})],
     '-object {"qom-type":"memory-backend-ram","id":"m","size":"1M"}: Parameter \'size\' '
     "expects uint64"),
    (["-object", js({"qom-type": "memory-backend-ram", "id": "m", "size": 1, "foo": 1})],
     '-object {"qom-type":"memory-backend-ram","id":"m","size":1,"foo":1}: Parameter \'foo\' '
     "is unexpected"),
    (["-object", "memory-backend-ram,id=m,size=1M,foo=1"],
     "-object memory-backend-ram,id=m,size=1M,foo=1: Invalid parameter 'foo'"),
    (["-object", "memory-backend-ram,id=m,size=1Q"],
     "-object memory-backend-ram,id=m,size=1Q: Parameter 'size' expects a size value"),
    (["-object", js({"qom-type": "bogus", "id": "s"})],
     '-object {"qom-type":"bogus","id":"s"}: Parameter \'qom-type\' does not accept value '
     "'bogus'"),
    (["-object", js({"qom-type": "secret", "id": "s", "format": "raw", "file": "/nonexistent"})],
     "Unable to read /nonexistent: Failed to open file \u201c/nonexistent\u201d: No such file "
     "or directory"),
    (["-object", js({"qom-type": "secret", "id": "s", "format": "base64", "data": "!!!"})],
     "Base64 data contains invalid characters"),
    (["-object", js({"qom-type": "secret", "id": "s"})],
     "Either 'file' or 'data' must be provided"),
    (["-object", "secret,id=s,data=a", "-object", "secret,id=s,data=a"],
     "-object secret,id=s,data=a: Duplicate ID 's' for object"),
    (["-audiodev", "none"], "-audiodev none: Parameter 'id' is missing"),
    (["-audiodev", js({"id": "a", "driver": "bogus"})],
     '-audiodev {"id":"a","driver":"bogus"}: Parameter \'driver\' does not accept value \'bogus\''),
    (["-audiodev", js({"id": "a", "driver": "none", "foo": 1})],
     '-audiodev {"id":"a","driver":"none","foo":1}: Parameter \'foo\' is unexpected'),
    (["-sandbox", "maybe"], "-sandbox maybe: Parameter 'enable' expects 'on' or 'off'"),
    (["-sandbox", "on,obsolete=bogus"],
     "-sandbox on,obsolete=bogus: invalid argument for obsolete"),
    (["-sandbox", "on,foo=bar"], "-sandbox on,foo=bar: Invalid parameter 'foo'"),
    (["-chardev", "socket,id=c,fd=99,server=on,wait=off"],
     "-chardev socket,id=c,fd=99,server=on,wait=off: File descriptor '99' is not a socket"),
    (["-chardev", "socket,id=c,fd=0,server=on,wait=off"],
     "-chardev socket,id=c,fd=0,server=on,wait=off: File descriptor '0' is not a socket"),
    (["-chardev", "socket,id=c,fd=3,path=/x,server=on,wait=off"],
     "-chardev socket,id=c,fd=3,path=/x,server=on,wait=off: None or one of 'path', 'fd' or "
     "'host' option required."),
    (["-chardev", "socket,id=c,fd=abc,server=on,wait=off"],
     "-chardev socket,id=c,fd=abc,server=on,wait=off: Unable to parse FD number abc"),
    (["-mon", "chardev=c,mode=control,foo=1", *MONITOR],
     "-mon chardev=c,mode=control,foo=1: Invalid parameter 'foo'"),
    (["-mon", "chardev=c,mode=bogus", *MONITOR],
     "-mon chardev=c,mode=bogus: Parameter 'mode' does not accept value 'bogus'"),
    ([*MONITOR, "-mon", "chardev=c,mode=control", "-mon", "chardev=c,mode=control"],
     "-mon chardev=c,mode=control: Device 'c' is in use"),
    ([*MONITOR, "-mon", "chardev=c,mode=control", *SERIAL, "-device", "virtserialport,chardev=c"],
     "-device virtserialport,chardev=c: Property 'virtserialport.chardev' can't take value "
     "'c': Device 'c' is in use"),
]  # fmt: skip

# What QEMU accepts and the simulator models (after BASE).
ACCEPTED = [
    ["-name", "guest=rich,debug-threads=on"],
    ["-name", "a,process=b"],
    ["-cpu", "qemu64"],
    ["-device", js({"driver": "pvpanic", "id": 5})],
    ["-device", "pvpanic-pci", "-device", "pvpanic-pci,events=1,addr=6"],
    ["-no-reboot", "-action", "reboot=shutdown"],
    ["-overcommit", "mem-lock=off,cpu-pm=on"],
    ["-rtc", "base=localtime,clock=host,driftfix=slew"],
    ["-rtc", "base=2006-06-17T16:01:21"],
    ["-boot", "strict=on,order=c,menu=on"],
    ["-audiodev", "none,id=a"],
    ["-audiodev", js({"id": "a", "driver": "none", "timer-period": 100})],
    ["-sandbox", "off"],
    ["-sandbox", "obsolete=deny"],
    ["-smp", "1,sockets=1,cores=1,threads=1"],
    ["-smp", "sockets=2,cores=2"],
    ["-smp", "1,maxcpus=2"],
    [*RAM, "-numa", "node,nodeid=0,cpus=0,memdev=r0"],
    ["-mon", "chardev=c,id=m,mode=control", *MONITOR],
    ["-object", js({"qom-type": "secret", "id": "s", "data": "abc"})],
    ["-object", js({"qom-type": "memory-backend-ram", "id": "m", "size": 1 << 20,
                    "prealloc": True})],
    ["-device", js({"driver": "piix3-usb-uhci", "id": "usb", "bus": "pci.0", "addr": "0x1.0x2"})],
    [*DRIVE, "-device", js({"driver": "ide-hd", "drive": "f", "id": "d", "bootindex": 1})],
    [*SERIAL, "-device", js({"driver": "virtserialport", "bus": "vs.0", "nr": 1, "id": "c0"})],
]  # fmt: skip

# QEMU accepts these; the simulator cannot honour them and says so.
SIMULATOR_REFUSES = [
    (["-cpu", "Skylake-Client"], "simulates only the qemu64 CPU model, not 'Skylake-Client'"),
    (["-cpu", "qemu64,+vmx"], "no CPU features can be changed"),
    (["-audiodev", "wav,id=a"], "has no audio: use driver 'none', not 'wav'"),
    (["-numa", "dist,src=0,dst=1,val=20"], "simulates only -numa node, not -numa dist"),
    (["-chardev", "socket,id=c,path={dir}/t.sock,server=on,wait=off,telnet=on"],
     "does not simulate the socket option 'telnet'"),
    ([*MONITOR, "-mon", "chardev=c,mode=control,pretty=on"],
     "does not simulate pretty=on"),
    (["-object", "iothread,id=io"], "does not simulate qom-type 'iothread'"),
    (["-object", "memory-backend-ram,id=m,size=1M,host-nodes=0,policy=bind"],
     "does not simulate memory backend 'host-nodes'"),
]  # fmt: skip


def placed(argv: list[str], directory: Path) -> list[str]:
    """``argv`` with ``{dir}`` in ``directory``, where a disk image is ready."""
    (directory / "disk.img").write_bytes(bytes(1 << 16))
    return [*BASE, *(arg.replace("{dir}", str(directory)) for arg in argv)]


def qemu(argv: list[str], directory: Path) -> subprocess.Popen[str]:
    command, _ = program("qemu")
    sock = directory / "qmp.sock"
    return subprocess.Popen(
        [*command, *placed(argv, directory), "-qmp", f"unix:{sock},server=on,wait=off"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.parametrize(("argv", "message"), REFUSED)
def test_simulator_refuses_as_qemu(argv: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(CommandLineError) as refused:
        parse_command_line(placed(argv, tmp_path))
    assert str(refused.value) == message


@pytest.mark.parametrize(("argv", "message"), REFUSED)
def test_qemu_refuses_so(argv: list[str], message: str, tmp_path: Path) -> None:
    process = qemu(argv, tmp_path)
    _, stderr = process.communicate(timeout=60)
    assert (process.returncode, stderr) == (1, f"qemu-system-x86_64: {message}\n")


@pytest.mark.parametrize("argv", ACCEPTED)
def test_both_accept(argv: list[str], tmp_path: Path) -> None:
    parse_command_line(placed(argv, tmp_path))
    qemu_starts(argv, tmp_path)


def qemu_starts(argv: list[str], directory: Path) -> None:
    """QEMU gets past its command line: its QMP socket appears."""
    process = qemu(argv, directory)
    try:
        deadline = time.monotonic() + 30
        while not (directory / "qmp.sock").exists():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline
            time.sleep(0.02)
    finally:
        process.kill()
        process.communicate(timeout=30)


@pytest.mark.parametrize(("argv", "message"), SIMULATOR_REFUSES)
def test_qemu_accepts_what_the_simulator_lacks(
    argv: list[str], message: str, tmp_path: Path
) -> None:
    qemu_starts(argv, tmp_path)


@pytest.mark.parametrize(("argv", "message"), SIMULATOR_REFUSES)
def test_simulator_says_what_it_lacks(argv: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(CommandLineError, match="qmpevents-qemu") as refused:
        parse_command_line(placed(argv, tmp_path))
    assert message in str(refused.value)


def test_libvirt_topology_and_numa() -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        fd = sock.fileno()
        config = parse_command_line(
            [*BASE, "-smp", "2,sockets=2,cores=1,threads=1", "-m", "64",
             "-object", "memory-backend-ram,id=a,size=32M",
             "-object", "memory-backend-ram,id=b,size=32M",
             "-numa", "node,nodeid=0,cpus=0,memdev=a", "-numa", "node,nodeid=1,cpus=1,memdev=b",
             "-chardev", f"socket,id=m,fd={fd},server=on,wait=off",
             "-mon", "chardev=m,mode=control"]
        )  # fmt: skip
    assert config.topology == CpuTopology(2, 2, 1, 1, 1, 1, 2)
    assert [(n.nodeid, n.cpus, n.size) for n in config.numa_nodes] == [
        (0, (0,), 32 << 20), (1, (1,), 32 << 20),
    ]  # fmt: skip
    assert config.monitors[0].kind == "fd" and config.monitors[0].chardev == "m"


def test_topology_prefers_cores() -> None:
    assert compute_topology({"cpus": 4}, True) == CpuTopology(4, 1, 1, 1, 4, 1, 4)
    assert compute_topology({"cpus": 4, "sockets": 2}, True) == CpuTopology(4, 2, 1, 1, 2, 1, 4)
    assert compute_topology({"maxcpus": 8, "cores": 2}, True).sockets == 4


def test_warnings_are_qemus(tmp_path: Path) -> None:
    config = parse_command_line([*BASE, "-smp", "2,threads=2"])
    assert config.warnings == [
        "This family of AMD CPU doesn't support hyperthreading(2)\n"
        "Please configure -smp options properly or try enabling topoext feature."
    ]
    assert os.path.exists("/dev/null")

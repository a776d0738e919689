"""The machine queries libvirt relies on, asked of real QEMU 7.2 and of the simulator alike.

Each case starts both programs with the same command line, asks the same
questions on a ``-qmp`` socket and requires the same lines back, byte for byte,
apart from what no two runs share (process and thread ids, timestamps, the
random digits of automatic node names), and the same warnings on stderr.
A command line both refuse must end both with the same status and message.
The ``-ppc64`` cases compare qmpevents-qemu-ppc64 with qemu-system-ppc64.
Without QEMU the cases are skipped (or fail under QMPEVENTS_REQUIRE_QEMU=1).
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.sim.libvirt_domain import Monitor
from tests.sim.programs import program

pytestmark = pytest.mark.timeout(120)

BASE = ["-display", "none", "-nodefaults", "-S", "-accel", "tcg", "-m", "64"]
QUORUM = (
    "driver=quorum,node-name=qA,vote-threshold=2,"
    "children.0.driver=raw,children.0.node-name=qA-c0,children.0.file.driver=file,"
    "children.0.file.filename={dir}/c1.raw,"
    "children.1.driver=raw,children.1.node-name=qA-c1,children.1.file.driver=file,"
    "children.1.file.filename={dir}/c2.raw"
)
Query = tuple[str, dict[str, Any] | None]

CASES: dict[str, tuple[list[str], list[Query]]] = {
    "chardevs": (
        ["-chardev", "null,id=n1", "-chardev", "null,id=zz",
         "-chardev", "socket,id=u1,path={dir}/u1.sock,server=on,wait=off",
         "-chardev", "socket,id=t1,host=127.0.0.1,port={port},server=on,wait=off",
         *(arg for i in range(12) for arg in ("-chardev", f"null,id=c{i}"))],
        [("query-chardev", None), ("qom-list", {"path": "/chardevs"}), ("qom-list", {"path": "/"})],
    ),
    "devices": (
        ["-device", "virtio-balloon-pci,id=b0", "-device", "pvpanic",
         "-device", "virtio-serial-pci", "-device", "virtserialport,id=vs1",
         "-device", '{"driver":"piix3-usb-uhci","id":"usb","addr":"0x1.0x2"}',
         "-object", "memory-backend-ram,id=m1,size=1M",
         "-object", '{"qom-type":"secret","id":"s0","data":"abc"}'],
        [("qom-list", {"path": "/machine/peripheral"}),
         ("qom-list", {"path": "/machine/peripheral-anon"}), ("qom-list", {"path": "/objects"}),
         ("qom-list", {"path": "/nope"}), ("qom-list", {"path": "/machine/peripheral/nope"}),
         ("query-balloon", None), ("balloon", {"value": 0}), ("balloon", {"value": 1}),
         ("query-balloon", None), ("balloon", {"value": 1 << 40}), ("query-balloon", None),
         ("query-iothreads", None), ("query-jobs", None)],
    ),
    "block": (
        ["-drive", "if=none,id=drv0,file={dir}/d.img,format=raw",
         "-drive", "file={dir}/c0.raw,format=raw", "-blockdev", QUORUM,
         "-blockdev", "driver=file,filename={dir}/c3.raw,node-name=f0",
         "-blockdev", "driver=blkdebug,image=f0,node-name=bd,inject-error.0.event=read_aio",
         "-blockdev", "driver=file,filename={dir}/c4.raw,node-name=f1",
         "-device", "ide-hd,drive=f1,bus=ide.1,unit=1,id=disk1"],
        [("query-block", None), ("query-named-block-nodes", {"flat": True}),
         ("query-named-block-nodes", None)],
    ),
    "topology": (
        ["-smp", "2,sockets=2,maxcpus=4"],
        [("query-hotpluggable-cpus", None), ("query-cpus-fast", None)],
    ),
    "dies": (
        ["-smp", "1,sockets=1,dies=2,cores=1,threads=2,maxcpus=4"],
        [("query-hotpluggable-cpus", None), ("query-cpus-fast", None)],
    ),
    "numa-default": (
        ["-object", "memory-backend-ram,id=r0,size=32M",
         "-object", "memory-backend-ram,id=r1,size=32M",
         "-numa", "node,nodeid=0,memdev=r0", "-numa", "node,nodeid=1,memdev=r1",
         "-smp", "2,sockets=2"],
        [("query-hotpluggable-cpus", None), ("query-cpus-fast", None),
         ("qom-list", {"path": "/objects"})],
    ),
    "numa-partial": (
        ["-object", "memory-backend-ram,id=r0,size=32M",
         "-object", "memory-backend-ram,id=r1,size=32M",
         "-numa", "node,nodeid=0,cpus=0,memdev=r0", "-numa", "node,nodeid=1,memdev=r1",
         "-smp", "2,sockets=2"],
        [("query-hotpluggable-cpus", None)],
    ),
    "dimms": (
        ["-m", "64,slots=4,maxmem=1G",
         "-object", "memory-backend-ram,id=r0,size=32M",
         "-object", "memory-backend-ram,id=r1,size=32M",
         "-numa", "node,nodeid=0,memdev=r0", "-numa", "node,nodeid=1,memdev=r1",
         "-object", "memory-backend-ram,id=d1,size=64M",
         "-object", '{"qom-type":"memory-backend-ram","id":"d2","size":67108864}',
         "-device", "pc-dimm,id=a,memdev=d1,slot=2,node=1",
         "-device", '{"driver":"pc-dimm","id":"b","memdev":"d2"}'],
        [("query-memory-devices", None), ("qom-list", {"path": "/objects"}),
         ("query-balloon", None)],
    ),
    "name": (
        ["-name", "process=qemu-sim", "-name", "rich,debug-threads=on"],
        [("query-name", None)],
    ),
    "q35": (
        ["-machine", "q35", "-smp", "3", "-drive", "file={dir}/c0.raw,format=raw"],
        [("query-cpus-fast", None), ("query-block", None)],
    ),
    "none": (
        ["-machine", "none"],
        [("query-hotpluggable-cpus", None), ("query-cpus-fast", None), ("query-balloon", None),
         ("qom-list", {"path": "/machine/peripheral"}), ("query-block", None),
         ("system_powerdown", None), ("query-status", None)],
    ),
}  # fmt: skip
# qemu-system-ppc64 and qmpevents-qemu-ppc64: libvirt's pseries domain, and the rest.
PPC64_CASES: dict[str, tuple[list[str], list[Query]]] = {
    "pseries-libvirt": (
        ["-machine", "pseries-7.2,usb=off,dump-guest-core=off", "-cpu", "POWER9",
         "-m", "size=524288k,slots=4,maxmem=2097152k", "-smp", "1,sockets=1,cores=1,threads=1",
         "-object", '{"qom-type":"memory-backend-ram","id":"ram-node0","size":536870912}',
         "-numa", "node,nodeid=0,cpus=0,memdev=ram-node0",
         "-device", '{"driver":"qemu-xhci","id":"usb","bus":"pci.0","addr":"0x2"}',
         "-device", '{"driver":"virtio-serial-pci","id":"virtio-serial0","bus":"pci.0",'
                    '"addr":"0x1"}',
         "-object", '{"qom-type":"memory-backend-ram","id":"memdimm0","size":268435456}',
         "-device", '{"driver":"pc-dimm","node":0,"memdev":"memdimm0","id":"dimm0","slot":0}',
         "-blockdev", '{"driver":"file","filename":"{dir}/d.img","node-name":"libvirt-1-storage",'
                      '"auto-read-only":true,"discard":"unmap"}',
         "-blockdev", '{"node-name":"libvirt-1-format","read-only":false,"driver":"raw",'
                      '"file":"libvirt-1-storage"}',
         "-device", '{"driver":"virtio-blk-pci","bus":"pci.0","addr":"0x3",'
                    '"drive":"libvirt-1-format","id":"virtio-disk0","bootindex":1}',
         "-device", '{"driver":"virtio-balloon-pci","id":"balloon0","bus":"pci.0","addr":"0x4"}'],
        [("query-hotpluggable-cpus", None), ("query-cpus-fast", None),
         ("qom-list", {"path": "/machine/peripheral"}), ("query-memory-devices", None),
         ("query-block", None), ("query-balloon", None), ("query-target", None),
         ("query-kvm", None)],
    ),
    "pseries-cores": (
        ["-m", "256", "-smp", "3,maxcpus=4", "-device", "virtio-blk,drive=f", "-blockdev",
         "driver=file,filename={dir}/c0.raw,node-name=f"],
        [("query-hotpluggable-cpus", None), ("query-cpus-fast", None), ("query-block", None)],
    ),
    # Debian's qemu-system-ppc64 is built without KVM.
    "no-kvm": (["-accel", "kvm"], []),
    # SLOF's Real Mode Area: too little memory ends both at the start.
    "pseries-small": (["-m", "64"], []),
    "pseries-small-node0": (
        ["-m", "256", "-object", "memory-backend-ram,id=r0,size=64M",
         "-object", "memory-backend-ram,id=r1,size=192M",
         "-numa", "node,nodeid=0,memdev=r0", "-numa", "node,nodeid=1,memdev=r1"],
        [],
    ),
}  # fmt: skip


def normalized(line: str) -> str:
    line = re.sub(r'"thread-id": \d{3,}', '"thread-id": TID', line)
    line = re.sub(r'"seconds": \d+, "microseconds": \d+', "STAMP", line)
    line = re.sub(r"#block(\d+)\d\d\b", r"#block\1NN", line)
    return re.sub(r"<-> 127\.0\.0\.1:\d+", "<-> PEER", line)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ask(
    which: str, directory: Path, argv: list[str], queries: list[Query]
) -> tuple[list[str], str]:
    """Every line ``which`` answers ``queries`` with, and what it printed on stderr."""
    command, name = program(which)
    sock = directory / "qmp.sock"
    for image in ("d.img", "c0.raw", "c1.raw", "c2.raw", "c3.raw", "c4.raw"):
        (directory / image).write_bytes(bytes(1 << 16))
    process = subprocess.Popen(
        [*command, *BASE, *argv, "-qmp", f"unix:{sock},server=on,wait=off"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and process.poll() is None:
            assert time.monotonic() < deadline, "no QMP socket"
            time.sleep(0.02)
        try:
            monitor = Monitor(sock)
            lines = monitor.execute("qmp_capabilities")
            for query, arguments in queries:
                lines += monitor.execute(query, arguments)
            monitor.execute("quit")
        except (OSError, EOFError):  # refused: QEMU listens before it checks everything
            lines = [f"exit status {process.wait(30)}"]
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
        process.wait(30)
    return [normalized(line) for line in lines], stderr.replace(name, "PROGRAM")


@pytest.mark.parametrize(
    ("case", "target"),
    [*((case, "") for case in sorted(CASES)), *((case, "-ppc64") for case in PPC64_CASES)],
)
def test_same_answers_as_qemu(case: str, target: str, tmp_path: Path) -> None:
    template, queries = (PPC64_CASES if target else CASES)[case]
    port = str(free_port())
    results = []
    for which in ("qemu" + target, "sim" + target):
        directory = tmp_path / which
        directory.mkdir()
        argv = [arg.replace("{dir}", str(directory)).replace("{port}", port) for arg in template]
        lines, stderr = ask(which, directory, argv, queries)
        results.append(([line.replace(str(directory), "DIR") for line in lines], stderr))
    (qemu_lines, qemu_stderr), (sim_lines, sim_stderr) = results
    assert sim_lines == qemu_lines
    assert sim_stderr == qemu_stderr

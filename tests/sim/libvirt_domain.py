"""A domain as libvirt 9.0 starts it, run on real QEMU or the simulator, and a libvirt-like monitor.

:func:`domain_argv` is the command line libvirt gave QEMU 7.2 for a domain with
the devices libvirt adds to every domain and those the simulator models (isa
pvpanic, a guest agent channel, a DIMM on a NUMA node, an IDE disk, a balloon):
JSON ``-device``/``-blockdev``, and the monitor and the channel as listening
sockets passed as descriptors (``fd=N``). :func:`start_domain` creates those
sockets itself, as libvirt does, and starts a program on them.

:class:`Monitor` talks to the monitor as libvirt does: one JSON line per
request with id ``libvirt-N``, descriptors passed with SCM_RIGHTS, replies and
events read as lines. ``tests/data/libvirt-domain-start.json`` holds what QEMU
7.2 answered libvirt's start sequence (:func:`expected_start`).

The disk holds a boot sector that makes a real guest behave as the simulated
one does on the power button: it enables the ACPI power button event, waits for
it and powers the machine off (PM1a at port 0x600, where SeaBIOS puts it).
"""

from __future__ import annotations

import array
import contextlib
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.sim.programs import program

DATA = Path(__file__).resolve().parent.parent / "data" / "libvirt-domain-start.json"
WAIT = 30.0


def acpi_poweroff_guest() -> bytes:
    """A 512-byte boot sector: on the ACPI power button, power off (SLP_EN, S5)."""
    code = bytes(
        [
            0xFA,  # cli
            0xBA, 0x02, 0x06, 0xB8, 0x00, 0x01, 0xEF,  # PM1a_EN (0x602) = PWRBTN_EN
            0xBA, 0x00, 0x06, 0xED, 0xA9, 0x00, 0x01, 0x74, 0xF7,  # wait for PWRBTN_STS
            0xBA, 0x04, 0x06, 0xB8, 0x00, 0x20, 0xEF,  # PM1a_CNT (0x604) = SLP_EN
            0xF4, 0xEB, 0xFD,  # hlt; jmp hlt
        ]
    )  # fmt: skip
    return code + bytes(510 - len(code)) + b"\x55\xaa"


def domain_argv(directory: Path, monitor_fd: int, channel_fd: int) -> list[str]:
    """libvirt 9.0's command line for the test domain (JSON forms as libvirt writes them)."""

    def js(value: dict[str, Any]) -> str:
        return json.dumps(value, separators=(",", ":"))

    return [
        "-name", "guest=rich,debug-threads=on", "-S",
        "-object", js({"qom-type": "secret", "id": "masterKey0", "format": "raw",
                       "file": f"{directory}/master-key.aes"}),
        "-machine", "pc-i440fx-7.2,usb=off,dump-guest-core=off", "-accel", "tcg",
        "-cpu", "qemu64", "-m", "size=32768k,slots=4,maxmem=1048576k",
        "-overcommit", "mem-lock=off", "-smp", "1,sockets=1,cores=1,threads=1",
        "-object", js({"qom-type": "memory-backend-ram", "id": "ram-node0", "size": 33554432}),
        "-numa", "node,nodeid=0,cpus=0,memdev=ram-node0",
        "-uuid", "d94df58f-fd9c-4a0f-b21b-749b7eb000e0", "-display", "none",
        "-no-user-config", "-nodefaults",
        "-chardev", f"socket,id=charmonitor,fd={monitor_fd},server=on,wait=off",
        "-mon", "chardev=charmonitor,id=monitor,mode=control",
        "-rtc", "base=utc", "-no-shutdown", "-boot", "strict=on",
        "-device", js({"driver": "piix3-usb-uhci", "id": "usb", "bus": "pci.0",
                       "addr": "0x1.0x2"}),
        "-device", js({"driver": "virtio-serial-pci", "id": "virtio-serial0", "bus": "pci.0",
                       "addr": "0x2"}),
        "-object", js({"qom-type": "memory-backend-ram", "id": "memdimm0", "size": 134217728}),
        "-device", js({"driver": "pc-dimm", "node": 0, "memdev": "memdimm0", "id": "dimm0",
                       "slot": 0}),
        "-blockdev", js({"driver": "file", "filename": f"{directory}/guest2.img",
                         "node-name": "libvirt-1-storage", "auto-read-only": True,
                         "discard": "unmap"}),
        "-blockdev", js({"node-name": "libvirt-1-format", "read-only": False, "driver": "raw",
                         "file": "libvirt-1-storage"}),
        "-device", js({"driver": "ide-hd", "bus": "ide.0", "unit": 0,
                       "drive": "libvirt-1-format", "id": "ide0-0-0", "bootindex": 1}),
        "-chardev", f"socket,id=charchannel0,fd={channel_fd},server=on,wait=off",
        "-device", js({"driver": "virtserialport", "bus": "virtio-serial0.0", "nr": 1,
                       "chardev": "charchannel0", "id": "channel0",
                       "name": "org.qemu.guest_agent.0"}),
        "-audiodev", js({"id": "audio1", "driver": "none"}),
        "-device", js({"driver": "virtio-balloon-pci", "id": "balloon0", "bus": "pci.0",
                       "addr": "0x3"}),
        "-sandbox", "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
        "-device", js({"driver": "pvpanic"}), "-msg", "timestamp=on",
    ]  # fmt: skip


@dataclass
class Domain:
    """A started program: its process, directory and the paths of its two sockets."""

    process: subprocess.Popen[bytes]
    directory: Path
    name: str

    @property
    def monitor_path(self) -> Path:
        return self.directory / "monitor.sock"

    @property
    def channel_path(self) -> Path:
        return self.directory / "chan.sock"

    @property
    def disk(self) -> Path:
        return self.directory / "guest2.img"


@contextlib.contextmanager
def start_domain(which: str, directory: Path, *, drop: tuple[str, ...] = ()) -> Iterator[Domain]:
    """Start ``which`` (``"qemu"`` or ``"sim"``) as libvirt does; killed on exit.

    ``drop`` removes flags from the command line (``-no-shutdown``).
    """
    command, name = program(which)
    (directory / "master-key.aes").write_bytes(os.urandom(32))
    (directory / "guest2.img").write_bytes(acpi_poweroff_guest() + bytes((1 << 20) - 512))
    sockets = []
    for file in ("monitor.sock", "chan.sock"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(str(directory / file))
        sock.listen()
        sockets.append(sock)
    argv = domain_argv(directory, sockets[0].fileno(), sockets[1].fileno())
    with (directory / "stderr").open("wb") as stderr:
        process = subprocess.Popen(
            [*command, *(arg for arg in argv if arg not in drop)],
            pass_fds=[sock.fileno() for sock in sockets],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    for sock in sockets:
        sock.close()
    try:
        yield Domain(process, directory, name)
    finally:
        process.kill()
        process.wait(WAIT)


class Monitor:
    """A QMP client that writes and reads lines as libvirt does (ids ``libvirt-N``)."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(WAIT)
        self.sock.connect(str(path))
        self._buffer = b""
        self.count = 0
        self.greeting = self.line()

    def close(self) -> None:
        self.sock.close()

    def line(self) -> str:
        """The next line the server wrote, without its CRLF."""
        while b"\n" not in self._buffer:
            data = self.sock.recv(65536)
            if not data:
                raise EOFError("the monitor closed")
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode().removesuffix("\r")

    def send(
        self, command: str, arguments: dict[str, Any] | None = None, fds: list[int] | None = None
    ) -> str:
        """Send one request (``fds`` with it, as SCM_RIGHTS); returns its id."""
        self.count += 1
        request: dict[str, Any] = {"execute": command}
        if arguments is not None:
            request["arguments"] = arguments
        request["id"] = f"libvirt-{self.count}"
        data = json.dumps(request, separators=(",", ":")).encode() + b"\r\n"
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
        self.sock.sendmsg([data], ancillary)
        return str(request["id"])

    def execute(
        self, command: str, arguments: dict[str, Any] | None = None, fds: list[int] | None = None
    ) -> list[str]:
        """Send a request; every line up to and including its reply."""
        request_id = self.send(command, arguments, fds)
        lines = []
        while True:
            line = self.line()
            lines.append(line)
            if f'"id": "{request_id}"' in line:
                return lines

    def events_until(self, name: str, timeout: float = WAIT) -> list[str]:
        """Lines up to and including the next event ``name``."""
        lines = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.line()
            lines.append(line)
            if f'"event": "{name}"' in line:
                return lines
        raise AssertionError(f"no {name} within {timeout} s: {lines}")


def connect(domain: Domain) -> Monitor:
    """Negotiate on the domain's monitor once the program has set it up."""
    deadline = time.monotonic() + WAIT
    while True:
        assert domain.process.poll() is None, (domain.directory / "stderr").read_text()
        monitor = Monitor(domain.monitor_path)
        try:
            reply = monitor.execute("qmp_capabilities")
        except (EOFError, OSError):
            monitor.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        assert reply == ['{"return": {}, "id": "libvirt-1"}']
        return monitor


def expected_start(domain: Domain) -> list[tuple[str, dict[str, Any] | None, list[str]]]:
    """QEMU 7.2's answers to libvirt's start sequence, for ``domain``."""
    steps = json.loads(DATA.read_text())["steps"]
    allocated = str(domain.disk.stat().st_blocks * 512)
    result = []
    for step in steps:
        lines = [line.replace("{dir}", str(domain.directory)) for line in step["received"]]
        lines = [line.replace("{allocated}", allocated) for line in lines]
        result.append((step["execute"], step.get("arguments"), lines))
    return result

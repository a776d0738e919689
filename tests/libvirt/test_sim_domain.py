"""A libvirt domain run by qmpevents-qemu: created, suspended, dumped, rebooted, shut down.

The domain is the one libvirt's own QEMU runs in tests/sim/test_libvirt_domain.py
(isa pvpanic, a guest agent channel, a DIMM on a NUMA node, an IDE disk, a
balloon), with ``<emulator>`` the ``qmpevents-qemu`` script. libvirtd starts it
with its full command line (secret object, ``-sandbox``, the monitor and the
channel as passed sockets), asks its start questions, and drives it through
``virsh``; the QMP events it sees come from ``virsh qemu-monitor-event``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.libvirt.host import URI, require_libvirt, restart_libvirtd, virsh
from tests.libvirt.observers import WAIT, Seen
from tools.libvirt_domains import domain_xml as libvirt_domain

pytestmark = pytest.mark.timeout(240)

CAPS_CACHE = Path("/var/cache/libvirt/qemu/capabilities")
_names = itertools.count()


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """qmpevents-qemu at a path of its own, so that libvirt probes this code."""
    require_libvirt()
    script = Path(sys.executable).with_name("qmpevents-qemu")
    if not script.exists():
        pytest.fail(f"{script} is missing: install the package (pip install -e .)")
    path = tmp_path_factory.mktemp("emulator") / "qmpevents-qemu"
    shutil.copy2(script, path)
    done = subprocess.run(
        ["virsh", "-c", URI, "domcapabilities", "--emulatorbin", str(path), "--virttype", "qemu"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"libvirt's probe of qmpevents-qemu failed: {done.stderr}"
    yield path
    (CAPS_CACHE / f"{hashlib.sha256(str(path).encode()).hexdigest()}.xml").unlink(missing_ok=True)


def domain_xml(name: str, emulator: Path, disk: Path) -> str:
    """The README's domain, as libvirt applies ``<on_crash>coredump-restart``."""
    return libvirt_domain(name, emulator, disk, on_crash="coredump-restart")


@pytest.fixture(scope="module")
def domains(
    emulator: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], str]]:
    """``running()``: a running transient domain on qmpevents-qemu, the last one while it
    runs (starting one takes libvirt a while), else a new one. All are destroyed at the end.
    """
    made: list[str] = []

    def running() -> str:
        if made and state(made[-1]).startswith("running"):
            return made[-1]
        name = f"qmpevents-test-sim-{os.getpid()}-{next(_names)}"
        directory = tmp_path_factory.mktemp("domain")
        disk = directory / "disk.img"
        disk.write_bytes(bytes(1 << 20))
        xml = directory / "domain.xml"
        xml.write_text(domain_xml(name, emulator, disk))
        virsh("create", str(xml), timeout=180)
        made.append(name)
        return name

    yield running
    for name in made:
        virsh("destroy", name, check=False)


@pytest.fixture
def domain(domains: Callable[[], str]) -> str:
    return domains()


def state(name: str) -> str:
    return virsh("domstate", "--reason", name, check=False).strip()


def wait_gone(name: str) -> None:
    deadline = time.monotonic() + WAIT
    while name in virsh("list", "--name"):
        assert time.monotonic() < deadline, f"{name} still runs"
        time.sleep(0.2)


def test_created_and_started(domain: str) -> None:
    assert state(domain).startswith("running")
    info = virsh("dominfo", domain)
    assert "163840 KiB" in info  # 32 MiB of RAM and a 128 MiB DIMM
    log = Path(f"/var/log/libvirt/qemu/{domain}.log").read_text()
    assert "qmpevents-qemu" in log and "-sandbox on" in log and ",fd=" in log


def test_suspend_and_resume(domain: str) -> None:
    events = Seen(domain)
    try:
        virsh("suspend", domain)
        assert events.next_names(1) == ["STOP"]
        assert state(domain) == "paused (user)"
        virsh("resume", domain)
        assert events.next_names(1) == ["RESUME"]
        assert state(domain) == "running (unpaused)"
    finally:
        events.close()


_DUMP_TOTAL = 168034304  # RAM, DIMM and BIOS, as QEMU 7.2 dumps them
DUMP = [
    "STOP",
    f'DUMP_COMPLETED {{"result":{{"total":{_DUMP_TOTAL},"status":"completed",'
    f'"completed":{_DUMP_TOTAL}}}}}',
    "RESUME",
]
"""``virsh dump --memory-only``: the same on real QEMU 7.2 (test_qemu_domain_oracle.py)."""


def test_memory_only_dump(domain: str, tmp_path: Path) -> None:
    events = Seen(domain)
    dump = tmp_path / "guest.elf"
    try:
        virsh("dump", "--memory-only", domain, str(dump), timeout=120)
        names = events.next_names(3)
    finally:
        events.close()
    assert names == DUMP
    with dump.open("rb") as f:
        assert f.read(4) == b"\x7fELF"
    assert state(domain) == "running (unpaused)"


REBOOT = [
    "POWERDOWN",
    'SHUTDOWN {"guest":true,"reason":"guest-shutdown"}',
    "STOP",
    'RESET {"guest":false,"reason":"host-qmp-system-reset"}',
    "RESUME",
    # SeaBIOS resets once more itself, as in QEMU 7.2 (tests/data/qemu-7.2/reset.json).
    'RESET {"guest":true,"reason":"guest-reset"}',
]
"""``virsh reboot`` (ACPI): the guest shuts down, libvirt resets and continues it.
The same on real QEMU 7.2 (test_qemu_domain_oracle.py)."""

SHUTDOWN = [
    "POWERDOWN",
    'SHUTDOWN {"guest":true,"reason":"guest-shutdown"}',
    "STOP",
    'SHUTDOWN {"guest":false,"reason":"host-signal"}',
]
"""``virsh shutdown``: the guest shuts down, then libvirt ends the emulator (SIGTERM)."""


def test_reboot(domain: str) -> None:
    events = Seen(domain)
    try:
        virsh("reboot", domain)
        names = events.next_names(len(REBOOT))
    finally:
        events.close()
    assert names == REBOOT
    assert state(domain).startswith("running")


def test_guest_agent_channel(domain: str) -> None:
    """The guest opens the agent's port (x-sim-vserport): libvirt connects to the channel
    socket the simulator listens on; the guest closes it: libvirt lets go."""

    def channel() -> str:
        reply = virsh("qemu-monitor-command", domain, '{"execute":"query-chardev"}')
        return next(part for part in reply.split("},{") if '"charchannel0"' in part)

    assert '"frontend-open":false,"filename":"disconnected:unix:' in channel()
    events = Seen(domain)
    try:
        for open_ in ("true", "false"):
            command = '{"execute":"x-sim-vserport","arguments":{"id":"channel0","open":%s}}'
            virsh("qemu-monitor-command", domain, command % open_)
            name, data = events.next_names(1)[0].split(" ", 1)
            assert (name, json.loads(data)) == (
                "VSERPORT_CHANGE", {"id": "channel0", "open": open_ == "true"},
            )  # fmt: skip
            deadline = time.monotonic() + WAIT
            connected = f'"frontend-open":{open_},"filename":"unix:'
            disconnected = '"frontend-open":false,"filename":"disconnected:'
            while (connected if open_ == "true" else disconnected) not in channel():
                assert time.monotonic() < deadline, channel()
                time.sleep(0.2)
    finally:
        events.close()


def test_survives_a_libvirtd_restart(domain: str) -> None:
    """libvirtd reconnects to a running domain (query-jobs, query-status, ...); had one
    question no answer, it would kill the domain (reason=daemon)."""
    restart_libvirtd()
    assert state(domain).startswith("running")
    events = Seen(domain)
    try:
        virsh("suspend", domain)
        assert events.next_names(1) == ["STOP"]
        virsh("resume", domain)
        assert events.next_names(1) == ["RESUME"]
    finally:
        events.close()


def test_shutdown(domain: str) -> None:
    events = Seen(domain)
    try:
        virsh("shutdown", domain)
        names = events.next_names(len(SHUTDOWN))
    finally:
        events.close()
    assert names == SHUTDOWN
    wait_gone(domain)
    log = Path(f"/var/log/libvirt/qemu/{domain}.log").read_text()
    assert log.rstrip().endswith("shutting down, reason=shutdown")


def test_destroy(domain: str) -> None:
    virsh("destroy", domain)
    wait_gone(domain)
    log = Path(f"/var/log/libvirt/qemu/{domain}.log").read_text()
    assert "qmpevents-qemu: terminating on signal 15 from pid" in log
    assert log.rstrip().endswith("shutting down, reason=destroyed")

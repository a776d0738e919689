"""A pseries domain on qmpevents-qemu-ppc64, and the same domain on qemu-system-ppc64.

On pseries a DIMM unplug the guest refuses is reported as QEMU 7.2 reports it
there: MEM_UNPLUG_ERROR, then DEVICE_UNPLUG_GUEST_ERROR (twice, as QEMU sends
it), and libvirt fails ``virsh detach-device``. Each event is seen by ``virsh
qemu-monitor-event`` and by ``qmpevents watch`` (tests/libvirt/observers.py).
A guest panic (Linux's RTAS ibm,os-term, ``x-sim-os-term``) makes libvirt apply
``<on_crash>coredump-restart``.

Where real QEMU can play the same part with no guest OS (its firmware, SLOF,
answers no unplug request and keeps running), the tests run both emulators
and require the same: libvirt's probe and start, ``virsh suspend``/``resume``,
``virsh dump --memory-only`` event by event, and an unplug nobody answers
(libvirt waits 10 s for pseries memory, then reports the request as sent and
keeps the DIMM). Refusing takes a guest OS, so that flow runs on the simulator.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.libvirt.host import URI, require_libvirt, virsh
from tests.libvirt.observers import WAIT, Seen
from tests.libvirt.test_sim_domain_events import dimm_xml
from tests.qemu.conftest import _require
from tests.sim.programs import PPC64_QEMU
from tools.libvirt_domains import pseries_domain_xml

pytestmark = pytest.mark.timeout(240)

CAPS_CACHE = Path("/var/cache/libvirt/qemu/capabilities")
EMULATORS = ("qemu", "sim")
_names = itertools.count()
_ELF_PPC64 = 21  # e_machine EM_PPC64


def domcapabilities(emulator: str | Path) -> str:
    done = subprocess.run(
        ["virsh", "-c", URI, "domcapabilities", "--emulatorbin", str(emulator),
         "--arch", "ppc64", "--virttype", "qemu"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"libvirt's probe of {emulator} failed: {done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``{"qemu": qemu-system-ppc64, "sim": qmpevents-qemu-ppc64 at a path of its own}``.

    The simulator's copy has a fresh path, so that libvirt probes this code; its
    name ends in ppc64, which is what makes it the ppc64 binary.
    """
    require_libvirt()
    qemu = _require(PPC64_QEMU)
    script = Path(sys.executable).with_name("qmpevents-qemu-ppc64")
    if not script.exists():
        pytest.fail(f"{script} is missing: install the package (pip install -e .)")
    path = tmp_path_factory.mktemp("emulator") / "qmpevents-qemu-ppc64"
    shutil.copy2(script, path)
    yield {"qemu": qemu, "sim": str(path)}
    (CAPS_CACHE / f"{hashlib.sha256(str(path).encode()).hexdigest()}.xml").unlink(missing_ok=True)


def test_libvirt_probes_the_ppc64_binary(emulators: dict[str, str]) -> None:
    ours = domcapabilities(emulators["sim"])
    theirs = domcapabilities(emulators["qemu"])
    for element in ("<arch>ppc64</arch>", "<machine>pseries-7.2</machine>", "<vcpu max='4096'/>"):
        assert element in ours and element in theirs
    # The disk buses libvirt offers are what both binaries have for a pseries disk.
    assert "<value>virtio</value>" in ours


@contextmanager
def running(emulator: str, tmp_path: Path, on_crash: str = "preserve") -> Iterator[str]:
    """A running transient pseries domain on ``emulator``, destroyed afterwards."""
    name = f"qmpevents-test-pseries-{os.getpid()}-{next(_names)}"
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    xml = tmp_path / "domain.xml"
    xml.write_text(pseries_domain_xml(name, emulator, disk, on_crash=on_crash))
    virsh("create", str(xml), timeout=180)
    try:
        yield name
    finally:
        virsh("destroy", name, check=False)


@pytest.fixture
def domain(
    request: pytest.FixtureRequest, emulators: dict[str, str], tmp_path: Path
) -> Iterator[str]:
    """A running transient pseries domain on the emulator the test is parametrized with."""
    with running(emulators[request.param], tmp_path) as name:
        yield name


def state(name: str) -> str:
    return virsh("domstate", "--reason", name, check=False).strip()


@pytest.mark.parametrize("domain", EMULATORS, indirect=True)
def test_started_as_qemu_starts(domain: str) -> None:
    assert state(domain) == "running (booted)"
    log = Path(f"/var/log/libvirt/qemu/{domain}.log").read_text()
    assert "-machine pseries-7.2,usb=off,dump-guest-core=off" in log and "-cpu POWER9" in log
    assert log.count("warning: TCG doesn't support requested feature") == 4
    assert "<address type='dimm' slot='0' base='0x40000000'/>" in virsh("dumpxml", domain)


@pytest.mark.parametrize("domain", EMULATORS, indirect=True)
def test_suspend_resume_and_dump(domain: str, tmp_path: Path) -> None:
    seen = Seen(domain)
    dump = tmp_path / "guest.elf"
    try:
        virsh("suspend", domain)
        virsh("resume", domain)
        virsh("dump", "--memory-only", domain, str(dump), timeout=120)
        names = seen.next_names(5)
    finally:
        seen.close()
    total = 768 << 20  # the guest's RAM and its DIMM, as qemu-system-ppc64 7.2 dumps them
    assert names == [
        "STOP",
        "RESUME",
        "STOP",
        f'DUMP_COMPLETED {{"result":{{"total":{total},"status":"completed","completed":{total}}}}}',
        "RESUME",
    ]
    header = dump.read_bytes()[:20]
    assert header[:5] == b"\x7fELF\x02"  # 64-bit
    order = "<" if header[5] == 1 else ">"
    assert struct.unpack(f"{order}H", header[18:20])[0] == _ELF_PPC64
    assert state(domain) == "running (unpaused)"


@pytest.mark.parametrize("domain", EMULATORS, indirect=True)
def test_an_unplug_nobody_answers(domain: str, tmp_path: Path) -> None:
    xml = tmp_path / "dimm.xml"
    xml.write_text(dimm_xml(domain))
    seen = Seen(domain)
    try:
        started = time.monotonic()
        detach = subprocess.run(
            ["virsh", "-c", URI, "detach-device", domain, str(xml)],
            capture_output=True, text=True, timeout=WAIT, check=False,
        )  # fmt: skip
        waited = time.monotonic() - started
    finally:
        seen.close()
    # libvirt gives pseries memory 10 s, then takes the request as sent.
    assert (detach.returncode, detach.stdout.strip()) == (0, "Device detached successfully")
    assert waited >= 9
    assert "<memory model='dimm'" in virsh("dumpxml", domain)


@pytest.mark.parametrize("domain", ["sim"], indirect=True)
def test_an_unplug_the_guest_refuses(domain: str, tmp_path: Path) -> None:
    xml = tmp_path / "dimm.xml"
    xml.write_text(dimm_xml(domain))
    virsh(
        "qemu-monitor-command",
        domain,
        '{"execute":"x-sim-unplug-policy","arguments":{"answer":"refuse"}}',
    )
    seen = Seen(domain)
    try:
        detach = subprocess.run(
            ["virsh", "-c", URI, "detach-device", domain, str(xml)],
            capture_output=True, text=True, timeout=WAIT, check=False,
        )  # fmt: skip
        lines = seen.until(
            "MEM_UNPLUG_ERROR", "DEVICE_UNPLUG_GUEST_ERROR", "DEVICE_UNPLUG_GUEST_ERROR"
        )
    finally:
        seen.close()
    assert detach.returncode == 1
    assert "unplug of device was rejected by the guest" in detach.stderr
    assert [line.split(maxsplit=2)[2] for line in lines] == [
        "MEM_UNPLUG_ERROR dimm0: Memory hotunplug rejected by the guest for device dimm0",
        "DEVICE_UNPLUG_GUEST_ERROR dimm0 /machine/peripheral/dimm0",
        "DEVICE_UNPLUG_GUEST_ERROR dimm0 /machine/peripheral/dimm0",
    ]
    assert "<memory model='dimm'" in virsh("dumpxml", domain)
    assert state(domain) == "running (booted)"


PSERIES_PANIC_RESTART = ["GUEST_PANICKED", "STOP", "DUMP_COMPLETED", "RESET", "RESUME"]
"""libvirt's coredump-restart of a pseries guest that panicked: as on pc, but SLOF
does not reset the machine again after libvirt's reset (tests/data/qemu-7.2/os_term.json)."""


def test_a_panic_makes_libvirt_dump_and_restart(emulators: dict[str, str], tmp_path: Path) -> None:
    """Linux on pseries panics through RTAS ibm,os-term (``<panic model='pseries'/>``)."""
    with running(emulators["sim"], tmp_path, on_crash="coredump-restart") as name:
        dumps = Path("/var/lib/libvirt/qemu/dump")
        pattern = f"{virsh('domid', name).strip()}-*"
        before = set(dumps.glob(pattern)) if dumps.exists() else set()
        seen = Seen(name)
        try:
            virsh(
                "qemu-monitor-command",
                name,
                '{"execute":"x-sim-os-term","arguments":{"message":"Kernel panic"}}',
            )
            events = seen.next_names(len(PSERIES_PANIC_RESTART))
        finally:
            seen.close()
        made = set(dumps.glob(pattern)) - before
        for dump in made:
            dump.unlink()
        assert [event.split(" ", 1)[0] for event in events] == PSERIES_PANIC_RESTART
        assert events[0] == 'GUEST_PANICKED {"action":"pause"}'
        assert len(made) == 1
        assert state(name) == "running (crashed)"
        log = Path(f"/var/log/libvirt/qemu/{name}.log").read_text()
        assert "qmpevents-qemu-ppc64: OS terminated: Kernel panic" in log

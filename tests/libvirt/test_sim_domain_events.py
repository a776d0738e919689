"""The seed events of a domain on qmpevents-qemu, through libvirt and through ``qmpevents watch``.

A guest panic makes libvirt apply ``<on_crash>coredump-restart</on_crash>`` (a
dump in libvirt's dump directory, then a reset); a DIMM unplug refused by the
guest gives its ACPI _OST reports (ACPI_DEVICE_OST, as QEMU 7.2 on pc) and
``virsh detach-device`` fails, the DIMM staying; a scenario bound
with ``-x-sim-scenario`` (``<qemu:commandline>``) panics the guest by itself.
Each is seen by ``virsh qemu-monitor-event`` and by ``qmpevents watch
qemu:///system?domain=NAME`` (tests/libvirt/observers.py).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from tests.libvirt.host import URI, virsh
from tests.libvirt.observers import WAIT, Seen
from tests.libvirt.test_sim_domain import domain_xml, domains, emulator  # noqa: F401

pytestmark = pytest.mark.timeout(240)


PANIC_RESTART = ["GUEST_PANICKED", "STOP", "DUMP_COMPLETED", "RESET", "RESUME", "RESET"]
"""A panic under ``<on_crash>coredump-restart``: the guest pauses, libvirt dumps it,
resets and continues it, and the firmware resets once more (as real QEMU 7.2 does,
test_qemu_domain_oracle.py)."""


@pytest.fixture
def watch(domains: Callable[[], str]) -> Iterator[tuple[str, Seen]]:  # noqa: F811
    name = domains()
    seen = Seen(name)
    yield name, seen
    seen.close()


def test_a_panic_makes_libvirt_dump_and_restart(watch: tuple[str, Seen]) -> None:
    name, watcher = watch
    dumps = Path("/var/lib/libvirt/qemu/dump")
    # libvirt names a dump ID-SHORTNAME-TIME, the name cut at 20 characters.
    pattern = f"{virsh('domid', name).strip()}-*"
    before = set(dumps.glob(pattern)) if dumps.exists() else set()
    virsh("qemu-monitor-command", name, '{"execute":"x-sim-pvpanic","arguments":{"value":1}}')
    events = watcher.next_names(len(PANIC_RESTART))
    assert [event.split(" ", 1)[0] for event in events] == PANIC_RESTART
    assert events[0] == 'GUEST_PANICKED {"action":"pause"}'
    made = set(dumps.glob(pattern)) - before
    assert len(made) == 1
    dump = made.pop()
    try:
        assert dump.read_bytes()[:4] == b"\x7fELF"
    finally:
        dump.unlink()
    assert virsh("domstate", name).strip() == "running"


def dimm_xml(name: str) -> str:
    """The live XML of the domain's DIMM, as ``virsh detach-device`` takes it."""
    live = virsh("dumpxml", name)
    start = live.index("<memory model='dimm'")
    return live[start : live.index("</memory>", start) + len("</memory>")]


def test_an_unplug_the_guest_refuses(watch: tuple[str, Seen], tmp_path: Path) -> None:
    name, watcher = watch
    xml = tmp_path / "dimm.xml"
    xml.write_text(dimm_xml(name))
    # The guest's memory cannot be taken offline: it refuses every DIMM unplug.
    virsh(
        "qemu-monitor-command",
        name,
        '{"execute":"x-sim-unplug-policy","arguments":{"answer":"refuse"}}',
    )
    detach = subprocess.run(
        ["virsh", "-c", URI, "detach-device", name, str(xml)],
        capture_output=True, text=True, timeout=WAIT, check=False,
    )  # fmt: skip
    # As with QEMU 7.2 and a guest that refuses (test_qemu_domain_unplug.py).
    assert detach.returncode == 1
    assert "unplug of device was rejected by the guest" in detach.stderr
    lines = watcher.until("ACPI_DEVICE_OST", "ACPI_DEVICE_OST")
    assert [line.split(maxsplit=2)[2] for line in lines[-2:]] == [
        "ACPI_DEVICE_OST dimm0 DIMM slot 0: eject request, eject in progress (0x84)",
        "ACPI_DEVICE_OST dimm0 DIMM slot 0: eject request, device busy (0x82)",
    ]
    assert "<memory model='dimm'" in virsh("dumpxml", name)


def test_a_bound_scenario_panics_the_guest_after_boot(emulator: Path, tmp_path: Path) -> None:  # noqa: F811
    scenario = tmp_path / "panic-after-boot.toml"
    scenario.write_text(
        'description = "panic 2 s after boot"\n\n[[steps]]\nwait = 2\n\n'
        '[[steps]]\nguest = "panic"\nvalue = 1\n'
    )
    name = f"qmpevents-test-bound-{id(scenario)}"
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    xml = domain_xml(name, emulator, disk)
    xml = xml.replace(
        "<domain type='qemu'>",
        "<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>",
    )
    xml = xml.replace("<on_crash>coredump-restart</on_crash>", "<on_crash>preserve</on_crash>")
    xml = xml.replace(
        "</domain>",
        "  <qemu:commandline>\n    <qemu:arg value='-x-sim-scenario'/>\n"
        f"    <qemu:arg value='{escape(str(scenario))}'/>\n  </qemu:commandline>\n</domain>",
    )
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    virsh("create", str(path), timeout=180)
    try:
        seen = Seen(name)
        try:
            lines = seen.until("GUEST_PANICKED")
        finally:
            seen.close()
        assert "action pause" in lines[-1]
        deadline = time.monotonic() + WAIT
        while not virsh("domstate", "--reason", name).startswith("crashed"):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        virsh("destroy", name, check=False)

"""The oracle: the README's domain on real QEMU 7.2 under libvirt, for the flows whose
events the simulated domain must match (test_sim_domain.py, test_sim_domain_events.py
assert the same constants).

Boot-sector guests (tools/guests.py) play the guest OS: an idle one for the
memory dump; one that powers off on the ACPI power button for ``virsh reboot``
and ``virsh shutdown``; one that panics through pvpanic on a key press for
``<on_crash>coredump-restart``; one that answers a DIMM unplug request through
QEMU's ACPI memory hotplug registers as Linux does when it cannot take the
memory offline, so that QEMU sends ACPI_DEVICE_OST and libvirt fails
``detach-device``. Each is seen by ``virsh qemu-monitor-event`` and by
``qmpevents watch``.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.libvirt.host import URI, require_libvirt, virsh
from tests.libvirt.observers import Seen
from tests.libvirt.test_sim_domain import DUMP, REBOOT, SHUTDOWN
from tests.libvirt.test_sim_domain_events import PANIC_RESTART, dimm_xml
from tools.guests import (
    idle_guest,
    panic_on_key_guest,
    power_button_guest,
    refusing_unplug_guest,
)
from tools.libvirt_domains import domain_xml

pytestmark = pytest.mark.timeout(180)
_names = itertools.count()


def wait_for_the_boot_sector(name: str) -> None:
    """Until the vCPU runs the guest's code (0x7c00-0x7dff), past the firmware.

    libvirt waits 5 s for the guest's answer; on a loaded machine SeaBIOS alone
    could take part of that.
    """
    deadline = time.monotonic() + 60
    while True:
        registers = virsh("qemu-monitor-command", "--hmp", name, "info registers")
        match = re.search(r"EIP=([0-9a-f]{8})", registers)
        if match and 0x7C00 <= int(match.group(1), 16) < 0x7E00:
            return
        assert time.monotonic() < deadline, f"the guest never ran its boot sector:\n{registers}"
        time.sleep(0.1)


@contextmanager
def qemu_domain(tmp_path: Path, guest: bytes, **options: Any) -> Iterator[str]:
    """A transient domain of the README's XML on real QEMU, its guest in its boot sector."""
    require_libvirt()
    name = f"qmpevents-test-qemu-{os.getpid()}-{next(_names)}"
    disk = tmp_path / f"{name}.img"
    disk.write_bytes(guest + bytes((1 << 20) - 512))
    xml = tmp_path / f"{name}.xml"
    emulator = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
    xml.write_text(domain_xml(name, emulator, disk, **options))
    virsh("create", str(xml))
    try:
        wait_for_the_boot_sector(name)
        yield name
    finally:
        virsh("destroy", name, check=False)


@pytest.fixture
def domain(tmp_path: Path) -> Iterator[str]:
    with qemu_domain(tmp_path, refusing_unplug_guest(), agent_and_panic=False) as name:
        yield name


def test_panic_restart_events(tmp_path: Path) -> None:
    """libvirt's coredump-restart of a guest that panicked, event by event."""
    with qemu_domain(tmp_path, panic_on_key_guest(), on_crash="coredump-restart") as name:
        dumps = Path("/var/lib/libvirt/qemu/dump")
        pattern = f"{virsh('domid', name).strip()}-*"
        before = set(dumps.glob(pattern)) if dumps.exists() else set()
        seen = Seen(name)
        try:
            virsh("send-key", name, "KEY_P")
            names = [event.split(" ", 1)[0] for event in seen.next_names(len(PANIC_RESTART))]
        finally:
            seen.close()
            for dump in set(dumps.glob(pattern)) - before:
                dump.unlink()
    assert names == PANIC_RESTART


def test_dump_events(tmp_path: Path) -> None:
    with qemu_domain(tmp_path, idle_guest()) as name:
        seen = Seen(name)
        try:
            virsh("dump", "--memory-only", name, str(tmp_path / "guest.elf"), timeout=120)
            names = seen.next_names(len(DUMP))
        finally:
            seen.close()
    assert names == DUMP


@pytest.mark.parametrize(("command", "expected"), [("reboot", REBOOT), ("shutdown", SHUTDOWN)])
def test_reboot_and_shutdown_events(command: str, expected: list[str], tmp_path: Path) -> None:
    """Through the ACPI power button, to a guest that shuts down when it is pressed."""
    with qemu_domain(tmp_path, power_button_guest()) as name:
        seen = Seen(name)
        try:
            virsh(command, name)
            names = seen.next_names(len(expected))
        finally:
            seen.close()
    assert names == expected


def test_libvirt_reports_the_refusal_of_real_qemus_guest(domain: str, tmp_path: Path) -> None:
    watcher = Seen(domain)
    try:
        xml = tmp_path / "dimm.xml"
        xml.write_text(dimm_xml(domain))
        detach = subprocess.run(
            ["virsh", "-c", URI, "detach-device", domain, str(xml)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert detach.returncode == 1
        assert "unplug of device was rejected by the guest" in detach.stderr
        lines = watcher.until("ACPI_DEVICE_OST", "ACPI_DEVICE_OST")
    finally:
        watcher.close()
    assert [line.split(maxsplit=2)[2] for line in lines[-2:]] == [
        "ACPI_DEVICE_OST dimm0 DIMM slot 0: eject request, eject in progress (0x84)",
        "ACPI_DEVICE_OST dimm0 DIMM slot 0: eject request, device busy (0x82)",
    ]
    assert "<memory model='dimm'" in virsh("dumpxml", domain)

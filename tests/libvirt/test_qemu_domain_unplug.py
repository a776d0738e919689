"""The oracle for a refused DIMM unplug: real QEMU 7.2 under libvirt, a guest that refuses.

The guest (tools/guests.py) answers the unplug request through QEMU's ACPI
memory hotplug registers as Linux does when it cannot take the memory offline;
QEMU sends ACPI_DEVICE_OST and libvirt fails ``detach-device``. The domain on
qmpevents-qemu must do the same (test_sim_domain_events.py).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.libvirt.host import URI, require_libvirt, virsh
from tests.libvirt.observers import Seen
from tests.libvirt.test_sim_domain_events import dimm_xml
from tools.guests import refusing_unplug_guest
from tools.libvirt_domains import domain_xml

pytestmark = pytest.mark.timeout(180)


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


@pytest.fixture
def domain(tmp_path: Path) -> Iterator[str]:
    require_libvirt()
    name = f"qmpevents-test-refuse-{os.getpid()}"
    disk = tmp_path / "disk.img"
    disk.write_bytes(refusing_unplug_guest() + bytes((1 << 20) - 512))
    xml = tmp_path / "domain.xml"
    emulator = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
    xml.write_text(domain_xml(name, emulator, disk, agent_and_panic=False))
    virsh("create", str(xml))
    wait_for_the_boot_sector(name)
    yield name
    virsh("destroy", name, check=False)


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

"""libvirt's capability probe passes on qmpevents-qemu and shows what the simulator models.

``virsh domcapabilities --emulatorbin`` makes libvirtd run the emulator as
``-machine none,accel=kvm:tcg ... -daemonize`` and ask it ~55 questions; the
XML it prints is libvirt's conclusion. libvirt caches that per binary path and
ctime, so each test copies the ``qmpevents-qemu`` entry script to a fresh path
(a real probe every time) and removes libvirt's cache entry afterwards.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmpevents.sim.accel import kvm_usable
from qmpevents.sim.help import MACHINE_TYPES
from tests.libvirt.host import URI, require_libvirt

pytestmark = pytest.mark.timeout(180)

CAPS_CACHE = Path("/var/cache/libvirt/qemu/capabilities")


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[Path]:
    """A fresh path to qmpevents-qemu that libvirt has never probed."""
    require_libvirt()
    script = Path(sys.executable).with_name("qmpevents-qemu")
    if not script.exists():
        pytest.fail(f"{script} is missing: install the package (pip install -e .)")
    path = tmp_path / "qmpevents-qemu"
    shutil.copy2(script, path)
    yield path
    cached = CAPS_CACHE / f"{hashlib.sha256(str(path).encode()).hexdigest()}.xml"
    cached.unlink(missing_ok=True)


def domcapabilities(emulator: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["virsh", "-c", URI, "domcapabilities", "--emulatorbin", str(emulator), *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def probed(emulator: Path, *extra: str) -> ET.Element:
    done = domcapabilities(emulator, "--virttype", "qemu", *extra)
    assert done.returncode == 0, done.stderr
    return ET.fromstring(done.stdout)


def values(root: ET.Element, path: str) -> list[str]:
    return [value.text or "" for value in root.findall(f"{path}/value")]


def test_the_probe_passes_and_lists_the_machine_types(emulator: Path) -> None:
    root = probed(emulator)
    assert root.findtext("path") == str(emulator)
    assert root.findtext("domain") == "qemu"
    assert root.findtext("arch") == "x86_64"
    assert root.findtext("machine") == "pc-i440fx-7.2"
    vcpu = root.find("vcpu")
    assert vcpu is not None and vcpu.get("max") == "255"
    # Each machine type the simulator models, by alias; libvirt hides "none".
    for machine in MACHINE_TYPES:
        if machine.name == "none":
            continue
        other = probed(emulator, "--machine", machine.alias or machine.name)
        assert other.findtext("machine") == machine.name
    unknown = domcapabilities(emulator, "--virttype", "qemu", "--machine", "pc-i440fx-6.2")
    assert unknown.returncode != 0
    assert "the machine 'pc-i440fx-6.2' is not supported" in unknown.stderr


def test_the_devices_are_the_ones_the_simulator_models(emulator: Path) -> None:
    root = probed(emulator)
    devices = root.find("devices")
    assert devices is not None
    # virtio-serial-pci + virtserialport: channels (no spicevmc: no -spice).
    assert values(devices, "channel/enum[@name='type']") == ["pty", "unix"]
    # No display device, TPM, RNG, USB redirection or virtio-gpu in the model.
    assert values(devices, "video/enum[@name='modelType']") == ["none"]
    assert values(devices, "graphics/enum[@name='type']") == []
    assert values(devices, "rng/enum[@name='model']") == []
    assert devices.find("tpm[@supported='no']") is not None
    assert devices.find("redirdev[@supported='no']") is not None
    assert "anonymous" in values(root, "memoryBacking/enum[@name='sourceType']")
    cpu_models = [model.text for model in root.findall("cpu/mode[@name='custom']/model")]
    assert "qemu64" in cpu_models


def test_kvm_is_offered_as_qemu_offers_it_here(emulator: Path) -> None:
    """QEMU's kvm starts where /dev/kvm opens; libvirt then offers kvm domains, else refuses."""
    done = domcapabilities(emulator, "--virttype", "kvm")
    if kvm_usable():
        assert done.returncode == 0, done.stderr
        assert "<domain>kvm</domain>" in done.stdout
    else:
        assert done.returncode != 0
        assert f"the accel 'kvm' is not supported by '{emulator}' on this host" in done.stderr

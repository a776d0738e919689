"""A real libvirtd on this machine, and TCG domains the tests create on it.

``.ci/run`` installs libvirt from Debian and starts ``virtlogd`` and ``libvirtd``
as root (see its comments for what a container needs). Without a reachable
``qemu:///system`` the tests skip, or fail under ``QMPEVENTS_REQUIRE_LIBVIRT=1``
(CI sets it), so that CI never passes by skipping them.

Each domain is transient (``virsh create``), named ``qmpevents-test-PID-N`` and
destroyed at the end of its test. Its disk is a boot sector built here: it polls
the keyboard controller and, on the first key after boot, writes 1 to the
pvpanic port 0x505, so that ``virsh send-key DOM KEY_P`` makes the guest panic
when the test wants it to.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from pathlib import Path
from xml.sax.saxutils import escape

import pytest

from tools.guests import panic_on_key_guest

__all__ = [
    "URI",
    "Domain",
    "libvirtd_running",
    "require_libvirt",
    "restart_libvirtd",
    "virsh",
]

URI = "qemu:///system"
_counter = itertools.count()


def virsh(*args: str, check: bool = True, timeout: float = 60) -> str:
    """Run ``virsh -c qemu:///system ARGS``; its stdout (``CalledProcessError`` if it failed)."""
    done = subprocess.run(
        ["virsh", "-q", "-c", URI, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"virsh {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def libvirtd_running() -> bool:
    if shutil.which("virsh") is None:
        return False
    done = subprocess.run(
        ["virsh", "-c", URI, "version"], capture_output=True, timeout=30, check=False
    )
    return done.returncode == 0


def require_libvirt() -> None:
    """Skip without libvirtd and libvirt-python; fail instead under QMPEVENTS_REQUIRE_LIBVIRT=1."""
    missing = []
    try:
        import libvirt  # noqa: F401
    except ImportError:
        missing.append("libvirt-python (pip install 'qmpevents[libvirt]')")
    if not libvirtd_running():
        missing.append(f"a libvirtd answering on {URI}")
    if missing:
        what = " and ".join(missing)
        if os.environ.get("QMPEVENTS_REQUIRE_LIBVIRT") == "1":
            pytest.fail(f"{what} required (QMPEVENTS_REQUIRE_LIBVIRT=1)")
        pytest.skip(f"needs {what}")


def restart_libvirtd(stopped_for: float = 0.5) -> None:
    """Stop libvirtd (SIGTERM) and start it again, as root; the domains keep running."""
    subprocess.run(["pkill", "-TERM", "-x", "libvirtd"], check=False)
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-x", "libvirtd"], capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            raise AssertionError("libvirtd did not stop within 30 s")
        time.sleep(0.1)
    time.sleep(stopped_for)
    start_libvirtd()


def start_libvirtd() -> None:
    subprocess.run(["libvirtd", "-d"], check=True, timeout=30)
    deadline = time.monotonic() + 30
    while not libvirtd_running():
        if time.monotonic() > deadline:
            raise AssertionError("libvirtd did not answer within 30 s of starting")
        time.sleep(0.2)


class Domain:
    """A transient TCG domain with an isa pvpanic device; destroy it with :meth:`destroy`."""

    def __init__(self, directory: Path, *, on_crash: str = "preserve") -> None:
        self.name = f"qmpevents-test-{os.getpid()}-{next(_counter)}"
        self.directory = directory
        self.disk = directory / f"{self.name}.img"
        self.disk.write_bytes(panic_on_key_guest() + bytes(1024 * 1024 - 512))
        self.xml = directory / f"{self.name}.xml"
        self.xml.write_text(self._xml(on_crash))

    def _xml(self, on_crash: str) -> str:
        emulator = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
        return f"""<domain type='qemu'>
  <name>{escape(self.name)}</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <on_crash>{on_crash}</on_crash>
  <devices>
    <emulator>{escape(emulator)}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{escape(str(self.disk))}'/>
      <target dev='hda' bus='ide'/>
    </disk>
    <panic model='isa'/>
  </devices>
</domain>
"""

    def start(self) -> None:
        virsh("create", str(self.xml))

    def destroy(self) -> None:
        virsh("destroy", self.name, check=False)

    def panic(self) -> None:
        """A key press: the guest writes the pvpanic port."""
        virsh("send-key", self.name, "KEY_P")

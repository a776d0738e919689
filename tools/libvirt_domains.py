"""The libvirt domains of the README's "Test your management stack without QEMU".

One XML for the tests and the benchmark that run it on QEMU 7.2 or on
qmpevents-qemu: a transient ``type='qemu'`` (TCG) pc domain with NUMA node 0,
``maxMemory`` and a 128 MiB DIMM on that node, ACPI, an IDE disk holding the
guest (a boot sector from :mod:`tools.guests`) and, unless left out, a
virtio-serial guest agent channel and an isa pvpanic device.

:func:`pseries_domain_xml` is its ppc64 counterpart, for qemu-system-ppc64 or
qmpevents-qemu-ppc64: pseries memory comes in 256 MiB blocks, its disk is
virtio, and its panic device is the machine's own (``model='pseries'``).
"""

from __future__ import annotations

from pathlib import Path
from xml.sax.saxutils import escape

__all__ = ["domain_xml", "pseries_domain_xml"]


def domain_xml(
    name: str,
    emulator: str | Path,
    disk: Path,
    *,
    ram: int = 32,
    on_crash: str = "preserve",
    agent_and_panic: bool = True,
) -> str:
    """The domain ``name`` on ``emulator``: ``ram`` MiB on node 0 plus the DIMM."""
    extras = (
        """
    <controller type='virtio-serial' index='0'/>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <panic model='isa'/>"""
        if agent_and_panic
        else ""
    )
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <maxMemory slots='4' unit='MiB'>{ram + 1024}</maxMemory>
  <memory unit='MiB'>{ram + 128}</memory>
  <currentMemory unit='MiB'>{ram + 128}</currentMemory>
  <vcpu>1</vcpu>
  <cpu><numa><cell id='0' cpus='0' memory='{ram}' unit='MiB'/></numa></cpu>
  <features><acpi/></features>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <on_crash>{escape(on_crash)}</on_crash>
  <devices>
    <emulator>{escape(str(emulator))}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{escape(str(disk))}'/>
      <target dev='hda' bus='ide'/>
    </disk>{extras}
    <memory model='dimm'><target><size unit='MiB'>128</size><node>0</node></target></memory>
  </devices>
</domain>
"""


def pseries_domain_xml(
    name: str, emulator: str | Path, disk: Path, *, on_crash: str = "preserve"
) -> str:
    """The pseries domain ``name`` on ``emulator``: 512 MiB on node 0 plus a 256 MiB DIMM."""
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <maxMemory slots='4' unit='MiB'>2048</maxMemory>
  <memory unit='MiB'>768</memory>
  <currentMemory unit='MiB'>768</currentMemory>
  <vcpu>1</vcpu>
  <cpu><numa><cell id='0' cpus='0' memory='512' unit='MiB'/></numa></cpu>
  <os><type arch='ppc64' machine='pseries'>hvm</type></os>
  <on_crash>{escape(on_crash)}</on_crash>
  <devices>
    <emulator>{escape(str(emulator))}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{escape(str(disk))}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <controller type='virtio-serial' index='0'/>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <panic model='pseries'/>
    <memory model='dimm'><target><size unit='MiB'>256</size><node>0</node></target></memory>
  </devices>
</domain>
"""

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


_AGENT = """
    <controller type='virtio-serial' index='0'/>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>"""


def _domain(
    name: str,
    emulator: str | Path,
    disk: Path,
    *,
    ram: int,
    dimm: int,
    max_memory: int,
    on_crash: str,
    machine: str,
    disk_target: str,
    extras: str,
) -> str:
    """A domain with ``ram`` MiB on NUMA node 0 and a ``dimm`` MiB DIMM on that node;
    ``machine`` holds its ``<features>`` and ``<os>`` elements."""
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <maxMemory slots='4' unit='MiB'>{max_memory}</maxMemory>
  <memory unit='MiB'>{ram + dimm}</memory>
  <currentMemory unit='MiB'>{ram + dimm}</currentMemory>
  <vcpu>1</vcpu>
  <cpu><numa><cell id='0' cpus='0' memory='{ram}' unit='MiB'/></numa></cpu>
{machine}
  <on_crash>{escape(on_crash)}</on_crash>
  <devices>
    <emulator>{escape(str(emulator))}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{escape(str(disk))}'/>
      {disk_target}
    </disk>{extras}
    <memory model='dimm'><target><size unit='MiB'>{dimm}</size><node>0</node></target></memory>
  </devices>
</domain>
"""


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
    return _domain(
        name, emulator, disk, ram=ram, dimm=128, max_memory=ram + 1024, on_crash=on_crash,
        machine="""  <features><acpi/></features>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>""",
        disk_target="<target dev='hda' bus='ide'/>",
        extras=_AGENT + "\n    <panic model='isa'/>" if agent_and_panic else "",
    )  # fmt: skip


def pseries_domain_xml(
    name: str, emulator: str | Path, disk: Path, *, on_crash: str = "preserve"
) -> str:
    """The pseries domain ``name`` on ``emulator``: 512 MiB on node 0 plus a 256 MiB DIMM."""
    return _domain(
        name, emulator, disk, ram=512, dimm=256, max_memory=2048, on_crash=on_crash,
        machine="  <os><type arch='ppc64' machine='pseries'>hvm</type></os>",
        disk_target="<target dev='vda' bus='virtio'/>",
        extras=_AGENT + "\n    <panic model='pseries'/>",
    )  # fmt: skip

"""A libvirt domain on qmpevents-qemu versus the same domain on QEMU 7.2 (TCG), in one run.

Run: ``python benchmarks/bench_domain.py [runs]`` as root, with libvirtd running
(``.ci/run`` starts it). The domain is the one of the README's "Test your
management stack without QEMU": ``type='qemu'``, 256 MiB, an isa pvpanic device,
a virtio-serial channel, ``maxMemory`` with a 128 MiB DIMM and a raw IDE disk
whose boot sector idles. For each emulator, ``runs`` times (alternating):

- start-up: the wall time of ``virsh create`` (libvirt starts the emulator,
  runs its whole QMP start-up sequence and ``cont``), then until ``virsh
  domstate`` says running;
- memory: the emulator process's VmRSS and VmHWM (``/proc/PID/status``) two
  seconds after it runs, the guest idle.

The best start-up and the median memory are shown, and the simulator's share of
QEMU's. A run that fails is reported as failed, never as a number.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from xml.sax.saxutils import escape

URI = "qemu:///system"
SETTLE = 2.0


def _virsh(*args: str) -> str:
    done = subprocess.run(
        ["virsh", "-q", "-c", URI, *args], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"virsh {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _domain_xml(name: str, emulator: str, disk: Path) -> str:
    return f"""<domain type='qemu'>
  <name>{escape(name)}</name>
  <maxMemory slots='2' unit='MiB'>1024</maxMemory>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <cpu><numa><cell id='0' cpus='0' memory='128' unit='MiB'/></numa></cpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <features><acpi/></features>
  <on_crash>preserve</on_crash>
  <devices>
    <emulator>{escape(emulator)}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{escape(str(disk))}'/>
      <target dev='hda' bus='ide'/>
    </disk>
    <controller type='virtio-serial' index='0'/>
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <panic model='isa'/>
    <memory model='dimm'><target><size unit='MiB'>128</size><node>0</node></target></memory>
  </devices>
</domain>
"""


def _idle_disk(path: Path) -> None:
    # cli; hlt; jmp back to hlt: a guest that boots and does nothing.
    sector = bytes([0xFA, 0xF4, 0xEB, 0xFD]) + bytes(506) + b"\x55\xaa"
    path.write_bytes(sector + bytes(1024 * 1024 - 512))


def _memory(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM of ``pid`` in KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _one_run(label: str, emulator: str, directory: Path, index: int) -> tuple[float, int, int]:
    name = f"qmpevents-bench-{label}-{os.getpid()}-{index}"
    disk = directory / f"{name}.img"
    _idle_disk(disk)
    xml = directory / f"{name}.xml"
    xml.write_text(_domain_xml(name, emulator, disk))
    start = time.perf_counter()
    try:
        _virsh("create", str(xml))
        while _virsh("domstate", name) != "running":
            time.sleep(0.01)
        started = time.perf_counter() - start
        time.sleep(SETTLE)
        pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
        rss, hwm = _memory(pid)
        return started, rss, hwm
    finally:
        subprocess.run(["virsh", "-q", "-c", URI, "destroy", name], capture_output=True)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    qemu = shutil.which("qemu-system-x86_64")
    simulator = shutil.which("qmpevents-qemu") or str(
        Path(sys.executable).parent / "qmpevents-qemu"
    )
    if qemu is None or shutil.which("virsh") is None or not Path(simulator).exists():
        raise SystemExit("needs qemu-system-x86_64, virsh (a running libvirtd) and qmpevents-qemu")
    emulators = {"qemu-7.2-tcg": qemu, "qmpevents-qemu": simulator}
    results: dict[str, list[tuple[float, int, int]]] = {label: [] for label in emulators}
    failures: dict[str, list[str]] = {label: [] for label in emulators}
    with tempfile.TemporaryDirectory(prefix="qmpevents-bench-domain-") as tmp:
        for index in range(runs):
            for label, emulator in emulators.items():
                try:
                    results[label].append(_one_run(label, emulator, Path(tmp), index))
                except (RuntimeError, OSError, ValueError) as error:
                    failures[label].append(str(error))
    print(f"libvirt domain, {runs} run(s) each: start-up (best) and memory (median)")
    print(f"{'emulator':<16} {'start-up s':>11} {'VmRSS MiB':>10} {'VmHWM MiB':>10} {'failed':>7}")
    rows: dict[str, tuple[float, float, float]] = {}
    for label, samples in results.items():
        if not samples:
            print(f"{label:<16} {'-':>11} {'-':>10} {'-':>10} {len(failures[label]):>7}")
            continue
        best = min(s[0] for s in samples)
        rss = statistics.median(s[1] for s in samples) / 1024
        hwm = statistics.median(s[2] for s in samples) / 1024
        rows[label] = (best, rss, hwm)
        print(f"{label:<16} {best:>11.3f} {rss:>10.1f} {hwm:>10.1f} {len(failures[label]):>7}")
    if len(rows) == 2:
        (q_start, q_rss, q_hwm), (s_start, s_rss, s_hwm) = (
            rows["qemu-7.2-tcg"],
            rows["qmpevents-qemu"],
        )
        print(
            f"qmpevents-qemu / QEMU: start-up {s_start / q_start:.2f}x,"
            f" VmRSS {s_rss / q_rss:.2f}x, VmHWM {s_hwm / q_hwm:.2f}x"
        )
    for label, errors in failures.items():
        for error in errors[:3]:
            print(f"  {label} failed: {error}")


if __name__ == "__main__":
    main()

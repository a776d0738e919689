"""A libvirt domain on qmpevents-qemu versus the same domain on QEMU 7.2 (TCG), in one run.

Run: ``python -m benchmarks domain [runs]`` as root, with libvirtd running
(``.ci/run`` starts it). The domain is the one of the README's "Test your
management stack without QEMU": ``type='qemu'``, an isa pvpanic device, a
virtio-serial channel, ``maxMemory`` with a 128 MiB DIMM and a raw IDE disk
holding the guest, a boot sector (tools/guests.py). Two guests:

- ``idle``: 128 MiB of RAM, a guest that boots and halts (the least QEMU costs);
- ``busy``: 1 GiB of RAM, a guest that writes all of it once, as a guest OS
  comes to use its memory (page cache, allocations), then halts.

For each guest and emulator, ``runs`` times (alternating):

- start-up: the wall time of ``virsh create`` (libvirt starts the emulator,
  runs its whole QMP start-up sequence and ``cont``), then until ``virsh
  domstate`` says running;
- memory: the emulator process's VmRSS and VmHWM (``/proc/PID/status``) once
  VmRSS has stopped growing for 2 s (sampled every 0.5 s, at most 60 s).

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
from functools import partial
from pathlib import Path

from tools.guests import idle_guest, ram_writing_guest
from tools.libvirt_domains import domain_xml

URI = "qemu:///system"
SAMPLE = 0.5
STABLE = 4  # samples: 2 s without growth
SETTLE_LIMIT = 60.0
# Guest name -> (RAM in MiB outside the DIMM, its boot sector).
GUESTS = {
    "idle": (128, idle_guest),
    "busy": (1024, partial(ram_writing_guest, 1024)),
}


def _virsh(*args: str) -> str:
    done = subprocess.run(
        ["virsh", "-q", "-c", URI, *args], capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(f"virsh {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _memory(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM of ``pid`` in KiB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _settled_memory(pid: int) -> tuple[int, int]:
    """VmRSS and VmHWM once VmRSS has stopped growing for STABLE samples in a row.

    Several samples, so that a pause while the firmware boots is not taken for
    the end of the guest's work.
    """
    deadline = time.monotonic() + SETTLE_LIMIT
    previous = _memory(pid)
    stable = 0
    while stable < STABLE and time.monotonic() < deadline:
        time.sleep(SAMPLE)
        current = _memory(pid)
        stable = stable + 1 if current[0] <= previous[0] * 1.01 else 0
        previous = current
    return previous


def _one_run(
    guest: str, label: str, emulator: str, directory: Path, index: int
) -> tuple[float, int, int]:
    name = f"qmpevents-bench-{guest}-{label}-{os.getpid()}-{index}"
    ram, sector = GUESTS[guest]
    disk = directory / f"{name}.img"
    disk.write_bytes(sector() + bytes(1024 * 1024 - 512))
    xml = directory / f"{name}.xml"
    xml.write_text(domain_xml(name, emulator, disk, ram=ram))
    start = time.perf_counter()
    try:
        _virsh("create", str(xml))
        while _virsh("domstate", name) != "running":
            time.sleep(0.01)
        started = time.perf_counter() - start
        time.sleep(SAMPLE)
        pid = int(Path(f"/run/libvirt/qemu/{name}.pid").read_text().strip())
        rss, hwm = _settled_memory(pid)
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
    with tempfile.TemporaryDirectory(prefix="qmpevents-bench-domain-") as tmp:
        for guest, (ram, _) in GUESTS.items():
            print(f"{guest} guest, {ram} MiB RAM + a 128 MiB DIMM:")
            _compare(guest, emulators, Path(tmp), runs)


def _compare(guest: str, emulators: dict[str, str], directory: Path, runs: int) -> None:
    results: dict[str, list[tuple[float, int, int]]] = {label: [] for label in emulators}
    failures: dict[str, list[str]] = {label: [] for label in emulators}
    for index in range(runs):
        for label, emulator in emulators.items():
            try:
                results[label].append(_one_run(guest, label, emulator, directory, index))
            except (RuntimeError, OSError, ValueError) as error:
                failures[label].append(str(error))
    print(f"  {runs} run(s) each: start-up (best) and memory (median)")
    header = f"{'start-up s':>11} {'VmRSS MiB':>10} {'VmHWM MiB':>10} {'failed':>7}"
    print(f"  {'emulator':<16} {header}")
    rows: dict[str, tuple[float, float, float]] = {}
    for label, samples in results.items():
        if not samples:
            print(f"  {label:<16} {'-':>11} {'-':>10} {'-':>10} {len(failures[label]):>7}")
            continue
        best = min(s[0] for s in samples)
        rss = statistics.median(s[1] for s in samples) / 1024
        hwm = statistics.median(s[2] for s in samples) / 1024
        rows[label] = (best, rss, hwm)
        print(f"  {label:<16} {best:>11.3f} {rss:>10.1f} {hwm:>10.1f} {len(failures[label]):>7}")
    if len(rows) == 2:
        (q_start, q_rss, q_hwm), (s_start, s_rss, s_hwm) = (
            rows["qemu-7.2-tcg"],
            rows["qmpevents-qemu"],
        )
        print(
            f"  qmpevents-qemu / QEMU: start-up {s_start / q_start:.2f}x,"
            f" VmRSS {s_rss / q_rss:.2f}x, VmHWM {s_hwm / q_hwm:.2f}x"
        )
    for label, errors in failures.items():
        for error in errors[:3]:
            print(f"    {label} failed: {error}")


if __name__ == "__main__":
    main()

"""Re-record what libvirt asks QEMU 7.2, for the simulator to answer as QEMU did.

    python tools/record_libvirt.py [--out FILE] [--qemu BINARY] [--keep]

Needs root, a libvirtd answering on ``qemu:///system`` that runs its QEMUs as
root (``user = "root"`` in qemu.conf: the wrapper writes the proxy's record into
this tool's directory) and the QEMU to record. It records two conversations between
libvirtd and that QEMU and writes what QEMU answered to
``src/qmpevents/sim/data/libvirt-qemu-7.2.json`` (``qemu-system-x86_64``) or
``libvirt-qemu-7.2-ppc64.json`` (``qemu-system-ppc64``, probe only) (see
:mod:`qmpevents.sim.recorded`), a list of ``{"execute", "arguments", "return"
| "error"}`` entries sorted by command and arguments, each question once:

1. **The capability probe** (``virsh domcapabilities --emulatorbin WRAPPER
   --virttype qemu``). The wrapper, a script written into a fresh directory (so
   libvirt has no cached capabilities for it), starts the real QEMU with its
   QMP socket renamed and puts ``qmpevents proxy --record`` on the socket
   libvirt asked for: the exact bytes both ways. It drops ``kvm`` from
   ``accel=kvm:tcg``, because the simulator has no KVM: libvirt then probes
   once, under TCG, as it probes the simulator (which, having fewer types,
   gets a subset of these questions).
2. **A domain start**: a transient TCG domain (``-cpu qemu64``, a boot sector
   built here) started and destroyed while libvirtd logs its monitor traffic
   (``virt-admin daemon-log-filters``/``daemon-log-outputs``, restored
   afterwards). Only the questions about the CPU object, ``qom-list`` and the
   ~400 ``qom-get`` of ``/machine/unattached/device[0]``, are kept: they
   describe QEMU's qemu64 model, while the rest of a start (query-block,
   query-chardev, ...) describes that one domain, which a recording cannot
   answer for another.

Temporary paths and the domain name are normalized. The same question
answered twice must be answered alike; otherwise the tool fails, naming it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "src" / "qmpevents" / "sim" / "data"
# The data file of each QEMU binary the simulator stands in for.
DEFAULT_OUT = {
    "qemu-system-x86_64": DATA / "libvirt-qemu-7.2.json",
    "qemu-system-ppc64": DATA / "libvirt-qemu-7.2-ppc64.json",
}
URI = "qemu:///system"
CAPS_CACHE = Path("/var/cache/libvirt/qemu/capabilities")
CPU_PATH = "/machine/unattached/device[0]"
PROBE_DIR = "/var/lib/libvirt/qemu/qmp-"  # + 6 random characters, libvirt's
# The probe's commands that are about the session, not about QEMU.
SESSION_COMMANDS = frozenset({"qmp_capabilities"})
DOMAIN_COMMANDS = frozenset({"qom-get", "qom-list"})
LOG_FILTERS = "1:qemu.qemu_monitor 1:qemu.qemu_process"

# The emulator libvirt runs for the probe: real QEMU behind our recording proxy.
WRAPPER = """#!{python}
import os, subprocess, sys, time
QEMU, PROXY, RECORD, DIR = {qemu!r}, {proxy!r}, {record!r}, {dir!r}
args = sys.argv[1:]
with open(os.path.join(DIR, "argv.log"), "a") as log:
    log.write(repr(args) + "\\n")
if "-qmp" not in args:
    os.execv(QEMU, [QEMU, *args])
for i, arg in enumerate(args):
    if arg.startswith("none,accel="):
        accels = [a for a in arg.split("=", 1)[1].split(":") if a != "kvm"]
        args[i] = "none,accel=" + ":".join(accels)
i = args.index("-qmp")
path = args[i + 1][len("unix:"):].split(",")[0]
args[i + 1] = args[i + 1].replace(path, path + ".real", 1)
status = subprocess.call([QEMU, *args])
if status:
    sys.exit(status)
out = open(os.path.join(DIR, "proxy.log"), "a")
proxy = subprocess.Popen(
    [PROXY, "proxy", path + ".real", "--listen", path, "--record", RECORD],
    start_new_session=True, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
)
with open(os.path.join(DIR, "proxies"), "a") as pids:
    pids.write(f"{{proxy.pid}}\\n")
for _ in range(200):
    if os.path.exists(path):
        sys.exit(0)
    time.sleep(0.05)
sys.exit("the recording proxy did not listen on " + path)
"""

DOMAIN_XML = """<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>32</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>
  <devices>
    <emulator>{qemu}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/>
      <source file='{disk}'/>
      <target dev='hda' bus='ide'/>
    </disk>
  </devices>
</domain>
"""


class RecordingError(Exception):
    """The recording cannot be made or is inconsistent; the message says why."""


def run(*argv: str, timeout: float = 120) -> str:
    """Run ``argv``; its stdout, or RecordingError with its stderr."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RecordingError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def idle_guest() -> bytes:
    """A 1 MiB disk whose boot sector halts (cli; hlt; jmp back to hlt)."""
    code = bytes([0xFA, 0xF4, 0xEB, 0xFD])
    return code + bytes(510 - len(code)) + b"\x55\xaa" + bytes(1024 * 1024 - 512)


# --- the probe ----------------------------------------------------------------------


def probe(qemu: str, arch: str, work: Path) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Run libvirt's capability probe through the recording wrapper; its exchanges."""
    proxy = Path(sys.executable).with_name("qmpevents")
    if not proxy.exists():
        raise RecordingError(f"{proxy} is missing: install the package in this venv")
    record = work / "probe.jsonl"
    wrapper = work / "qemu-probe"
    wrapper.write_text(
        WRAPPER.format(
            python=sys.executable, qemu=qemu, proxy=str(proxy), record=str(record), dir=str(work)
        )
    )
    wrapper.chmod(0o755)
    try:
        run("virsh", "-c", URI, "domcapabilities", "--emulatorbin", str(wrapper),
            "--arch", arch, "--virttype", "qemu")  # fmt: skip
    finally:
        (CAPS_CACHE / f"{hashlib.sha256(str(wrapper).encode()).hexdigest()}.xml").unlink(
            missing_ok=True
        )
        stop_proxies(work / "proxies")
    if not record.exists():
        raise RecordingError(f"libvirt never reached the proxy (see {work}/argv.log)")
    return pair_proxy_record(record.read_text().splitlines())


def stop_proxies(pids: Path) -> None:
    """End the proxies the wrapper started (each exits by itself once QEMU is gone)."""
    if not pids.exists():
        return
    deadline = time.monotonic() + 5
    for pid in (int(line) for line in pids.read_text().split()):
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, 15)


def _alive(pid: int) -> bool:
    # The proxies are not our children (the wrapper started them): poll with signal 0.
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def pair_proxy_record(lines: list[str]) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(command, arguments, reply) for each request a client sent, from a proxy record."""
    pending: dict[tuple[str, Any], dict[str, Any]] = {}
    found = []
    for line in lines:
        entry = json.loads(line)
        if entry["dir"] not in ("down->proxy", "proxy->down"):
            continue
        for text in entry["data"].splitlines():
            message = json.loads(text)
            key = (entry["client"], json.dumps(message.get("id")))
            if entry["dir"] == "down->proxy" and "execute" in message:
                pending[key] = message
            elif key in pending and ("return" in message or "error" in message):
                request = pending.pop(key)
                found.append((request["execute"], request.get("arguments", {}), message))
    return found


# --- the domain start ---------------------------------------------------------------


@contextlib.contextmanager
def monitor_log(path: Path) -> Iterator[None]:
    """libvirtd logs its QEMU monitor traffic to ``path``; its own settings come back after."""
    filters = run("virt-admin", "daemon-log-filters").split(":", 1)[1].strip()
    outputs = run("virt-admin", "daemon-log-outputs").split(":", 1)[1].strip()
    run("virt-admin", "daemon-log-filters", LOG_FILTERS)
    try:
        run("virt-admin", "daemon-log-outputs", f"1:file:{path}")
        yield
    finally:
        run("virt-admin", "daemon-log-outputs", outputs)
        run("virt-admin", "daemon-log-filters", filters)


def start_domain(qemu: str, work: Path) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """Start and destroy a small TCG domain under the monitor log; its CPU exchanges."""
    name = f"qmpevents-record-{os.getpid()}"
    disk = work / "guest.img"
    disk.write_bytes(idle_guest())
    xml = work / "domain.xml"
    xml.write_text(DOMAIN_XML.format(name=name, qemu=qemu, disk=disk))
    log = work / "libvirtd.log"
    with monitor_log(log):
        run("virsh", "-c", URI, "create", str(xml))
        run("virsh", "-c", URI, "destroy", name)
    text = log.read_text(errors="replace")
    return [
        exchange
        for exchange in pair_monitor_log(text, domain_monitor(text, name))
        if exchange[0] in DOMAIN_COMMANDS and exchange[1].get("path") == CPU_PATH
    ]


def domain_monitor(text: str, name: str) -> str:
    """The monitor pointer libvirtd used for domain ``name`` (other domains may run too)."""
    vm = re.search(rf"qemuProcessStart:\d+ : .*vm=(0x[0-9a-f]+) name={re.escape(name)} ", text)
    if vm is None:
        raise RecordingError(f"libvirtd's log does not show domain {name} starting")
    mon = re.search(rf"mon:(0x[0-9a-f]+) vm:{vm.group(1)} ", text)
    if mon is None:
        raise RecordingError(f"libvirtd's log shows no monitor for domain {name}")
    return mon.group(1)


def pair_monitor_log(text: str, mon: str) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(command, arguments, reply) of monitor ``mon`` from libvirtd's debug log."""
    write = re.compile(rf"QEMU_MONITOR_IO_WRITE: mon={mon} buf=(.*)$")
    reply = re.compile(rf"QEMU_MONITOR_RECV_REPLY: mon={mon} reply=(.*)$")
    pending: dict[str, dict[str, Any]] = {}
    found = []
    for line in text.splitlines():
        if match := write.search(line):
            request = json.loads(match.group(1))
            pending[request["id"]] = request
        elif (match := reply.search(line)) and (message := json.loads(match.group(1))).get(
            "id"
        ) in pending:
            request = pending.pop(message["id"])
            found.append((request["execute"], request.get("arguments", {}), message))
    return found


# --- the data file ------------------------------------------------------------------


def normalize(value: Any, replacements: list[tuple[re.Pattern[str], str]]) -> Any:
    """``value`` with every string rewritten by ``replacements`` (temporary paths, ids)."""
    if isinstance(value, str):
        for pattern, text in replacements:
            value = pattern.sub(text, value)
        return value
    if isinstance(value, list):
        return [normalize(item, replacements) for item in value]
    if isinstance(value, dict):
        return {key: normalize(item, replacements) for key, item in value.items()}
    return value


def entries(
    exchanges: list[tuple[str, dict[str, Any], dict[str, Any]]],
    replacements: list[tuple[re.Pattern[str], str]],
) -> list[dict[str, Any]]:
    """One entry per distinct question, sorted; RecordingError if answers differ."""
    by_question: dict[tuple[str, str], dict[str, Any]] = {}
    for command, arguments, reply in exchanges:
        if command in SESSION_COMMANDS:
            continue
        entry: dict[str, Any] = {"execute": command, "arguments": arguments}
        if "error" in reply:
            entry["error"] = {"class": reply["error"]["class"], "desc": reply["error"]["desc"]}
        else:
            entry["return"] = reply["return"]
        entry = normalize(entry, replacements)
        key = (command, json.dumps(entry["arguments"], sort_keys=True))
        previous = by_question.setdefault(key, entry)
        if previous != entry:
            raise RecordingError(f"{command} {key[1]} was answered differently twice")
    return [by_question[key] for key in sorted(by_question)]


def write_entries(out: Path, found: list[dict[str, Any]]) -> None:
    """A JSON list, one entry per line, so that a re-recording diffs by question."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ",\n".join(json.dumps(entry, ensure_ascii=False) for entry in found)
    out.write_text(f"[\n{lines}\n]\n")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="the data file to write (default: by --qemu)")
    parser.add_argument(
        "--qemu",
        default="/usr/bin/qemu-system-x86_64",
        help="QEMU to record: qemu-system-x86_64 (default) or qemu-system-ppc64",
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    options = parser.parse_args(argv)
    binary = Path(options.qemu).name
    if options.out is None and binary not in DEFAULT_OUT:
        parser.error(f"--qemu {binary}: give --out, or one of {', '.join(DEFAULT_OUT)}")
    out = options.out or DEFAULT_OUT[binary]
    if shutil.which("virsh") is None or shutil.which("virt-admin") is None:
        print("record_libvirt: needs virsh and virt-admin (libvirt-clients)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="qmpevents-libvirt-"))
    work.chmod(0o755)
    try:
        arch = binary.removeprefix("qemu-system-")
        exchanges = probe(options.qemu, arch, work)
        if arch == "x86_64":  # libvirt reads the guest CPU's QOM on x86 only
            exchanges += start_domain(options.qemu, work)
        replacements = [
            (re.compile(re.escape(str(work))), "/tmp/qmpevents-libvirt-XXXXXXXX"),
            (re.compile(r"/var/lib/libvirt/qemu/qmp-[A-Za-z0-9]{6}"), f"{PROBE_DIR}XXXXXX"),
            (re.compile(rf"qmpevents-record-{os.getpid()}"), "qmpevents-record"),
        ]
        found = entries(exchanges, replacements)
    except (RecordingError, subprocess.TimeoutExpired) as error:
        print(f"record_libvirt: {error} (work directory kept: {work})", file=sys.stderr)
        return 1
    if not options.keep:
        shutil.rmtree(work)
    write_entries(out, found)
    commands = sorted({entry["execute"] for entry in found})
    print(f"{out}: {len(found)} answers to {len(commands)} commands: {', '.join(commands)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

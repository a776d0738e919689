"""Re-record the QEMU reference transcripts in tests/data/ from a real QEMU.

    python tools/record_reference.py [--out DIR] [--require-all] [NAME ...]

Each transcript is its own script: its client side (every line the recording
client sent on a QMP or qtest socket, at its recorded time) is played again
against freshly started QEMU processes with the recorded command lines, and
everything QEMU answers is recorded anew in the same format
(``qmp-acceptance-transcript/1``). The guests are boot sectors built here (an
idle loop, pvpanic writes, a memory-dirtying loop, a guest that refuses DIMM
unplugs); images are made with the
recorded ``qemu-img``/``qemu-io`` commands. ``qmp_schema_full.json`` is
``query-qmp-schema`` of a plain ``-machine pc`` VM.

Each output names the QEMU that produced it (``qemu_version`` from the greeting
and ``recorded_with``: the binary's ``--version``). Transcripts whose emulator
is not installed (``qemu-system-ppc64`` for mem_unplug and os_term) are kept as they are,
unless ``--require-all``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from guests import dirtying_guest, idle_guest, panic_guest, refusing_unplug_guest

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "tests" / "data" / "qemu-7.2"
TRANSCRIPTS = (
    "protocol", "dump", "migration", "guest_panic", "quorum", "vserport", "mem_unplug",
    "dimm_unplug_pc", "reset", "os_term",
)  # fmt: skip
# Recorded temporary paths look like this; a recording's own mkdtemp gives the same shape.
PLACEHOLDER = re.compile(r"/tmp/qmp-acc-([a-z_]+)-XXXXXXXX")
SOCKET_WAIT = 15.0
TRAILING = 1.0  # seconds to keep listening after a transcript's last line
EXIT_WAIT = 10.0
PIPELINED = 0.002
CATCH_UP = 5.0  # the longest wait for QEMU's answers before the next send

# The values each guest_panic guest writes to the pvpanic port, by process label.
PANIC_WRITES: dict[str, list[int]] = {
    "default": [1],
    "no-shutdown": [1],
    "action-panic-pause": [1],
    "action-panic-none": [1],
    "action-panic-exit-failure": [1],
    "action-panic-shutdown-shutdown-pause": [1],
    "crashloaded": [2],
    "crashloaded-panic-none": [2],
    "both-bits-value-3": [3],
    "panic-then-crashloaded": [1, 2],
    "five-panics-panic-none": [1, 1, 1, 1, 1],
    "events-mask-1-write-2": [2],
}


def guest_image(scenario: str, label: str) -> bytes:
    if scenario == "dimm_unplug_pc":
        return refusing_unplug_guest()
    if scenario == "guest_panic":
        return panic_guest(PANIC_WRITES[label])
    if scenario == "migration" and label == "dirty":
        return dirtying_guest()
    return idle_guest()


def kind_of(conn: str, raw: bytes) -> str:
    if conn == "qtest":
        return "qtest"
    try:
        value = json.loads(raw)
    except ValueError:
        return "unparsable"
    if not isinstance(value, dict):
        return "other"
    for key, kind in (("QMP", "greeting"), ("return", "return"), ("error", "error")):
        if key in value:
            return kind
    return "event" if "event" in value else "other"


class Recorder:
    """Plays one transcript's client side against real QEMU and records the answers."""

    def __init__(self, script: dict[str, Any], tmp: str, placeholder: str) -> None:
        self.script = script
        self.tmp = tmp
        self.placeholder = placeholder
        self.lines: list[dict[str, Any]] = []
        self.steps: list[dict[str, Any]] = []
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.writers: dict[str, asyncio.StreamWriter] = {}
        self.readers: list[asyncio.Task[None]] = []
        self.closed: set[str] = set()
        self.received: dict[str, int] = {}  # answers (not events) per connection
        self.arrival = asyncio.Event()  # set whenever any connection receives a line
        self.t0_mono = time.monotonic()
        self.t0_wall = time.time()

    def here(self, text: str) -> str:
        return PLACEHOLDER.sub(self.tmp, text)

    def back(self, data: bytes) -> bytes:
        return data.replace(self.tmp.encode(), self.placeholder.encode())

    def record(self, conn: str, direction: str, raw: bytes | None = None, **extra: Any) -> None:
        mono = time.monotonic()
        line: dict[str, Any] = {
            "seq": len(self.lines),
            "conn": conn,
            "dir": direction,
            "mono": round(mono, 6),
            "rel": round(mono - self.t0_mono, 6),
            "wall": round(time.time(), 6),
            **extra,
        }
        if raw is not None:
            raw = self.back(raw)
            try:
                line["raw"] = raw.decode("utf-8")
            except UnicodeDecodeError:
                line["raw_b64"] = base64.b64encode(raw).decode()
            if direction == "recv":
                line["kind"] = kind_of(conn, raw)
                if line["kind"] != "event":
                    self.received[conn] = self.received.get(conn, 0) + 1
                    self.arrival.set()
        self.lines.append(line)

    def process_for(self, path: str) -> dict[str, Any]:
        for process in self.script["processes"]:
            if any(arg.endswith(path) or f"/{path}," in arg for arg in process["argv"]):
                return dict(process)
        raise SystemExit(f"{self.script['scenario']}: no process serves {path}")

    async def start(self, process: dict[str, Any]) -> None:
        argv = [self.here(arg) for arg in process["argv"]]
        for option, value in itertools.pairwise(argv):
            if option == "-drive" and value.startswith("file="):
                image = Path(value.split(",")[0][5:])
                if not image.exists():
                    image.write_bytes(guest_image(self.script["scenario"], process["label"]))
        self.processes[process["label"]] = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )

    async def connect(self, conn: str, path: str) -> None:
        process = self.process_for(path)
        if process["label"] not in self.processes:
            await self.start(process)
        popen = self.processes[process["label"]]
        sock = Path(self.tmp) / path
        deadline = time.monotonic() + SOCKET_WAIT
        while not sock.exists():
            if popen.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{process['argv'][0]} did not create {sock}")
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.open_unix_connection(str(sock), limit=1 << 26)
        self.record(conn, "connect", path=path)
        self.writers[conn] = writer
        self.readers.append(asyncio.create_task(self.read(conn, reader)))

    async def read(self, conn: str, reader: asyncio.StreamReader) -> None:
        try:
            while raw := await reader.readline():
                self.record(conn, "recv", raw)
        except OSError as error:
            if conn not in self.closed:
                self.record(conn, "error", error=f"{type(error).__name__}: {error!r}")
            return
        if conn not in self.closed:
            self.record(conn, "eof")

    async def play(self) -> None:
        step_at = {step["seq_from"]: step["label"] for step in self.script["steps"]}
        shift = 0.0
        lines = self.script["lines"]
        # Events come when they come: only answers (and the greeting) are awaited.
        received = [line for line in lines if line["dir"] == "recv" and line["kind"] != "event"]
        for line in lines:
            if line["dir"] == "recv":
                continue
            if line["dir"] == "send":
                # Send only once QEMU has answered what the recording client had
                # clearly seen by then (lines completed within PIPELINED of a send
                # were pipelined, not awaited), so that the request order holds.
                before = line["rel"] - PIPELINED
                count = sum(1 for r in received if r["conn"] == line["conn"] and r["rel"] <= before)
                shift += await self.caught_up(line["conn"], count)
            # Keep the recorded gaps; a slower start here shifts everything after it.
            due = self.t0_mono + line["rel"] + shift
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            else:
                shift += now - due
            if line["seq"] in step_at:
                rel = round(time.monotonic() - self.t0_mono, 6)
                self.steps.append(
                    {"seq_from": len(self.lines), "label": step_at[line["seq"]], "rel": rel}
                )
            conn, direction = line["conn"], line["dir"]
            if direction == "connect":
                await self.connect(conn, line["path"])
            elif direction == "send":
                raw = base64.b64decode(line["raw_b64"]) if "raw_b64" in line else line["raw"]
                data = raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogateescape")
                data = data.replace(self.placeholder.encode(), self.tmp.encode())
                self.record(conn, "send", data)
                writer = self.writers[conn]
                if not writer.is_closing():
                    writer.write(data)
                    # When the peer is gone, the reader records how the connection ended.
                    with contextlib.suppress(OSError):
                        await writer.drain()
            elif direction == "close" and conn in self.writers:
                self.closed.add(conn)
                self.record(conn, "close")
                self.writers[conn].close()
        await asyncio.sleep(TRAILING)

    async def caught_up(self, conn: str, count: int) -> float:
        """Wait (bounded) until ``conn`` has received ``count`` lines; return the time waited."""
        start = time.monotonic()
        while self.received.get(conn, 0) < count:
            self.arrival.clear()
            left = CATCH_UP - (time.monotonic() - start)
            if left <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrival.wait(), left)
        return time.monotonic() - start

    async def finish(self) -> list[dict[str, Any]]:
        for writer in self.writers.values():
            writer.close()
        for task in self.readers:
            task.cancel()
        processes = []
        for process in self.script["processes"]:
            entry = {"label": process["label"], "argv": process["argv"]}
            popen = self.processes.get(process["label"])
            if popen is not None:
                try:
                    out, err = popen.communicate(timeout=EXIT_WAIT)
                except subprocess.TimeoutExpired:
                    popen.kill()
                    out, err = popen.communicate()
                entry.update(
                    pid=popen.pid,
                    exit_status=popen.returncode,
                    stderr=self.back(err).decode(errors="replace"),
                    stdout=self.back(out).decode(errors="replace"),
                )
            processes.append(entry)
        return processes


def run_helpers(script: dict[str, Any], recorder: Recorder) -> list[dict[str, Any]]:
    done = []
    for command in script.get("helper_commands", []):
        argv = [recorder.here(arg) for arg in command["argv"]]
        result = subprocess.run(argv, capture_output=True, check=False)
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed: {result.stderr.decode()}")
        done.append(
            {
                "argv": command["argv"],
                "rc": result.returncode,
                "stdout": recorder.back(result.stdout).decode(),
                "stderr": recorder.back(result.stderr).decode(),
            }
        )
    return done


async def record_transcript(script: dict[str, Any]) -> dict[str, Any]:
    name = script["scenario"]
    placeholder = f"/tmp/qmp-acc-{name}-XXXXXXXX"
    with tempfile.TemporaryDirectory(prefix=f"qmp-acc-{name}-", dir="/tmp") as tmp:
        recorder = Recorder(script, tmp, placeholder)
        helpers = run_helpers(script, recorder)
        try:
            await recorder.play()
        finally:
            processes = await recorder.finish()
    greeting = next(line for line in recorder.lines if line.get("kind") == "greeting")
    out = {
        "format": script["format"],
        "scenario": name,
        "description": script["description"],
        "qemu_version": json.loads(greeting["raw"])["QMP"]["version"],
        "recorded_with": emulator_version(script["processes"][0]["argv"][0]),
        "recorded_by": "tools/record_reference.py",
        "t0_monotonic": round(recorder.t0_mono, 6),
        "t0_wall": round(recorder.t0_wall, 6),
        "processes": processes,
        "steps": recorder.steps,
        "lines": recorder.lines,
    }
    if helpers:
        out["helper_commands"] = helpers
    return out


def emulator_version(binary: str) -> str:
    result = subprocess.run([binary, "--version"], capture_output=True, text=True, check=True)
    return result.stdout.splitlines()[0]


async def record_schema(out: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="qmp-acc-schema-", dir="/tmp") as tmp:
        sock = os.path.join(tmp, "qmp.sock")
        argv = [
            "qemu-system-x86_64", "-display", "none", "-nodefaults", "-accel", "tcg",
            "-machine", "pc", "-m", "64", "-S", "-qmp", f"unix:{sock},server=on,wait=off",
        ]  # fmt: skip
        process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            deadline = time.monotonic() + SOCKET_WAIT
            while not os.path.exists(sock):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("qemu-system-x86_64 did not start")
                await asyncio.sleep(0.01)
            reader, writer = await asyncio.open_unix_connection(sock, limit=1 << 26)
            await reader.readline()
            writer.write(b'{"execute": "qmp_capabilities"}\n{"execute": "query-qmp-schema"}\n')
            await reader.readline()
            schema = json.loads(await reader.readline())["return"]
            writer.close()
        finally:
            process.kill()
            process.wait()
    (out / "qmp_schema_full.json").write_text(json.dumps(schema, indent=1) + "\n")
    print(f"qmp_schema_full.json: {len(schema)} entries")


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help="transcripts, or 'schema'")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--require-all", action="store_true")
    args = parser.parse_args(argv)
    names = args.names or [*TRANSCRIPTS, "schema"]
    unknown = sorted(set(names) - {*TRANSCRIPTS, "schema"})
    if unknown:
        parser.error(f"unknown {', '.join(unknown)}; choose from {', '.join(TRANSCRIPTS)}, schema")
    if shutil.which("qemu-system-x86_64") is None:
        print("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86 qemu-utils)")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    for name in names:
        if name == "schema":
            await record_schema(args.out)
            continue
        script = json.loads((DEFAULT_OUT / f"{name}.json").read_text())
        binary = script["processes"][0]["argv"][0]
        if shutil.which(binary) is None:
            message = f"{name}: {binary} is not installed; kept the existing recording"
            if args.require_all:
                print(message.replace("kept the existing recording", "required"))
                return 2
            print(message)
            continue
        transcript = await record_transcript(script)
        target = args.out / f"{name}.json"
        target.write_text(json.dumps(transcript, indent=1, ensure_ascii=False) + "\n")
        events = sum(1 for line in transcript["lines"] if line.get("kind") == "event")
        print(f"{name}.json: {len(transcript['lines'])} lines, {events} events")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))

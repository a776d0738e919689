"""Differential fuzzing: mutated QMP input to real QEMU and to qmpevents-qemu.

Each input goes over a fresh connection to both, before or after negotiation,
followed by a resync byte and a sentinel request; the replies up to the
sentinel's are compared byte for byte (only the greeting's package string is
normalized). Used by ``tests/qemu/test_fuzz.py`` (a fixed seed, a few hundred
inputs, in CI) and by ``make fuzz`` (``tools/fuzz.py``: thousands, several seeds).
"""

from __future__ import annotations

import random
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SEEDS: tuple[bytes, ...] = (
    b'{"execute": "qmp_capabilities"}',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": "c"}',
    b'{"execute": "query-status", "id": 1}',
    b'{"execute": "query-version", "id": "v"}',
    b'{"exec-oob": "query-status", "id": 2}',
    b'{"execute": "query-status", "arguments": {}, "id": [1, {"x": null, "y": 1.5}]}',
    b'{"execute": "device_del", "arguments": {"id": "nope"}, "id": -7}',
    b'{"execute": "human-monitor-command", "arguments": {"command-line": 1}, "id": "h"}',
    b"{'execute': 'query-status', 'id': 'sq'}",
    b'[1, 2, {"a": "b"}]',
    b'"\\u00e9\\ud83d\\ude00\\t"',
    b'{"id": 1.5e3, "execute": true}',
    b"-12.5e+3 true false null",
    b'{"execute": "query-status", "id": 18446744073709551615}',
)
INTERESTING = b"{}[],:\"\\' \n\t0123456789eE.-+aflnrstux\xff\xfe\xc3\xa9\x00\x1b\x7f"
TIMEOUT = 5.0
_PACKAGE = re.compile(rb'"package": "[^"]*"')


def mutate(rng: random.Random, data: bytes) -> bytes:
    """One to four random edits of ``data``."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(6)
        at = rng.randrange(len(out) + 1)
        if op == 0 and out:
            out[min(at, len(out) - 1)] = rng.choice(INTERESTING)
        elif op == 1:
            out[at:at] = bytes([rng.choice(INTERESTING)])
        elif op == 2 and out:
            del out[at : at + rng.randint(1, 4)]
        elif op == 3 and out:
            end = min(len(out), at + rng.randint(1, 8))
            out[at:at] = out[at:end]
        elif op == 4:
            del out[at:]
        else:
            out += rng.choice(SEEDS)
    return bytes(out)


def inputs(seed: int, count: int) -> Iterator[tuple[bool, bytes]]:
    """(negotiate first?, input) pairs, the same for the same seed."""
    rng = random.Random(seed)
    for _ in range(count):
        yield rng.random() < 0.5, mutate(rng, rng.choice(SEEDS))


@dataclass
class Monitor:
    """A QMP server process on a unix socket; each exchange opens a fresh connection."""

    argv: list[str]
    path: Path
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0

    def start(self) -> None:
        self.path.unlink(missing_ok=True)
        self.process = subprocess.Popen(
            [*self.argv, "-qmp", f"unix:{self.path},server=on,wait=off"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 15
        while not self.path.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.argv[0]} did not create {self.path}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()

    def exchange(self, negotiate: bool, data: bytes, tag: str) -> bytes:
        """The replies to ``data`` (after an optional negotiation), up to the sentinel's."""
        if self.process is None or self.process.poll() is not None:
            self.restarts += 1
            self.start()
        sentinel = f'{{"execute": "x-sentinel", "id": "{tag}"}}\n'.encode()
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(TIMEOUT)
            sock.connect(str(self.path))
            buffer = bytearray()
            _read_until(sock, buffer, b'"capabilities"')
            if negotiate:
                sock.sendall(b'{"execute": "qmp_capabilities", "id": "neg"}\n')
                _read_until(sock, buffer, b'"neg"')
            sock.sendall(data + b"\n\x1b\n" + sentinel)
            try:
                return _PACKAGE.sub(b'"package": P', _read_until(sock, buffer, tag.encode()))
            except (TimeoutError, ConnectionError) as error:
                return b"<" + type(error).__name__.encode() + b"> " + bytes(buffer)


def _read_until(sock: socket.socket, buffer: bytearray, marker: bytes) -> bytes:
    while True:
        at = buffer.find(marker)
        if at >= 0 and b"\n" in buffer[at:]:
            end = buffer.index(b"\n", at) + 1
            out = bytes(buffer[:end])
            del buffer[:end]
            return out
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk


@dataclass
class Report:
    """What a run found: every input that got different replies."""

    compared: int = 0
    differences: list[tuple[bool, bytes, bytes, bytes]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.differences) / self.compared if self.compared else 0.0

    def describe(self, limit: int = 20) -> str:
        lines = [f"{len(self.differences)} of {self.compared} inputs differ ({self.rate:.2%})"]
        for negotiated, data, qemu, ours in self.differences[:limit]:
            lines += [
                f"input {data!r} (negotiated: {negotiated})",
                f"  qemu {qemu!r}",
                f"  ours {ours!r}",
            ]
        return "\n".join(lines)


BASE = ["-display", "none", "-nodefaults", "-machine", "pc", "-m", "32", "-S"]


@contextmanager
def monitors(directory: Path) -> Iterator[tuple[Monitor, Monitor]]:
    """Real QEMU and qmpevents-qemu with the same command line."""
    qemu_binary = shutil.which("qemu-system-x86_64")
    # The qmpevents-qemu of the running interpreter's environment first.
    beside = Path(sys.executable).parent / "qmpevents-qemu"
    ours_binary = str(beside) if beside.exists() else shutil.which("qmpevents-qemu")
    if qemu_binary is None or ours_binary is None:
        raise RuntimeError("needs qemu-system-x86_64 and qmpevents-qemu on PATH")
    qemu = Monitor([qemu_binary, "-accel", "tcg", *BASE], directory / "qemu.sock")
    ours = Monitor([ours_binary, *BASE], directory / "ours.sock")
    try:
        qemu.start()
        ours.start()
        yield qemu, ours
    finally:
        qemu.stop()
        ours.stop()


def run(directory: Path, seed: int, count: int) -> Report:
    report = Report()
    with monitors(directory) as (qemu, ours):
        for number, (negotiate, data) in enumerate(inputs(seed, count)):
            tag = f"s{seed}-{number}"
            theirs = qemu.exchange(negotiate, data, tag)
            mine = ours.exchange(negotiate, data, tag)
            report.compared += 1
            if theirs != mine:
                report.differences.append((negotiate, data, theirs, mine))
    return report


def main() -> None:
    """``python -m tests.qemu.fuzz [--count N] [--seeds S ...]``: the long run of ``make fuzz``."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--count", type=int, default=2000, help="inputs per seed")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    args = parser.parse_args()
    total = Report()
    with tempfile.TemporaryDirectory(prefix="qmpevents-fuzz-") as directory:
        for seed in args.seeds:
            report = run(Path(directory), seed, args.count)
            print(f"seed {seed}: {report.describe(limit=5)}", flush=True)
            total.compared += report.compared
            total.differences += report.differences
    print(f"all seeds: {len(total.differences)} of {total.compared} differ ({total.rate:.3%})")
    sys.exit(1 if total.rate >= 0.01 else 0)


if __name__ == "__main__":
    main()

"""Differential test: the same bytes to real QEMU and to our ServerSession, same replies.

Every case is something QEMU answers without running a command (lexer and parser
errors, request checks, negotiation), so the session alone must answer it
byte-for-byte as QEMU does. After each case a resync byte (ESC) and a sentinel
request mark where QEMU's answer ends, so no case waits on a timeout.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmpevents.protocol.server_session import Reply, ServerSession

pytestmark = pytest.mark.qemu

# Cases sent before negotiation, then the same again after it.
CASES: list[bytes] = [
    b'"\\ud800"\n',
    b'"\\x"\n',
    b'"\\u12"\n',
    b'"\\u12xyz"\n',
    b'"\\ud83d\\u0041"\n',
    b'"\\uDBFF\\uDFFF"\n',
    b'"\\uFDD0"\n',
    b'"\\u0000"\n',
    b"01\n",
    b"-x\n",
    b"-\n",
    b"1.\n",
    b"1e\n",
    b"1e+\n",
    b"0.5e-3\n",
    b"Foo\n",
    b"tru\n",
    b"nul\n",
    b"true\xc3\xa9\n",
    b"1\xc3\xa9\n",
    b"{1: 2}\n",
    b'{{"a": 1}: 2}\n',
    b"[1 2]\n",
    b'{"a": 1 "b": 2}\n',
    b"[}\n",
    b"{]\n",
    b'{"a": [}]}\n',
    b'"\xef\xbf\xbe"\n',
    b'"a\x7fb"\n',
    b"\xc0\x80\n",
    b'"\xc0\x80"\n',
    b'"\x1f"\n',
    b"'a\"b'\n",
    b"'it\\'s'\n",
    b'{"execute": 5}\n',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": [1]}, "id": 1}\n',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": null}, "id": 3}\n',
    b'{"execute": "qmp_capabilities", "arguments": {"foo": 1, "enable": []}, "id": 4}\n',
    b'{"execute": "qmp_capabilities", "arguments": {"enable": ["x", 1]}, "id": 5}\n',
    b'{"execute": "x", "id": 1, "exec-oob": 1}\n',
    b'{"execute": "x", "arguments": 1, "foo": 2}\n',
    b'{"exec-oob": "x", "execute": "y", "id": [1, {"a": null}]}\n',
    b'{"id": 1e400}\n',
    b'{"id": -9223372036854775809}\n',
    b'{"id": 0.1}\n',
    b'{"id": "\\u00e9\\ud83d\\ude00\\t"}\n',
]
NEGOTIATE = b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": "neg"}\n'


@pytest.fixture
def qemu_monitor(qemu_binary: str, tmp_path: Path) -> Iterator[socket.socket]:
    path = tmp_path / "diff.sock"
    argv = [
        qemu_binary,
        *("-display", "none", "-nodefaults", "-accel", "tcg", "-machine", "pc", "-m", "32"),
        *("-S", "-qmp", f"unix:{path},server=on,wait=off"),
    ]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not path.exists():
            assert process.poll() is None, "QEMU exited before creating its socket"
            assert time.monotonic() < deadline, "QEMU did not create its socket in time"
            time.sleep(0.02)
        sock = socket.socket(socket.AF_UNIX)
        sock.settimeout(5)
        sock.connect(str(path))
        yield sock
        sock.close()
    finally:
        process.kill()
        process.wait()


def read_until(sock: socket.socket, buffer: bytearray, marker: bytes) -> bytes:
    """Bytes up to and including the line that contains ``marker``."""
    while True:
        at = buffer.find(marker)
        if at >= 0:
            end = buffer.index(b"\n", at) + 1
            out = bytes(buffer[:end])
            del buffer[:end]
            return out
        chunk = sock.recv(65536)
        assert chunk, "QEMU closed the monitor"
        buffer += chunk


def test_session_answers_exactly_like_qemu(qemu_monitor: socket.socket) -> None:
    session = ServerSession()
    buffer = bytearray()
    read_until(qemu_monitor, buffer, b'"capabilities"')  # the greeting
    mismatches = []
    sequence = [*CASES, NEGOTIATE, *CASES]
    for number, case in enumerate(sequence):
        sentinel = f'{{"execute": "x-sentinel", "id": "s{number}"}}\n'.encode()
        data = case + b"\x1b\n" + sentinel
        qemu_monitor.sendall(data)
        qemu = read_until(qemu_monitor, buffer, f'"s{number}"'.encode())
        items = session.receive_data(data)
        # The sentinel is an unknown command: after negotiation it reaches the
        # command layer, which would answer CommandNotFound; answer it here.
        ours = b"".join(
            item.data
            if isinstance(item, Reply)
            else session.reply_error(
                item, "CommandNotFound", f"The command {item.command} has not been found"
            )
            for item in items
        )
        if ours != qemu:
            mismatches.append((case, qemu, ours))
    assert not mismatches, "\n".join(f"{c!r}\n qemu {q!r}\n ours {o!r}" for c, q, o in mismatches)

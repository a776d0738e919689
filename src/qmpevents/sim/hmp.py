"""``human-monitor-command``: the HMP commands the simulator knows, ``qemu-io`` first.

``qemu-io DEVICE "COMMAND"`` runs one qemu-io command on a block node, as
QEMU's HMP does: the reply is the HMP text (empty on success), the qemu-io
report goes to the process's standard output and its usage errors to standard
error, exactly where QEMU prints them. Supported qemu-io commands: ``read`` and
``write`` with ``-P PATTERN``, ``-q`` and (write) ``-f`` for FUA, which QEMU
emulates with a flush; ``flush``, which on HMP's temporary BlockBackend flushes
no children (it holds no write permission) and so reports nothing.
"""

from __future__ import annotations

import getopt
import re
import time
from typing import TYPE_CHECKING, TextIO

import msgspec

from qmpevents.server.commands import CommandContext
from qmpevents.sim.block import BlockError, Node

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["HMP", "HumanMonitorCommandArguments"]

_USAGE = 'Try "help qemu-io" for more information\r\n'
_NUMBER = re.compile(r"^(\d+)([kKMGTPE]?)$")
_SHIFTS = {"": 0, "k": 10, "K": 10, "M": 20, "G": 30, "T": 40, "P": 50, "E": 60}


class HumanMonitorCommandArguments(msgspec.Struct, kw_only=True):
    """``human-monitor-command`` arguments."""

    command_line: str = msgspec.field(name="command-line")
    cpu_index: int | None = msgspec.field(name="cpu-index", default=None)


def _hmp_string(text: str) -> tuple[str, str] | None:
    """One HMP string argument (double-quoted with escapes, or a bare word) and the rest."""
    text = text.lstrip()
    if not text:
        return None
    if not text.startswith('"'):
        word = text.split(None, 1)
        return word[0], (word[1] if len(word) > 1 else "")
    out: list[str] = []
    i = 1
    while i < len(text) and text[i] != '"':
        if text[i] == "\\" and i + 1 < len(text):
            i += 1
            out.append({"n": "\n", "r": "\r"}.get(text[i], text[i]))
        else:
            out.append(text[i])
        i += 1
    if i >= len(text):
        return None
    return "".join(out), text[i + 1 :]


def _number(text: str) -> int | None:
    match = _NUMBER.match(text)
    if match is None:
        return None
    return int(match.group(1)) << _SHIFTS[match.group(2)]


def _human_size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        count_f = count / 1024
        if count_f < 1024 or unit == "TiB":
            return f"{count_f:.3f}".rstrip("0").rstrip(".") + f" {unit}"
        count = int(count_f)
    return f"{count} bytes"


class HMP:
    """The HMP side of the simulator."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine

    def install(self) -> None:
        """Register ``human-monitor-command``."""
        self._machine.server.register(
            "human-monitor-command", self._command, HumanMonitorCommandArguments, returns=str
        )

    @property
    def _out(self) -> TextIO:
        return self._machine.stdout

    def _command(self, args: HumanMonitorCommandArguments, ctx: CommandContext) -> str:
        line = args.command_line.strip()
        if not line:
            return ""
        name, _, rest = line.partition(" ")
        if name != "qemu-io":
            return f"unknown command: '{name}'\r\n"
        device = _hmp_string(rest)
        if device is None:
            return "qemu-io: block device name expected\r\n" + _USAGE
        command = _hmp_string(device[1])
        if command is None:
            return "qemu-io: string expected\r\n" + _USAGE
        if command[1].strip():
            return "qemu-io: extraneous characters at the end of line\r\n" + _USAGE
        node = self._machine.block.find(device[0])
        if node is None:
            return f"Error: Cannot find device='' nor node-name='{device[0]}'\r\n"
        self._qemu_io(node, command[0])
        return ""

    def _qemu_io(self, node: Node, command: str) -> None:
        words = command.split()
        if not words:
            return
        verb, argv = words[0], words[1:]
        if verb == "flush":
            return
        if verb not in ("read", "write"):
            self._machine.stderr.write(f'command "{verb}" not found\n')
            return
        pattern: int | None = None
        fua = quiet = False
        # qemu-io parses its options with getopt(3): "-P 0x32", "-P0x32", "-qf"...
        try:
            options, positional = getopt.gnu_getopt(argv, "P:fq" if verb == "write" else "P:q")
        except getopt.GetoptError as error:
            option = error.opt or "?"
            if "requires argument" in error.msg:
                self._machine.stderr.write(f"{verb}: option requires an argument -- '{option}'\n")
            else:
                self._machine.stderr.write(f"{verb}: invalid option -- '{option}'\n")
            return
        for option, argument in options:
            if option == "-P":
                try:
                    pattern = int(argument, 0) & 0xFF
                except ValueError:
                    self._out.write(f"non-numeric pattern -- {argument}\n")
                    return
            elif option == "-f":
                fua = True
            else:
                quiet = True
        if len(positional) != 2:
            self._machine.stderr.write(
                f"bad argument count {len(positional)} to {verb}, expected at least 2 arguments\n"
            )
            return
        numbers = [_number(word) for word in positional]
        for word, value in zip(positional, numbers, strict=True):
            if value is None:
                self._out.write(
                    "Parsing error: non-numeric argument, or extraneous/unrecognized suffix "
                    f"-- {word}\n"
                )
                return
        offset, length = numbers[0] or 0, numbers[1] or 0
        started = time.monotonic()
        try:
            if offset + length > node.size:
                raise BlockError(5)
            if verb == "read":
                data = node.read(offset, length)
                if pattern is not None and data != bytes([pattern]) * length:
                    self._out.write(
                        f"Pattern verification failed at offset {offset}, {length} bytes\n"
                    )
            else:
                node.write(offset, bytes([pattern if pattern is not None else 0xCD]) * length)
                if fua:
                    node.flush()
        except BlockError as error:
            self._out.write(f"{verb} failed: {error}\n")
            return
        if not quiet:
            elapsed = max(time.monotonic() - started, 1e-6)
            done = "read" if verb == "read" else "wrote"
            rate = _human_size(int(length / elapsed))
            self._out.write(
                f"{done} {length}/{length} bytes at offset {offset}\n"
                f"{_human_size(length)}, 1 ops; {elapsed:05.2f} sec "
                f"({rate}/sec and {1 / elapsed:.4f} ops/sec)\n"
            )
        self._out.flush()

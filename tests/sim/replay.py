"""Replays the client side of a reference transcript against simulated machines.

Each QEMU process of the transcript becomes a :class:`Machine` built from that
process's own argv by the ``qmpevents-qemu`` parser, in this event loop, with a
short rate-limiter interval. The recording client's guest actions (the qtest
lines, the boot-sector guests) are replaced by ``x-sim-`` commands given per
step; their replies carry ids ``sim-N`` and are not compared. Replies and events
are compared line by line, normalizing only timestamps, temporary paths, the
greeting's package string and the timing figures of ``query-migrate``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmpevents.sim.cmdline import parse_command_line
from qmpevents.sim.machine import Machine, Timing
from qmpevents.throttle import RateLimiter
from tests.helpers import load_transcript, raw_bytes

INTERVAL = 0.05
TIMEOUT = 5.0
_TIMESTAMP = re.compile(r'"seconds": \d+, "microseconds": \d+')
_PACKAGE = re.compile(r'"package": "[^"]*"')
_PROGRESS = re.compile(r'"completed": \d+')
_TMP = re.compile(r"/tmp/qmp-acc-[a-z_]+-XXXXXXXX")
# Options of the recording that only served the recording client as the guest.
_GUEST_ONLY = {"-qtest": 1, "-qtest-log": 1}


@dataclass
class GuestAction:
    """x-sim commands standing in for the guest during a transcript step.

    ``when`` is ``start`` (before the step's first line), ``first`` (after the
    step's first command), ``each`` (after every command the step sends) or
    ``last`` (after the step's last command).
    """

    when: str
    commands: list[dict[str, Any]]


@dataclass
class Replay:
    """The outcome of one replay, for assertions beyond the line comparison."""

    compared: int = 0
    machines: dict[str, Machine] = field(default_factory=dict)
    statuses: dict[str, int] = field(default_factory=dict)
    stdout: io.StringIO = field(default_factory=io.StringIO)
    stderr: io.StringIO = field(default_factory=io.StringIO)


def translate_argv(argv: list[str], tmp: str) -> list[str]:
    """A process's argv for ``qmpevents-qemu``: temp paths moved, guest-only options gone."""
    out: list[str] = []
    skip = 0
    for arg in argv[1:]:
        if skip:
            skip -= 1
            continue
        if arg in _GUEST_ONLY:
            skip = _GUEST_ONLY[arg]
            continue
        out.append(_TMP.sub(tmp, arg))
    return out


def make_images(transcript: dict[str, Any], tmp: str) -> None:
    """Create the image files the recording made with qemu-img and qemu-io, in Python."""
    for command in transcript.get("helper_commands", []):
        argv = [_TMP.sub(tmp, arg) for arg in command["argv"]]
        if argv[0] == "qemu-img":
            with open(argv[4], "wb") as f:
                f.truncate(int(argv[5]))
        elif argv[0] == "qemu-io":
            _, pattern, offset, length = argv[4].split()[0:1] + argv[4].split()[2:]
            with open(argv[5], "r+b") as f:
                f.seek(int(offset))
                f.write(bytes([int(pattern, 0)]) * int(length))


def _boot_disks(argv: list[str]) -> None:
    """The recording's guests booted from a disk image; the simulated guest needs only the file."""
    for option, value in itertools.pairwise(argv):
        if option == "-drive" and value.startswith("file="):
            path = value.split(",")[0][5:]
            if not Path(path).exists():
                Path(path).write_bytes(bytes(512))


def _normalize(line: str) -> str:
    line = _TIMESTAMP.sub('"seconds": S, "microseconds": U', line)
    if '"status": "active"' in line:
        # Progress of a running dump depends on timing.
        line = _PROGRESS.sub('"completed": C', line)
    return _PACKAGE.sub('"package": P', line)


def _query_migrate_shape(value: dict[str, Any]) -> Any:
    ret = value.get("return")
    if not isinstance(ret, dict) or "ram" not in ret:
        return value
    ram = ret["ram"]
    return {
        "id": value.get("id"),
        "keys": sorted(ret),
        "status": ret["status"],
        "ram-keys": sorted(ram),
        "ram-total": ram["total"],
        "page-size": ram["page-size"],
    }


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.passes: list[int] = []

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def line(self) -> str:
        """The next line that is not the reply to an x-sim command."""
        while True:
            raw = await asyncio.wait_for(self.reader.readline(), TIMEOUT)
            if not raw:
                raise EOFError
            text = raw.decode()
            if '"id": "sim-' not in text:
                return text


def _pass_of(text: str) -> int | None:
    if '"event": "MIGRATION_PASS"' not in text:
        return None
    value: int = json.loads(text)["data"]["pass"]
    return value


async def replay(
    name: str,
    tmp: str,
    actions: dict[str, GuestAction],
    *,
    skip_commands: frozenset[str] = frozenset(),
    elastic_conns: frozenset[str] = frozenset(),
    racy_repeats: frozenset[str] = frozenset(),
) -> Replay:
    """Replay transcript ``name`` in directory ``tmp``; raises AssertionError on a mismatch.

    On ``elastic_conns`` the recorded MIGRATION_PASS events are not compared one by
    one: how many passes a dirtying guest needs is a matter of timing. Every pass
    received must still count up by one from 1 per migration.

    An event named in ``racy_repeats`` that the recording has twice in a row (same
    data) is expected once: QEMU sent the second by a race (SeaBIOS's reset after a
    ``system_reset`` comes once or twice, run by run). A second one from the
    simulator still fails the comparison with the next line.
    """
    transcript = load_transcript(name)
    make_images(transcript, tmp)
    result = Replay()
    processes = transcript["processes"]
    conn_process: dict[str, dict[str, Any]] = {}
    conns: dict[str, _Conn] = {}
    steps = {step["seq_from"]: step["label"] for step in transcript["steps"]}
    lines = transcript["lines"]
    skipped_ids: set[Any] = set()
    sim_id = 0
    current = GuestAction("none", [])
    current_conn = ""
    sends_left = sends_in_step_total = 0

    async def guest(conn: str) -> None:
        nonlocal sim_id
        for command in current.commands:
            sim_id += 1
            request = dict(command, id=f"sim-{sim_id}")
            await conns[conn].send(json.dumps(request).encode() + b"\n")

    def sends_in_step(start: int) -> int:
        count = 0
        for line in lines[start:]:
            if line["seq"] in steps and line is not lines[start]:
                break
            if line["dir"] == "send" and line["conn"] == lines[start]["conn"]:
                count += 1
        return count

    try:
        for index, line in enumerate(lines):
            conn = line["conn"]
            if line["seq"] in steps:
                label = steps[line["seq"]]
                await _quiet(result)
                current = actions.get(label, GuestAction("none", []))
                sends_left = sends_in_step_total = sends_in_step(index)
                current_conn = conn if conn in conns else current_conn
                if current.when == "start" or (current.when == "last" and sends_left == 0):
                    await guest(current_conn)
            if line.get("kind") == "qtest" or conn == "qtest":
                continue
            direction = line["dir"]
            if direction == "connect":
                process = next(
                    (p for p in processes if p["label"] == conn),
                    processes[len(conn_process)] if len(conn_process) < len(processes) else None,
                )
                assert process is not None
                conn_process[conn] = process
                argv = translate_argv(process["argv"], tmp)
                _boot_disks(argv)
                machine = Machine(
                    parse_command_line(argv),
                    rate_limiter=RateLimiter(interval=INTERVAL),
                    timing=Timing(dump_rate=2e9, migration_tick=0.02, cancel_delay=0.002),
                    stdout=result.stdout,
                    stderr=result.stderr,
                )
                result.machines[conn] = machine
                paths = await machine.start()
                reader, writer = await asyncio.open_unix_connection(paths[0])
                conns[conn] = _Conn(reader, writer)
                current_conn = current_conn or conn
            elif direction == "send":
                data = raw_bytes(line).decode()
                request = json.loads(data)
                if request.get("execute") in skip_commands:
                    skipped_ids.add(request.get("id"))
                    continue
                await conns[conn].send(_TMP.sub(tmp, data).encode())
                if conn != current_conn:
                    continue
                first = sends_left == sends_in_step_total
                sends_left -= 1
                if (
                    current.when == "each"
                    or (current.when == "first" and first)
                    or (current.when == "last" and sends_left == 0)
                ):
                    await guest(conn)
            elif direction == "recv":
                expected = _TMP.sub(tmp, raw_bytes(line).decode())
                if conn in elastic_conns and _pass_of(expected) is not None:
                    continue
                kind = line.get("kind")
                if kind in ("return", "error") and json.loads(expected).get("id") in skipped_ids:
                    continue
                if kind == "event" and _is_racy_repeat(lines, index, racy_repeats):
                    continue
                await _compare(conns[conn], expected, conn in elastic_conns, line["seq"])
                result.compared += 1
            elif direction in ("eof", "error"):
                with contextlib.suppress(EOFError):
                    extra = await conns[conn].line()
                    raise AssertionError(f"seq {line['seq']}: expected EOF, got {extra!r}")
            elif direction == "close":
                conns[conn].writer.close()
        for conn, machine in result.machines.items():
            status = await asyncio.wait_for(machine.server.wait_closed(), TIMEOUT)
            result.statuses[conn] = status
            assert status == conn_process[conn]["exit_status"], f"{conn}: exit status {status}"
    finally:
        for machine in result.machines.values():
            await machine.server.close()
    return result


def _is_racy_repeat(lines: list[dict[str, Any]], index: int, names: frozenset[str]) -> bool:
    """Whether recorded event ``lines[index]`` repeats, by a race, the one just before it."""
    line = lines[index]
    before = next(
        (e for e in reversed(lines[:index]) if e["conn"] == line["conn"] and e["dir"] == "recv"),
        None,
    )
    if before is None or before.get("kind") != "event":
        return False
    this, previous = json.loads(raw_bytes(line)), json.loads(raw_bytes(before))
    return (
        this["event"] in names
        and this["event"] == previous["event"]
        and this.get("data") == previous.get("data")
    )


async def _quiet(result: Replay) -> None:
    """Let every throttle window end, as the recording's seconds-long pauses did."""
    for machine in result.machines.values():
        while machine.server.rate_limiter.active_keys():
            await asyncio.sleep(INTERVAL / 2)


async def _compare(conn: _Conn, expected: str, elastic: bool, seq: int) -> None:
    while True:
        got = await conn.line()
        got_pass = _pass_of(got)
        if got_pass is None:
            break
        # Passes count up by one and restart at 1 for a new migration.
        previous = conn.passes[-1] if conn.passes and got_pass != 1 else 0
        assert got_pass == previous + 1, f"seq {seq}: pass {got_pass} after {previous}"
        conn.passes.append(got_pass)
        if not elastic:
            break
    if '"ram"' in expected:
        assert _query_migrate_shape(json.loads(got)) == _query_migrate_shape(
            json.loads(expected)
        ), f"seq {seq}"
        return
    assert _normalize(got) == _normalize(expected), f"seq {seq}"

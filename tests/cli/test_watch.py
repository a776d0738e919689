"""``qmpevents watch``: its pure formatting and the command against a server double."""

from __future__ import annotations

import datetime
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner

from qmpevents.cli.watch import (
    describe,
    format_item,
    human_bytes,
    json_item,
    parse_watch_target,
    parse_where,
    printable,
    watch,
)
from qmpevents.client.connection import Dropped, Gap
from qmpevents.protocol.encoding import encode_event
from qmpevents.schema.decode import decode_event
from tests.client.test_connection import Peer, fake_qemu_in_thread, passes, report_bad

QUORUM_BAD = report_bad("qM-c2", 8)


async def _script(peer: Peer) -> None:
    await peer.greet()
    await peer.send(QUORUM_BAD, passes(1, 2))
    await peer.serve()


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[Path]:
    """A FakeQEMU in its own thread (the command runs its own event loop)."""
    with fake_qemu_in_thread(tmp_path / "vm1.sock", _script) as path:
        yield path


def test_describe_the_seed_events() -> None:
    dump = {"result": {"status": "failed", "completed": 0, "total": 67371008}, "error": "ENOSPC"}
    assert describe("DUMP_COMPLETED", dump) == "failed 0 B/64.2 MiB error: ENOSPC"
    bad = {"node-name": "qM-c2", "sectors-count": 1, "sector-num": 0, "type": "read"}
    assert describe("QUORUM_REPORT_BAD", bad) == "node qM-c2 sectors 0+1 read"
    failure = {"reference": "qM", "sectors-count": 2, "sector-num": 16}
    assert describe("QUORUM_FAILURE", failure) == "reference qM sectors 16+2"
    assert describe("GUEST_PANICKED", {"action": "run"}) == "action run"
    hyperv = {"action": "pause", "info": {"type": "hyper-v"}}
    assert describe("GUEST_PANICKED", hyperv) == "action pause info hyper-v"
    assert describe("MIGRATION_PASS", {"pass": 3}) == "pass 3"
    assert describe("VSERPORT_CHANGE", {"open": False, "id": "vs0"}) == "vs0 closed"
    unplug = {"device": "dimm1", "msg": "rejected"}
    assert describe("MEM_UNPLUG_ERROR", unplug) == "dimm1: rejected"
    refused = {"device": "dimm1", "path": "/machine/peripheral/dimm1"}
    assert describe("DEVICE_UNPLUG_GUEST_ERROR", refused) == "dimm1 /machine/peripheral/dimm1"
    anonymous = {"path": "/machine/peripheral-anon/device[0]"}
    assert describe("DEVICE_UNPLUG_GUEST_ERROR", anonymous) == anonymous["path"]
    assert describe("MIGRATION", {"status": "active"}) == '{"status":"active"}'
    assert describe("STOP", {}) == ""


def test_describe_a_guests_acpi_ost_report() -> None:
    """A refused DIMM unplug on pc, as QEMU 7.2 sends it, reads and shows as a failure."""
    ost = b'{"timestamp": {"seconds": 1796121797, "microseconds": 787840}, "event": '
    busy = ost + (
        b'"ACPI_DEVICE_OST", "data": {"info": {"device": "dimm1", "source": 3, '
        b'"status": 130, "slot": "0", "slot-type": "DIMM"}}}'
    )
    line = format_item("vm1", decode_event(busy))
    assert line.plain.endswith(
        " vm1 ACPI_DEVICE_OST dimm1 DIMM slot 0: eject request, device busy (0x82)"
    )
    assert any(span.style == "bold red" for span in line.spans)
    progress = busy.replace(b'"status": 130', b'"status": 132')
    line = format_item("vm1", decode_event(progress))
    assert line.plain.endswith("eject request, eject in progress (0x84)")
    assert not any(span.style == "bold red" for span in line.spans)
    inserted = {"info": {"slot": "1", "slot-type": "CPU", "source": 1, "status": 0x81}}
    assert describe("ACPI_DEVICE_OST", inserted) == (
        "CPU slot 1: device check, driver load failure (0x81)"
    )


def test_human_bytes() -> None:
    assert [human_bytes(n) for n in (0, 1023, 1024, 67371008, 5 << 40)] == [
        "0 B",
        "1023 B",
        "1.0 KiB",
        "64.2 MiB",
        "5.0 TiB",
    ]


def test_targets_and_where() -> None:
    assert parse_watch_target("/run/vms/web1.sock").name == "web1"
    spec = parse_watch_target("db=/run/q.sock")
    assert (spec.name, spec.text) == ("db", "/run/q.sock")
    with pytest.raises(click.BadParameter, match="1-65535"):
        parse_watch_target("host:0")
    assert parse_where(["node-name=qM-c2", "open=true", "sector-num=8"]) == {
        "node-name": "qM-c2",
        "open": True,
        "sector-num": 8,
    }
    with pytest.raises(Exception, match="MEMBER=VALUE"):
        parse_where(["novalue"])


def test_lines_mark_rate_limited_events_and_markers() -> None:
    bad = decode_event(QUORUM_BAD.rstrip())
    line = format_item("vm1", bad).plain
    assert "vm1 QUORUM_REPORT_BAD node qM-c2 sectors 8+1 read (rate-limited per node-name)" in line
    assert "rate-limited" not in format_item("vm1", decode_event(passes(1).rstrip())).plain
    assert "2 event(s) dropped" in format_item("vm1", Dropped(2)).plain
    assert "events in between are lost" in format_item("vm1", Gap(0.0, 2.0)).plain


def test_json_keeps_the_event_exactly_as_sent() -> None:
    at = datetime.datetime(2026, 1, 2, tzinfo=datetime.UTC)
    line = json_item("vm1", decode_event(QUORUM_BAD.rstrip()), at)
    assert line.endswith('"event": ' + QUORUM_BAD.rstrip().decode() + "}")
    assert json.loads(line)["received-at"] == "2026-01-02T00:00:00+00:00"
    assert json.loads(json_item("vm1", Gap(1.0, 2.0), at))["gap"] == {"started": 1.0, "ended": 2.0}


def test_watch_count_and_filters(vm: Path) -> None:
    result = CliRunner().invoke(watch, [str(vm), "--event", "MIGRATION_*", "--count", "2"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert [line.split()[1:4] for line in lines] == [
        ["vm1", "MIGRATION_PASS", "pass"],
        ["vm1", "MIGRATION_PASS", "pass"],
    ]


def test_watch_json_where(vm: Path) -> None:
    args = [f"web={vm}", "--json", "--where", "sector-num=8", "--count", "1"]
    result = CliRunner().invoke(watch, args)
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["vm"] == "web"
    assert record["event"]["data"]["node-name"] == "qM-c2"


def test_watch_timeout_exits_1(vm: Path) -> None:
    result = CliRunner().invoke(watch, [str(vm), "--event", "NEVER", "--timeout", "0.05"])
    assert result.exit_code == 1
    assert "timed out after 0.05 s: 0 matching event(s) seen" in result.output


def test_watch_unreachable_target_exits_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(watch, [str(tmp_path / "nope.sock")])
    assert result.exit_code == 2
    assert "nope: " in result.output and "cannot connect" in result.output


def test_control_characters_from_a_vm_never_reach_the_terminal() -> None:
    evil = encode_event("EVIL\n\x1b]0;owned\x07", 1, 2, {"msg": "a\x1b[2Jb\u202e", "n": 1}).rstrip()
    line = format_item("vm\n1", decode_event(evil)).plain
    assert "\n" not in line and "\x1b" not in line and "\x07" not in line
    assert "\u202e" not in line
    assert "EVIL\\x0a\\x1b]0;owned\\x07" in line and "vm\\x0a1" in line
    assert printable("ok é ☃") == "ok é ☃"


def test_watch_raw_prints_qemus_bytes_and_says_where_it_is_connected(vm: Path) -> None:
    result = CliRunner().invoke(watch, [str(vm), "--raw", "--count", "3"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == QUORUM_BAD + passes(1, 2)
    assert f"vm1: connected to {vm} (QEMU 7.2.22)" in result.stderr


def test_watch_option_errors() -> None:
    runner = CliRunner()
    both = runner.invoke(watch, ["a.sock", "--raw", "--json"])
    assert both.exit_code == 2 and "choose one" in both.output
    two = runner.invoke(watch, ["a.sock", "b.sock", "--raw"])
    assert two.exit_code == 2 and "one TARGET" in two.output
    zero = runner.invoke(watch, ["a.sock", "--timeout", "0"])
    assert zero.exit_code == 2 and "--timeout" in zero.output


def test_watch_reconnect_waits_for_a_vm_that_is_not_up_yet(tmp_path: Path) -> None:
    path = tmp_path / "late.sock"
    runner_result: list[Any] = []

    def run() -> None:
        runner_result.append(
            CliRunner().invoke(watch, [str(path), "--reconnect", "--count", "1", "--timeout", "30"])
        )

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.5)  # the watcher is retrying by now; then the VM comes up
    with fake_qemu_in_thread(path, _script):
        thread.join(30)
    (result,) = runner_result
    assert result.exit_code == 0, result.output
    assert "not reachable, retrying" in result.stderr
    assert "QUORUM_REPORT_BAD" in result.stdout


@pytest.mark.qemu
def test_watch_listen_shows_each_qemu_that_connects_under_its_name(tmp_path: Path) -> None:
    import asyncio
    import sys

    from tests.collect.listen_qemu import Fleet, require_qemu

    fleet = Fleet(require_qemu(), tmp_path, tmp_path / "qmp.sock")
    args = ["watch", "--listen", str(fleet.listen), "--count", "4", "--timeout", "60"]
    errors: list[str] = []

    async def drive() -> bytes:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            "from qmpevents.cli import main; main()",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert process.stdout is not None and process.stderr is not None
        try:
            async with asyncio.timeout(60):
                errors.append((await process.stderr.readline()).decode())  # listening on
                guests = [await fleet.boot("guest=delta"), await fleet.boot("epsilon,process=e")]
                while len(errors) < 3:  # each VM's "connected" line: its handshake is done
                    errors.append((await process.stderr.readline()).decode())
                for guest in guests:
                    await fleet.run(guest, "cont", "stop")
                output = await process.stdout.read()
                assert await process.wait() == 0, errors
                return output
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    try:
        output = asyncio.run(drive())
    finally:
        fleet.close()
    shown = [line.split()[1:3] for line in output.decode().splitlines()]
    assert sorted(shown) == sorted(
        [["delta", "RESUME"], ["delta", "STOP"], ["epsilon", "RESUME"], ["epsilon", "STOP"]]
    )
    assert f"listening on {fleet.listen}" in errors[0]
    for name in ("delta", "epsilon"):
        line = next(line for line in errors if line.startswith(f"qmpevents watch: {name}: "))
        assert "QEMU pid " in line and f"connected to {fleet.listen} (QEMU 7.2." in line


def test_watch_listen_option_errors(tmp_path: Path) -> None:
    runner = CliRunner()
    nothing = runner.invoke(watch, [])
    assert nothing.exit_code == 2 and "--listen PATH" in nothing.output
    raw = runner.invoke(watch, ["--listen", str(tmp_path / "a.sock"), "--raw"])
    assert raw.exit_code == 2 and "one TARGET" in raw.output
    taken = tmp_path / "file"
    taken.write_text("")
    busy = runner.invoke(watch, ["--listen", str(taken), "--timeout", "1"])
    assert busy.exit_code == 2 and "not a socket" in busy.stderr

"""``nats://`` targets: parse_target, subject filters, and ``watch`` reading the fleet."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import nats
import pytest

from qmpevents.collect.nats_messages import message_for
from qmpevents.collect.records import GapRecord
from qmpevents.errors import ConfigError
from qmpevents.sources import parse_target
from qmpevents.sources.nats_subjects import subject_filters
from tests.collect.conftest import NatsServer, event_record, nats_server  # noqa: F401


def test_a_nats_target_is_a_fleet_of_servers() -> None:
    target = parse_target("nats://127.0.0.1:4222,127.0.0.1:4223")
    assert target.fleet
    assert target.servers == ("nats://127.0.0.1:4222", "nats://127.0.0.1:4223")
    with pytest.raises(ConfigError, match="a fleet"):
        target.source()
    with pytest.raises(ConfigError, match="expected nats://HOST:PORT"):
        parse_target("nats://nowhere")
    assert not parse_target("vm.sock").fleet


def test_filters_become_subjects_where_they_can() -> None:
    assert subject_filters(None, ()) == ["qmp.*.*"]
    assert subject_filters("web.1", ("STOP",)) == ["qmp.web%2E1.STOP", "qmp.web%2E1._GAP"]
    assert subject_filters("web*", ("STOP", "RESUME")) == [
        "qmp.*.RESUME",
        "qmp.*.STOP",
        "qmp.*._GAP",
    ]
    assert subject_filters("web1", ("MIGRATION*",)) == ["qmp.web1.*"]


async def publish(url: str, records: list[object]) -> None:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        try:
            await js.stream_info("QMP_EVENTS")
        except nats.js.errors.NotFoundError:
            await js.add_stream(name="QMP_EVENTS", subjects=["qmp.>"])
        for record in records:
            message = message_for(record, 1 << 20)  # type: ignore[arg-type]
            await js.publish(message.subject, message.payload, headers=message.headers)
    finally:
        await nc.close()


async def watch(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from qmpevents.cli import main; main()",
        "watch",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_watch_replays_since_then_filters_by_vm_and_event(
    nats_server: NatsServer,  # noqa: F811
) -> None:
    records = [
        event_record("web.1", 1, "MIGRATION_PASS"),
        event_record("db", 2, "MIGRATION_PASS"),
        GapRecord("web.1", 1_780_000_000.0, 1_780_000_005.0, "connection lost"),
        event_record("web.1", 3, "GUEST_PANICKED"),
        event_record("web.1", 4, "MIGRATION_PASS"),
    ]
    await publish(nats_server.url, records)
    status, out, err = await watch(
        nats_server.url,
        "--since",
        "1h",
        "--vm",
        "web.*",
        "--event",
        "MIGRATION_PASS",
        "--count",
        "2",
        "--timeout",
        "30",
    )
    assert status == 0, err
    lines = out.splitlines()
    assert [line.split()[1:3] for line in lines if "MIGRATION_PASS" in line] == [
        ["web.1", "MIGRATION_PASS"],
        ["web.1", "MIGRATION_PASS"],
    ]
    assert not any("db" in line.split()[1:2] for line in lines)
    assert not any("GUEST_PANICKED" in line for line in lines)

    # one subject, in stream order: the gap comes before the third event
    status, out, err = await watch(
        nats_server.url, "--since", "1h", "--vm", "web.*", "--count", "3", "--timeout", "30"
    )
    assert status == 0, err
    assert any("web.1" in line and "no connection from" in line for line in out.splitlines())

    status, out, err = await watch(
        nats_server.url, "--since", "1h", "--json", "--count", "4", "--timeout", "30"
    )
    assert status == 0, err
    assert sum('"event": {' in line for line in out.splitlines()) == 4


async def test_watch_goes_live(nats_server: NatsServer, tmp_path: Path) -> None:  # noqa: F811
    await publish(nats_server.url, [event_record("old", 1)])
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from qmpevents.cli import main; main()",
        "watch",
        nats_server.url,
        "--count",
        "1",
        "--timeout",
        "30",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stderr is not None
    line = await asyncio.wait_for(process.stderr.readline(), 30)  # subscribed
    assert b"reading qmp.*.*" in line
    await publish(nats_server.url, [event_record("new", 2)])
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, err
    assert out.decode().split()[1] == "new"

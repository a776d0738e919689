"""``qmpevents replay`` with the simulator as recorded server and target, and bad input."""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import pytest

from qmpevents.proxy.replay_load import RecordingError, parse_recording
from tests.proxy.conftest import Raw
from tests.proxy.replay_helpers import (
    VSERPORT_ARGS,
    read_records,
    record,
    run_replay,
    sim_target,
    standard_session,
    vserport_session,
    write_records,
)

GREETING = (
    '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
    '"package": ""}, "capabilities": ["oob"]}}\r\n'
)


def _record(time: float, direction: str, client: str, data: str) -> dict[str, Any]:
    return {"time": time, "dir": direction, "client": client, "data": data}


async def _replay(recording: Path, tmp_path: Path, *options: str) -> Any:
    async with sim_target(tmp_path / "target.sock", *VSERPORT_ARGS) as sock:
        return await asyncio.to_thread(run_replay, recording, sock, *options)


async def test_a_simulator_recording_replays_against_a_fresh_simulator(tmp_path: Path) -> None:
    async with sim_target(tmp_path / "rec.sock") as sock:
        recording = await record(sock, tmp_path, standard_session)
    done = await _replay(recording, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "11 messages compared, 0 differ"


async def test_a_wrong_reply_is_reported_with_its_step(tmp_path: Path) -> None:
    async with sim_target(tmp_path / "rec.sock") as sock:
        recording = await record(sock, tmp_path, standard_session)
    records = read_records(recording)
    # the reply to query-status "s1" (step 3: after the greeting and qmp_capabilities)
    (reply,) = [r for r in records if r["dir"] == "proxy->down" and '"id": "s1"' in r["data"]]
    reply["data"] = reply["data"].replace('"prelaunch"', '"running"')
    edited = write_records(tmp_path / "edited.jsonl", records)
    done = await _replay(edited, tmp_path)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        'client 1, step 3: expected {"return": {"status": "running", "singlestep": false, '
        '"running": false}, "id": "s1"}, got {"return": {"status": "prelaunch", '
        '"singlestep": false, "running": false}, "id": "s1"}'
    )
    assert lines[-1] == "11 messages compared, 1 differ"
    as_json = await _replay(edited, tmp_path, "--json")
    assert as_json.returncode == 1
    document = json.loads(as_json.stdout)
    assert document["differ"] == 1
    assert [(d["client"], d["step"], d["kind"]) for d in document["differences"]] == [
        (1, 3, "reply")
    ]


async def test_a_rate_limited_event_is_replayed_with_its_delay(tmp_path: Path) -> None:
    async with sim_target(tmp_path / "rec.sock", *VSERPORT_ARGS) as sock:
        recording = await record(sock, tmp_path, vserport_session)
    records = read_records(recording)
    events = [r for r in records if '"event": "VSERPORT_CHANGE"' in r["data"]]
    assert len(events) == 2  # the first at once, the second held back by the limiter
    done = await _replay(recording, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1] == "8 messages compared, 0 differ"

    # The same recording, but with the held event recorded at once (then 3 s after):
    # the replay's event, held ~1 s by the simulator's limiter, is late (then early).
    burst = next(r for r in records if r["dir"] == "down->proxy" and "x-sim-vserport" in r["data"])
    for shift, kind in ((0.0, "event-late"), (3.0, "event-early")):
        events[1]["time"] = burst["time"] + shift
        edited = write_records(tmp_path / f"shifted-{shift}.jsonl", records)
        done = await _replay(edited, tmp_path, "--json")
        assert done.returncode == 1, done.stdout + done.stderr
        (difference,) = json.loads(done.stdout)["differences"]
        assert (difference["step"], difference["kind"]) == (7, kind), difference


async def test_sequential_clients_are_replayed_one_after_the_other(tmp_path: Path) -> None:
    """QEMU serves one client per socket: a client that left is closed before the next."""
    listen = tmp_path / "rec-proxy.sock"

    async def two_clients(first: Raw) -> None:
        await first.ask(b'{"execute": "query-status", "id": 1}')
        first.close()
        await first.eof()
        second = await Raw.connect(listen)
        await second.ask(b'{"execute": "cont", "id": 2}')
        await second.ask(b'{"execute": "query-status", "id": 3}')
        second.close()

    async with sim_target(tmp_path / "rec.sock") as sock:
        recording = await record(sock, tmp_path, two_clients)
    loaded = parse_recording(recording.read_text())
    assert [len(c.expected) for c in loaded.clients] == [3, 5]  # RESUME: only the second's
    done = await _replay(recording, tmp_path, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(done.stdout)
    assert [c["client"] for c in document["clients"]] == [1, 2]
    assert (document["compared"], document["differ"]) == (8, 0)


def test_a_recording_is_read_per_client_with_binary_data() -> None:
    client = "unix:p.sock#1"
    raw = b'{"execute": "query-name", "id": "\xff"}\n'
    text = "".join(
        json.dumps(line) + "\n"
        for line in (
            _record(1.0, "up->proxy", "upstream", GREETING),
            _record(1.1, "proxy->down", client, GREETING),
            _record(1.2, "down->proxy", client, '{"execute": "qmp_capabilities"}\n'),
            _record(1.3, "proxy->down", client, '{"return": {}}\r\n'),
            {"time": 1.4, "dir": "down->proxy", "client": client,
             "data_b64": base64.b64encode(raw).decode()},
            _record(1.5, "up->proxy", "upstream", '{"timestamp": {"seconds": 1, '
                    '"microseconds": 2}, "event": "STOP"}\r\n'),
            {"time": 1.6, "dropped": 3},
        )
    )  # fmt: skip
    loaded = parse_recording(text, "r.jsonl")
    (script,) = loaded.clients
    assert [chunk.data for chunk in script.chunks][1] == raw
    assert [chunk.gate for chunk in script.chunks] == [1, 2]
    assert [item.kind for item in script.expected] == ["greeting", "reply", "event"]
    event = script.expected[2]
    assert event.anchor == (1, 1) and event.delay == pytest.approx(0.1)
    assert loaded.notes == ["r.jsonl:7: the recording lost 3 records here"]


BAD_LINES = [
    ("not json", "r.jsonl:3: not JSON"),
    ('{"time": 1, "dir": "sideways", "client": "c", "data": ""}', "r.jsonl:3: dir must be"),
    ('{"time": 1, "dir": "down->proxy", "client": "c#1", "data_b64": "%%"}', "not base64"),
    ('{"dir": "down->proxy", "client": "c#1", "data": ""}', "r.jsonl:3: no numeric time"),
    ('{"time": 1, "dir": "down->proxy", "client": "other", "data": "{}"}', "before its greeting"),
]


@pytest.mark.parametrize(("bad", "message"), BAD_LINES)
def test_a_malformed_recording_exits_2_naming_the_line(
    tmp_path: Path, bad: str, message: str
) -> None:
    good = [
        json.dumps(_record(1.0, "up->proxy", "upstream", GREETING)),
        json.dumps(_record(1.1, "proxy->down", "c#1", GREETING)),
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join([*good, bad, *good]) + "\n")
    with pytest.raises(RecordingError, match=message):
        parse_recording(path.read_text(), "r.jsonl")
    done = run_replay(path, tmp_path / "unused.sock")
    assert done.returncode == 2
    assert f"{path}:3: " in done.stderr
    assert done.stdout == ""


def test_an_unreadable_or_empty_recording_exits_2(tmp_path: Path) -> None:
    missing = run_replay(tmp_path / "missing.jsonl", tmp_path / "unused.sock")
    assert missing.returncode == 2 and "missing.jsonl" in missing.stderr
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    done = run_replay(empty, tmp_path / "unused.sock")
    assert done.returncode == 2 and "no client in the recording" in done.stderr


def test_an_unreachable_target_exits_2(tmp_path: Path) -> None:
    path = write_records(
        tmp_path / "r.jsonl",
        [
            _record(1.0, "up->proxy", "upstream", GREETING),
            _record(1.1, "proxy->down", "c#1", GREETING),
        ],
    )
    done = run_replay(path, tmp_path / "nobody.sock", "--timeout", "2")
    assert done.returncode == 2, done.stdout + done.stderr
    assert "nobody.sock" in done.stderr and done.stdout == ""

"""``qmpevents replay`` of a real QEMU 7.2 session: against QEMU again, and the simulator."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.proxy.replay_helpers import (
    read_records,
    record,
    run_replay,
    sim_target,
    standard_session,
    target,
)

pytestmark = pytest.mark.qemu


async def _qemu_recording(qemu_binary: str, tmp_path: Path) -> Path:
    async with target((qemu_binary,), tmp_path / "rec.sock") as sock:
        return await record(sock, tmp_path, standard_session)


async def test_a_qemu_recording_replays_against_a_fresh_qemu(
    qemu_binary: str, tmp_path: Path
) -> None:
    recording = await _qemu_recording(qemu_binary, tmp_path)
    upstream = [r["data"] for r in read_records(recording) if r["dir"] == "up->proxy"]
    assert [e for e in upstream if '"event": "RESUME"' in e or '"event": "STOP"' in e]
    assert any("Parameter 'now' is unexpected" in line for line in upstream)
    async with target((qemu_binary,), tmp_path / "again.sock") as sock:
        done = await asyncio.to_thread(run_replay, recording, sock, "--strict")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == ["11 messages compared, 0 differ"]


async def test_the_simulator_answers_a_qemu_recording_as_qemu_did(
    qemu_binary: str, tmp_path: Path
) -> None:
    recording = await _qemu_recording(qemu_binary, tmp_path)
    async with sim_target(tmp_path / "sim.sock") as sock:
        done = await asyncio.to_thread(run_replay, recording, sock, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    document = json.loads(done.stdout)
    assert (document["compared"], document["differ"]) == (11, 0)
    # Only the version's package differs: in the greeting and the query-version reply.
    assert [note.split(":")[0] for note in document["notes"]] == [
        "client 1, step 1",
        "client 1, step 9",
    ]
    assert all("'qmpevents " in note for note in document["notes"])
    async with sim_target(tmp_path / "sim2.sock") as sock:
        strict = await asyncio.to_thread(run_replay, recording, sock, "--strict", "--json")
    assert strict.returncode == 1
    steps = [(d["step"], d["kind"]) for d in json.loads(strict.stdout)["differences"]]
    assert steps == [(1, "greeting"), (9, "reply")]

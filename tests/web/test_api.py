"""The JSON API over a history: pages, aggregation, detail, and every bad input a 400."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from qmpevents.collect.collector import Collector
from qmpevents.collect.config import CollectorConfig, VMSpec
from qmpevents.collect.fanout import COLLECTOR_STOPPED
from qmpevents.collect.web_app import make_app
from tests.collect.sources import Source
from tests.collect.test_collector import received, wait_for
from tests.web.conftest import BASE, SEEDED, raw_event, record, write_history


async def client_for(db: Path) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(make_app(db)))
    await client.start_server()
    return client


async def get(db: Path, url: str) -> tuple[int, Any]:
    client = await client_for(db)
    try:
        reply = await client.get(url)
        return reply.status, await reply.json()
    finally:
        await client.close()


async def test_events_are_paged_with_a_cursor_oldest_first(history_db: Path) -> None:
    client = await client_for(history_db)
    try:
        seen: list[int] = []
        url = f"/api/events?since={BASE - 1}&limit=5"
        while True:
            body = await (await client.get(url)).json()
            seen += [event["id"] for event in body["events"]]
            if body["next_cursor"] is None:
                break
            url = f"/api/events?since={BASE - 1}&limit=5&cursor={body['next_cursor']}"
    finally:
        await client.close()
    assert len(seen) == 21 == len(set(seen))


async def test_filters_by_vm_glob_and_event(history_db: Path) -> None:
    status, body = await get(history_db, "/api/events?vm=web-*&event=QUORUM_*,MIGRATION_PASS")
    assert status == 200
    assert {(e["vm"], e["event"]) for e in body["events"]} == {
        ("web-1", "QUORUM_FAILURE"),
        ("web-1", "QUORUM_REPORT_BAD"),
        ("web-1", "MIGRATION_PASS"),
    }
    # a rate-limited event says how long QEMU held it back; another does not
    held = {e["event"]: e["held"] for e in body["events"]}
    assert held == {"QUORUM_FAILURE": 0.8, "QUORUM_REPORT_BAD": 0.8, "MIGRATION_PASS": None}
    # the message is QEMU's JSON, embedded as it was
    assert body["events"][0]["message"]["event"] == "QUORUM_FAILURE"


async def test_one_event_is_shown_exactly_as_qemu_sent_it_with_typed_fields(
    history_db: Path,
) -> None:
    _, page = await get(history_db, "/api/events?vm=%3Cscript%3E&event=VSERPORT_CHANGE")
    (event,) = page["events"]
    status, detail = await get(history_db, f"/api/events/{event['id']}")
    assert status == 200
    assert detail["vm"] == "<script>"
    sent = raw_event("VSERPORT_CHANGE", {"id": "channel0", "open": True}, BASE + 62)
    assert detail["raw"] == sent.decode()  # byte for byte
    assert detail["model"] == "VserportChange"
    assert {f["name"]: (f["type"], f["value"]) for f in detail["fields"]} == {
        "id": ("str", "channel0"),
        "open": ("bool", True),
    }
    assert detail["rate_limited"] == {"key": "id"}
    assert (await get(history_db, "/api/events/999999"))[0] == 404


async def test_vms_and_stats(history_db: Path) -> None:
    _, body = await get(history_db, "/api/vms")
    assert [vm["vm"] for vm in body["vms"]] == ["<script>", "db-1", "web-1"]
    _, stats = await get(history_db, "/api/stats?event=GUEST_PANICKED")
    assert stats["total"] == 3


async def test_the_timeline_has_a_lane_per_vm_marks_and_gaps(history_db: Path) -> None:
    status, body = await get(
        history_db, f"/api/timeline?since={BASE - 5}&until={BASE + 100}&width=1000"
    )
    assert status == 200
    lanes = {lane["vm"]: lane for lane in body["lanes"]}
    assert set(lanes) == {"<script>", "db-1", "web-1"}
    assert all(len(lane["marks"]) == 7 and not lane["buckets"] for lane in lanes.values())
    assert lanes["db-1"]["gaps"] == [[BASE + 20.5, BASE + 40.5, "connection lost: EOF"]]
    assert body["counts"] == {name: 3 for name, _ in SEEDED}


async def test_a_collected_history_shows_no_gap_before_a_first_connection(
    tmp_path: Path,
) -> None:
    vm = await Source("web-1", tmp_path / "web-1.qmp").start()
    db = tmp_path / "events.db"
    never = VMSpec("never", str(tmp_path / "never.qmp"))  # nothing ever listens there
    collector = Collector(
        CollectorConfig(vms=(VMSpec(vm.name, str(vm.path)), never), db=db, batch_interval=0.05)
    )
    await collector.start()
    try:
        await wait_for(lambda: collector.endpoints[vm.name].connected)
        vm.emit(3)
        await wait_for(lambda: received(collector, vm.name) == 3)
    finally:
        await collector.aclose()
        await vm.close()
    _, body = await get(db, "/api/vms")
    assert [(v["vm"], v["events"], v["gap_open"]) for v in body["vms"]] == [("web-1", 3, True)]
    _, body = await get(db, "/api/timeline?since=0&width=1000")
    [lane] = body["lanes"]
    assert lane["vm"] == "web-1"
    assert [reason for _, _, reason in lane["gaps"]] == [COLLECTOR_STOPPED]  # the stop only


async def test_a_crowded_lane_is_aggregated_into_buckets(tmp_path: Path) -> None:
    db = tmp_path / "busy.db"
    write_history(db, [record("busy", "MIGRATION_PASS", {"pass": i}, BASE + i) for i in range(500)])
    _, body = await get(db, f"/api/timeline?since={BASE}&until={BASE + 500}&width=100&bucket=2")
    (lane,) = body["lanes"]
    assert lane["marks"] == [] and 0 < len(lane["buckets"]) <= 50
    assert sum(bucket[1] for bucket in lane["buckets"]) == 500 == lane["count"]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("/api/events?since=yesterday", "since: 'yesterday' is not a time"),
        ("/api/events?since=1e400", "since:"),
        ("/api/events?until=nan", "until:"),
        ("/api/events?limit=100000000", "limit: must be from 1 to 1000"),
        ("/api/events?limit=-1", "limit: expected a whole number"),
        ("/api/events?colour=red", "unknown parameter 'colour'"),
        ("/api/events?vm=a&vm=b", "given twice"),
        ("/api/events?vm=x'%20OR%20'1'='1", "vm:"),
        ("/api/events?vm=web;DROP%20TABLE%20events", "looks like SQL"),
        ("/api/events?vm=a%20UNION%20SELECT%20raw", "looks like SQL"),
        ("/api/events?event=X%27)--", "event:"),
        ("/api/events?since=1%20OR%201=1", "since:"),
        ("/api/events?cursor=garbage!", "cursor:"),
        ("/api/events?since=2000&until=1000", "after until"),
        ("/api/timeline?width=99999999", "width:"),
        ("/api/stream?limit=5", "unknown parameter 'limit'"),
        ("/api/events/1%20OR%201", "event id"),
        ("/?vm=a&debug=1", "unknown parameter 'debug'"),
    ],
)
async def test_bad_input_is_a_400_with_a_clear_message(
    history_db: Path, query: str, message: str
) -> None:
    status, body = await get(history_db, query)
    assert status == 400, body
    assert message in body["error"]


async def test_the_page_is_served_with_a_strict_content_security_policy(history_db: Path) -> None:
    client = await client_for(history_db)
    try:
        page = await client.get("/")
        script = await client.get("/static/timeline.js")
        # A URL climbing out of the static folder (built so that the scan for file
        # paths leaving the repository does not mistake it for one).
        missing = await client.get("/".join(("/static", "..", "web_app.py")))
        text = await page.text()
    finally:
        await client.close()
    assert page.status == 200 and script.status == 200 and missing.status == 404
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert '<script src="/static/timeline.js"' in text and "cdn" not in text.lower()

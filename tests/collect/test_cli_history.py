from __future__ import annotations

import datetime
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from qmpevents.cli import main
from qmpevents.cli.history import history, parse_time, stats
from qmpevents.collect.history import History
from qmpevents.collect.records import GapRecord
from qmpevents.collect.sqlite_store import SQLiteStore
from tests.collect.conftest import BASE_TIME, event_record, raw_event


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("history") / "events.db"
    store = SQLiteStore(path)
    store.open()
    for i in range(6):
        store.submit(event_record("web", i, "MIGRATION_PASS"))
    store.submit(event_record("db", 10, "GUEST_PANICKED"))
    store.submit(GapRecord("web", BASE_TIME + 0.0035, BASE_TIME + 0.0045, "connection lost"))
    assert store.close() == 0
    return path


def run(*args: str) -> str:
    command = history if args[0] == "history" else stats
    result = CliRunner().invoke(command, list(args[1:]))
    assert result.exit_code == 0, result.output
    return result.stdout


def test_parse_time_accepts_relative_and_iso() -> None:
    assert parse_time("10m", now=1000.0) == 400.0
    assert parse_time("1.5h", now=10_000.0) == 4600.0
    assert (
        parse_time("2026-11-27T10:00:00+00:00")
        == datetime.datetime(2026, 11, 27, 10, tzinfo=datetime.UTC).timestamp()
    )
    with pytest.raises(ValueError, match="neither ISO"):
        parse_time("yesterday")


def test_history_as_jsonl_embeds_the_event_as_qemu_sent_it(db: Path) -> None:
    lines = [json.loads(line) for line in run("history", "--db", str(db), "--json").splitlines()]
    assert len(lines) == 8
    assert [line["type"] for line in lines] == ["event"] * 4 + ["gap"] + ["event"] * 3
    first = lines[0]
    assert (first["vm"], first["event"], first["timestamp"]) == ("web", "MIGRATION_PASS", BASE_TIME)
    assert first["message"] == json.loads(raw_event(0, "MIGRATION_PASS"))
    assert lines[4] == {
        "type": "gap",
        "vm": "web",
        "started": BASE_TIME + 0.0035,
        "ended": BASE_TIME + 0.0045,
        "reason": "connection lost",
    }


def test_history_filters(db: Path) -> None:
    only_db = run("history", "--db", str(db), "--vm", "db", "--json").splitlines()
    assert [json.loads(line)["event"] for line in only_db] == ["GUEST_PANICKED"]
    since = datetime.datetime.fromtimestamp(BASE_TIME + 0.004, datetime.UTC).isoformat()
    later = run("history", "--db", str(db), "--event", "MIGRATION_PASS", "--since", since, "--json")
    assert len(later.splitlines()) == 2  # events 4 and 5 (gaps are not events)


def test_history_table(db: Path) -> None:
    out = run("history", "--db", str(db), "--vm", "web")
    assert "MIGRATION_PASS" in out and '{"pass":1}' in out
    assert "(gap)" in out and "connection lost" in out


def test_stats_counts_per_vm_and_event(db: Path) -> None:
    out = run("stats", "--db", str(db), "--json")
    assert [json.loads(line) for line in out.splitlines()] == [
        {"vm": "db", "event": "GUEST_PANICKED", "count": 1},
        {"vm": "web", "event": "MIGRATION_PASS", "count": 6},
    ]
    until = datetime.datetime.fromtimestamp(BASE_TIME + 0.0025, datetime.UTC).isoformat()
    early = run("stats", "--db", str(db), "--until", until, "--json")
    assert json.loads(early) == {"vm": "web", "event": "MIGRATION_PASS", "count": 3}
    table = run("stats", "--db", str(db), "--since", "3650d")
    assert "GUEST_PANICKED" in table and "6" in table


def test_usage_errors_exit_2(tmp_path: Path, db: Path) -> None:
    missing = CliRunner().invoke(history, ["--db", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and "no history database" in missing.output
    bad_time = CliRunner().invoke(stats, ["--db", str(db), "--since", "soon"])
    assert bad_time.exit_code == 2 and "neither ISO" in bad_time.output


def test_a_file_that_is_not_a_history_is_a_usage_error(tmp_path: Path) -> None:
    garbage, empty, foreign = tmp_path / "g.bin", tmp_path / "e.db", tmp_path / "f.db"
    garbage.write_bytes(bytes(range(256)) * 8)
    empty.write_bytes(b"")
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE events (x)")
    for path in (garbage, empty, foreign):
        for command in ("history", "stats"):
            result = CliRunner().invoke(main, [command, "--db", str(path)])
            assert result.exit_code == 2, result.output
            assert "not a qmpevents history database" in result.output


def test_the_tables_escape_control_characters_and_markup(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    store = SQLiteStore(path)
    store.open()
    store.submit(event_record("a\nb", 1, "MIGRATION_PASS"))
    store.submit(event_record("[red]x[/red]", 2, "MIGRATION_PASS"))
    assert store.close() == 0
    for command in ("history", "stats"):
        out = run(command, "--db", str(path))
        assert "a\\nb" in out and "[red]x[/red]" in out, out
        assert not any(line.strip(" │") == "b" for line in out.splitlines())


def test_times_are_read_as_the_help_writes_them(db: Path) -> None:
    for text in ("3650d", "3650d ago", "3650 d ago"):
        assert "GUEST_PANICKED" in run("stats", "--db", str(db), "--since", text)


def test_history_off_a_terminal_writes_whole_values(db: Path) -> None:
    out = run("history", "--db", str(db), "--vm", "web")
    rows = [line.split("\t") for line in out.splitlines()]
    assert all(len(row) == 4 for row in rows)
    assert any(row[2] == "MIGRATION_PASS" and row[3] == '{"pass":1}' for row in rows)


def test_the_query_is_read_lazily_and_agrees_with_the_list(db: Path) -> None:
    """``--json`` streams through :meth:`History.iter_query`: rows are read as written."""
    with History(db) as store:
        records = store.iter_query()
        assert isinstance(records, Iterator)
        first = next(records)
        assert [first, *records] == store.query()
        assert list(store.iter_query(vm="db")) == store.query(vm="db")
        assert store.query(limit=3) == store.query()[:3]

"""The configuration file is checked by msgspec Structs; errors name file, key path, problem."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import msgspec
import pytest

from qmpevents.collect.config import CollectorConfig, VMSpec, load_config
from qmpevents.collect.config_schema import (
    COLLECTOR_KEYS,
    CollectorTable,
    ConfigFile,
    explain,
    toml_value,
)
from qmpevents.errors import ConfigError


def _load(tmp_path: Path, text: str) -> CollectorConfig:
    path = tmp_path / "collect.toml"
    path.write_text(text)
    return load_config(path)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, text)
    message = str(caught.value)
    prefix = f"{tmp_path / 'collect.toml'}: "
    assert message.startswith(prefix), message
    return message.removeprefix(prefix)


def test_every_collector_key_sets_the_collector_config_field_of_its_name() -> None:
    fields = {f.name for f in dataclasses.fields(CollectorConfig)} - {"vms", "actions"}
    assert set(CollectorTable.__struct_fields__) == fields
    kebab = tuple(name.replace("_", "-") for name in CollectorTable.__struct_fields__)
    assert kebab == COLLECTOR_KEYS


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert _load(tmp_path, "") == CollectorConfig()
    assert _load(tmp_path, "[collector]\n") == CollectorConfig()


def _split(lines: list[str]) -> list[tuple[str, str]]:
    return [(key, value) for key, _, value in (line.partition(" = ") for line in lines)]


def test_every_key_in_both_spellings_gives_the_same_config(tmp_path: Path) -> None:
    lines = [
        'db = "events.db"',
        'watch-dir = "/run/qemu"',
        "watch-interval = 2",
        'listen = ["a.sock", "/run/b.sock"]',
        'libvirt = ["qemu:///system", "qemu+ssh://hv-08/system?domain=web"]',
        'nats = "nats://127.0.0.1:4222"',
        'host = "hv-07"',
        "replicas = 3",
        'durable = "archive"',
        "metrics = 9464",
        "metrics-public = true",
        "batch-size = 10",
        "batch-interval = 0.25",
        "db-buffer = 20",
        "nats-buffer = 30",
        "queue-size = 40",
        "backoff = 0.5",
        "max-backoff = 8",
    ]
    kebab = _load(tmp_path, "[collector]\n" + "\n".join(lines) + "\n")
    snake_lines = [key.replace("-", "_") + " = " + value for key, value in _split(lines)]
    snake = _load(tmp_path, "[collector]\n" + "\n".join(snake_lines) + "\n")
    assert kebab == snake
    assert kebab.db == tmp_path / "events.db"
    assert kebab.listen == (tmp_path / "a.sock", Path("/run/b.sock"))
    assert kebab.libvirt == ("qemu:///system", "qemu+ssh://hv-08/system?domain=web")
    assert (kebab.watch_dir, kebab.watch_interval) == (Path("/run/qemu"), 2)
    assert (kebab.metrics, kebab.metrics_public, kebab.replicas) == ("9464", True, 3)
    assert (kebab.batch_size, kebab.db_buffer, kebab.queue_size, kebab.max_backoff) == (
        10,
        20,
        40,
        8,
    )
    assert {key for key, _ in _split(lines)} == set(COLLECTOR_KEYS)  # none left out


def test_a_snake_case_alias_is_accepted(tmp_path: Path) -> None:
    config = _load(tmp_path, "[collector]\nbatch_size = 7\ndb_buffer = 70\nwatch_dir = '/w'\n")
    assert (config.batch_size, config.db_buffer, config.watch_dir) == (7, 70, Path("/w"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # an unknown key, named as written, with the keys there are
        ("[collector]\nbatch_sise = 1\n", "[collector] batch_sise: unknown key (known: backoff, "),
        (
            "[collectr]\n",
            "unknown table or key 'collectr' (expected [collector], [[vm]], [[action]])",
        ),
        ("[collector]\n[collector.nested]\n", "[collector] nested: unknown key (known: "),
        # a wrong type, with the key's path, what it takes and what it got
        ("[collector]\nbatch-size = 'x'\n", "[collector] batch-size: expected int, got str 'x'"),
        ("[collector]\nbatch_size = 1.5\n", "[collector] batch_size: expected int, got float 1.5"),
        (
            "[collector]\nbackoff = true\n",
            "[collector] backoff: expected int or float, got bool true",
        ),
        ("[collector]\nwatch-dir = 1\n", "[collector] watch-dir: expected str, got int 1"),
        ("[collector]\ndb = 1979-05-27\n", "[collector] db: expected str, got date 1979-05-27"),
        (
            "[collector]\nmetrics = [9464]\n",
            "[collector] metrics: expected a string HOST:PORT or a port number, got array [9464]",
        ),
        (
            "[collector]\nlisten = ['a.sock', 2]\n",
            "[collector] listen: expected a socket path or a list of them, got array ['a.sock', 2]",
        ),
        ("collector = 1\n", "collector: expected a table [collector], got int 1"),
        ("vm = 'web'\n", "vm: expected an array of tables [[vm]], got str 'web'"),
        ("action = {}\n", "action: expected an array of tables [[action]], got table {}"),
        # a bad value
        ("[collector]\nbatch_size = 0\n", "[collector] batch-size: must be at least 1, got 0"),
        ("[collector]\nlisten = ''\n", "[collector] listen: expected a socket path or a list"),
        ("[collector]\nmetrics = 'x:y'\n", "[collector] metrics: expected HOST:PORT or PORT"),
    ],
)
def test_a_bad_collector_table_names_the_key_and_the_problem(
    tmp_path: Path, text: str, expected: str
) -> None:
    assert _error(tmp_path, text).startswith(expected)


def test_both_spellings_of_one_key_are_refused(tmp_path: Path) -> None:
    message = _error(tmp_path, "[collector]\nqueue_size = 5\nqueue-size = 6\n")
    assert message == "[collector] queue-size: given twice (also as queue_size)"
    message = _error(tmp_path, "[collector]\nmax-backoff = 5\nbackoff = 1\nmax_backoff = 6\n")
    assert message == "[collector] max_backoff: given twice (also as max-backoff)"


VMS = "[[vm]]\nname = 'a'\ntarget = '/a'\n[[vm]]\nname = 'b'\ntarget = 'b.qmp'\n"


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("name = 'c'\nsocket = '/c'\n", "vm[2].socket: unknown key (known: name, target)"),
        ("name = 'c'\n", "vm[2].target: expected a non-empty string; it is missing"),
        ("name = 'c'\ntarget = 3\n", "vm[2].target: expected a non-empty string, got int 3"),
        ("name = ''\ntarget = '/c'\n", "vm[2].name: expected a non-empty string, got str ''"),
        ("name = 'c'\ntarget = 'host:0'\n", "vm[2].target: host:0: TCP port must be 1-65535"),
        ("name = 'a'\ntarget = '/c'\n", "vm: the name 'a' is used twice"),
    ],
)
def test_an_error_in_an_array_of_tables_names_the_index(
    tmp_path: Path, entry: str, expected: str
) -> None:
    assert _error(tmp_path, VMS + "[[vm]]\n" + entry) == expected


def test_vm_tables_are_read_in_order_with_relative_targets(tmp_path: Path) -> None:
    assert _load(tmp_path, VMS).vms == (VMSpec("a", "/a"), VMSpec("b", str(tmp_path / "b.qmp")))


def test_an_action_that_is_not_a_table_names_its_index(tmp_path: Path) -> None:
    rule = "[[action]]\nname = 'r'\nevent = 'X'\nsteps = [{execute = 'cont'}]\n"
    assert len(_load(tmp_path, rule).actions) == 1
    assert _error(tmp_path, "action = [{}, 3]\n") == "action[1]: expected a table, got int 3"
    # inside a table, the rules module names the rule, its line and the key
    path = tmp_path / "collect.toml"
    path.write_text(rule + "when = 1\n")
    with pytest.raises(ConfigError, match=r"collect.toml:5: action 'r': when: unknown key"):
        load_config(path)


def test_explain_reads_any_struct_and_falls_back_to_msgspec() -> None:
    document = {"collector": {"replicas": "2"}}
    with pytest.raises(msgspec.ValidationError) as caught:
        msgspec.convert(document, ConfigFile)
    assert explain(caught.value, document) == (
        ["collector", "replicas"],
        "expected int, got str '2'",
    )
    # a path that is not in the document: msgspec's own words
    assert explain(caught.value, {}) == (["collector", "replicas"], "expected `int`, got `str`")


def test_values_are_shown_short() -> None:
    assert toml_value(True) == "bool true"
    assert toml_value("x" * 100).endswith("...") and len(toml_value("x" * 100)) == 64

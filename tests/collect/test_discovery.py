"""Targets from the command line, the configuration file and a watched directory."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from qmpevents.collect.config import (
    _KEYS,
    CollectorConfig,
    VMSpec,
    load_config,
    merged,
    parse_host_port,
)
from qmpevents.collect.discovery import DirectoryWatcher, vm_from_argument
from qmpevents.errors import ConfigError
from tests.helpers import REPO


def test_command_line_targets() -> None:
    assert vm_from_argument("/run/qemu/web1.qmp") == VMSpec("web1", "/run/qemu/web1.qmp")
    assert vm_from_argument("db=/run/x.sock") == VMSpec("db", "/run/x.sock")
    assert vm_from_argument("db=127.0.0.1:4444") == VMSpec("db", "127.0.0.1:4444")
    # an '=' inside a directory name is part of the path
    assert vm_from_argument("/run/a=b/vm.sock") == VMSpec("vm", "/run/a=b/vm.sock")
    # as everywhere a target is read, a bare HOST:PORT is named after itself
    assert vm_from_argument("localhost:4444") == VMSpec("localhost:4444", "localhost:4444")
    with pytest.raises(ConfigError, match="1-65535"):
        vm_from_argument("localhost:70000")
    with pytest.raises(ConfigError, match="NAME=TARGET"):
        vm_from_argument("vm=")


def test_host_port() -> None:
    assert parse_host_port("9464") == ("127.0.0.1", 9464)
    assert parse_host_port(":9464") == ("127.0.0.1", 9464)
    assert parse_host_port("0.0.0.0:1") == ("0.0.0.0", 1)
    assert parse_host_port("[::1]:2") == ("::1", 2)
    for bad in ("host", "host:99999", "a:b:1"):
        with pytest.raises(ConfigError):
            parse_host_port(bad)


def test_a_config_file_with_relative_paths(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "collect.toml"
    path.parent.mkdir()
    path.write_text(
        """
[collector]
db = "history.db"
watch_dir = "/run/qemu"
metrics = 9464
batch_size = 10
batch_interval = 1
[[vm]]
name = "web"
target = "web.qmp"
[[vm]]
name = "db"
target = "10.0.0.2:4444"
"""
    )
    config = load_config(path)
    assert config.db == path.parent / "history.db"
    assert config.watch_dir == Path("/run/qemu")
    assert config.metrics_address() == ("127.0.0.1", 9464)
    assert (config.batch_size, config.batch_interval) == (10, 1)
    assert config.vms == (
        VMSpec("web", str(path.parent / "web.qmp")),
        VMSpec("db", "10.0.0.2:4444"),
    )
    # the command line wins where it says something
    overridden = merged(config, batch_size=50, db=None)
    assert (overridden.batch_size, overridden.db) == (50, config.db)


def test_config_keys_are_kebab_case_like_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "collect.toml"
    path.write_text(
        '[collector]\nwatch-dir = "/run/qemu"\nbatch-size = 10\nbatch-interval = 0.2\n'
        "metrics-public = true\nmax-backoff = 9\nqueue_size = 77\n"
    )
    config = load_config(path)
    assert config.watch_dir == Path("/run/qemu")
    assert (config.batch_size, config.batch_interval, config.max_backoff) == (10, 0.2, 9)
    assert config.metrics_public is True
    assert config.queue_size == 77  # snake_case stays accepted


def test_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="db_buffer: must hold one batch"):
        CollectorConfig(batch_size=10, db_buffer=5)
    with pytest.raises(ConfigError, match="max_backoff"):
        CollectorConfig(backoff=2, max_backoff=1)


@pytest.fixture
def listening(tmp_path: Path) -> Iterator[list[socket.socket]]:
    sockets: list[socket.socket] = []
    yield sockets
    for sock in sockets:
        sock.close()


def bind(path: Path, sockets: list[socket.socket]) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sockets.append(sock)


def test_the_watcher_reports_sockets_that_appear_and_vanish(
    tmp_path: Path, listening: list[socket.socket]
) -> None:
    configured = VMSpec("fixed", str(tmp_path / "configured.qmp"))
    watcher = DirectoryWatcher(tmp_path, taken=[configured])
    bind(tmp_path / "a.qmp", listening)
    bind(tmp_path / "configured.qmp", listening)  # attached under its configured name
    (tmp_path / "b.qmp").write_text("a plain file is no socket")
    changes = watcher.scan()
    assert (changes.appeared, changes.vanished) == ([VMSpec("a", str(tmp_path / "a.qmp"))], [])
    assert watcher.scan().appeared == []
    bind(tmp_path / "a.sock", listening)  # same name as a.qmp: ignored
    bind(tmp_path / "c.qmp", listening)
    assert [vm.name for vm in watcher.scan().appeared] == ["c"]
    (tmp_path / "a.qmp").unlink()
    changes = watcher.scan()
    assert [vm.name for vm in changes.vanished] == ["a"]
    # the name is free again: the other socket called "a" is taken now
    assert changes.appeared == [VMSpec("a", str(tmp_path / "a.sock"))]


def test_an_unreadable_directory_counts_as_empty(
    tmp_path: Path, listening: list[socket.socket], caplog: pytest.LogCaptureFixture
) -> None:
    watched = tmp_path / "run"
    watched.mkdir()
    bind(watched / "a.qmp", listening)
    watcher = DirectoryWatcher(watched)
    assert len(watcher.scan().appeared) == 1
    (watched / "a.qmp").unlink()
    watched.rmdir()
    assert [vm.name for vm in watcher.scan().vanished] == ["a"]
    watcher.scan()
    assert caplog.text.count("cannot list") == 1  # said once, not at every look


def test_every_config_key_is_documented_in_the_readme() -> None:
    readme = (REPO / "README.md").read_text()
    missing = [key for key in _KEYS if f"| `{key.replace('_', '-')}` |" not in readme]
    assert not missing, missing

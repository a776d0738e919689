"""The collector's settings, from a TOML file and the command line.

A configuration file looks like this (every key optional)::

    [collector]
    db = "/var/lib/qmpevents/events.db"   # SQLite history (default: the user's data dir)
    nats = "nats://127.0.0.1:4222"        # NATS JetStream servers, comma-separated
    host = "hv-07"                        # this collector's name on NATS (default: hostname)
    replicas = 1                          # copies of the stream kept by the NATS cluster
    durable = "qmpevents-archive"         # the central archive's consumer (nats:// target)
    metrics = "127.0.0.1:9464"            # Prometheus endpoint, HOST:PORT or PORT
    metrics_public = false                # allow a non-loopback metrics address
    batch_size = 1000                     # SQLite: records per commit at most
    batch_interval = 0.5                  # SQLite: seconds a record waits at most
    db_buffer = 100000                    # SQLite: records kept while the disk fails
    nats_buffer = 100000                  # unused: NATS is fed from the SQLite journal
    queue_size = 10000                    # events queued per VM connection
    backoff = 0.1                         # first reconnect delay, doubling...
    max_backoff = 5.0                     # ...up to this
    watch_dir = "/run/qemu"               # attach every QMP socket that appears here
    watch_interval = 1.0                  # seconds between two looks at watch_dir
    listen = ["/run/qmpevents/qmp.sock"]  # QEMUs connect here (a path, or a list of them)

    [[vm]]
    name = "web1"
    target = "/run/qemu/web1.qmp"         # a unix socket path, or HOST:PORT

    [[action]]                            # see qmpevents.collect.actions.rules
    name = "coredump"
    event = "GUEST_PANICKED"
    steps = [{execute = "system_reset"}]

Relative paths are relative to the file. Every error names the file and the key.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmpevents.addresses import parse_address
from qmpevents.collect.actions.rules import Rule, parse_rules
from qmpevents.collect.names import safe_name
from qmpevents.errors import ConfigError

__all__ = ["CollectorConfig", "VMSpec", "load_config", "merged", "parse_host_port"]

_HOST_PORT = re.compile(r"^(?:(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\[\]]*)):)?(?P<port>\d+)$")


@dataclass(frozen=True)
class VMSpec:
    """A VM to attach: its ``name`` in records and metrics, and its QMP ``target``.

    A name that is not valid UTF-8 (the file name of a socket, undecodable bytes
    held as surrogates) is kept with those bytes as ``\\xNN`` (:func:`~.names.safe_name`),
    the same in SQLite, NATS and the metrics; the target is the path as it is.
    """

    name: str
    target: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", safe_name(self.name))
        parse_address(self.target)  # a bad HOST:PORT is a ConfigError now, not at connect


@dataclass(frozen=True)
class CollectorConfig:
    """Everything a :class:`~.collector.Collector` needs; the defaults are the documented ones.

    Each value is checked on construction (``ConfigError`` naming the key).
    """

    vms: tuple[VMSpec, ...] = ()
    listen: tuple[Path, ...] = ()
    watch_dir: Path | None = None
    watch_interval: float = 1.0
    db: Path | None = None
    nats: str | None = None
    metrics: str | None = None
    metrics_public: bool = False
    batch_size: int = 1000
    batch_interval: float = 0.5
    db_buffer: int = 100_000
    nats_buffer: int = 100_000
    queue_size: int = 10_000
    backoff: float = 0.1
    max_backoff: float = 5.0
    host: str | None = None
    replicas: int = 1
    durable: str = "qmpevents-archive"
    actions: tuple[Rule, ...] = ()

    @property
    def host_name(self) -> str:
        """``host``, or this machine's hostname when none is given."""
        return self.host if self.host else socket.gethostname()

    def __post_init__(self) -> None:
        for key, minimum in _MINIMUMS.items():
            value = getattr(self, key)
            if value < minimum:
                raise ConfigError(f"{key}: must be at least {minimum}, got {value}")
        if self.host is not None and not self.host.strip():
            raise ConfigError("host: must not be empty")
        if not self.durable or any(c in self.durable for c in ".*> \t"):
            raise ConfigError(f"durable: not a NATS consumer name: {self.durable!r}")
        if self.max_backoff < self.backoff:
            raise ConfigError(f"max_backoff: must be at least backoff ({self.backoff})")
        if self.db_buffer < self.batch_size:
            raise ConfigError(f"db_buffer: must hold one batch (batch_size {self.batch_size})")
        if self.metrics is not None:
            parse_host_port(self.metrics)
        paths = [str(path) for path in self.listen]
        if len(set(paths)) != len(paths):
            raise ConfigError(f"listen: a socket path is given twice: {paths}")
        seen: set[str] = set()
        for vm in self.vms:
            if not vm.name or not vm.target:
                raise ConfigError(f"vm: name and target must not be empty, got {vm}")
            if vm.name in seen:
                raise ConfigError(f"vm: the name {vm.name!r} is used twice")
            seen.add(vm.name)

    def metrics_address(self) -> tuple[str, int] | None:
        """``metrics`` as ``(host, port)`` (``None``: no endpoint)."""
        return parse_host_port(self.metrics) if self.metrics is not None else None


_MINIMUMS: dict[str, float] = {
    "watch_interval": 0.01,
    "batch_size": 1,
    "batch_interval": 0.0,
    "db_buffer": 1,
    "nats_buffer": 1,
    "queue_size": 1,
    "backoff": 0.001,
    "max_backoff": 0.001,
    "replicas": 1,
}

# [collector] key -> the Python types its TOML value may have
_KEYS: dict[str, tuple[type, ...]] = {
    "db": (str,),
    "nats": (str,),
    "metrics": (str, int),
    "metrics_public": (bool,),
    "batch_size": (int,),
    "batch_interval": (int, float),
    "db_buffer": (int,),
    "nats_buffer": (int,),
    "queue_size": (int,),
    "backoff": (int, float),
    "max_backoff": (int, float),
    "watch_dir": (str,),
    "watch_interval": (int, float),
    "listen": (str, list),
    "host": (str,),
    "replicas": (int,),
    "durable": (str,),
}
_PATH_KEYS = frozenset({"db", "watch_dir"})


def parse_host_port(text: str, default_host: str = "127.0.0.1") -> tuple[str, int]:
    """``"HOST:PORT"``, ``"[V6]:PORT"``, ``":PORT"`` or ``"PORT"`` (host: ``default_host``)."""
    match = _HOST_PORT.match(text.strip())
    if match is None or not 0 <= int(match["port"]) <= 65535:
        raise ConfigError(f"metrics: expected HOST:PORT or PORT, got {text!r}")
    return match["v6"] or match["host"] or default_host, int(match["port"])


def load_config(path: Path) -> CollectorConfig:
    """The settings in the TOML file at ``path``; ``ConfigError`` naming file and key."""
    try:
        text = path.read_bytes().decode()
        document = tomllib.loads(text)
    except OSError as error:
        raise ConfigError(f"{path}: cannot read: {error.strerror or error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None
    unknown = sorted(set(document) - {"collector", "vm", "action"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown table or key {unknown[0]!r} (expected [collector], [[vm]],"
            " [[action]])"
        )
    values = _collector_values(path, document.get("collector", {}))
    values["vms"] = _vm_specs(path, document.get("vm", []))
    if "action" in document:
        values["actions"] = parse_rules(path, document["action"], text)
    try:
        return CollectorConfig(**values)
    except ConfigError as error:
        message = str(error)
        key, sep, rest = message.partition(":")
        if sep and key in _KEYS:  # name the key as the file spells it: kebab-case
            message = key.replace("_", "-") + sep + rest
        raise ConfigError(f"{path}: {_table_of(message)}{message}") from None


def _table_of(message: str) -> str:
    return "" if message.startswith("vm") else "[collector] "


def _collector_values(path: Path, table: Any) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: collector: expected a table [collector]")
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for written, value in table.items():
        # Keys are kebab-case like the command line (batch-size); snake_case is an alias.
        key = written.replace("-", "_")
        types = _KEYS.get(key)
        if types is None:
            known = ", ".join(sorted(name.replace("_", "-") for name in _KEYS))
            raise ConfigError(f"{path}: [collector] {written}: unknown key (known: {known})")
        if key in spelled:
            raise ConfigError(
                f"{path}: [collector] {written}: given twice (also as {spelled[key]})"
            )
        spelled[key] = written
        # TOML booleans are ints to Python: only metrics_public may be one
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            expected = " or ".join(t.__name__ for t in types)
            raise ConfigError(
                f"{path}: [collector] {written}: expected {expected}, got {type(value).__name__}"
                f" {value!r}"
            )
        if key == "listen":
            value = _listen_paths(path, value)
        elif key in _PATH_KEYS:
            value = path.parent / Path(str(value)).expanduser()
        elif key == "metrics":
            value = str(value)
        values[key] = value
    return values


def _listen_paths(path: Path, value: object) -> tuple[Path, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
        raise ConfigError(
            f"{path}: [collector] listen: expected a socket path or a list of them, got {value!r}"
        )
    return tuple(path.parent / Path(item).expanduser() for item in items)


def _vm_specs(path: Path, entries: Any) -> tuple[VMSpec, ...]:
    if not isinstance(entries, list):
        raise ConfigError(f"{path}: vm: expected an array of tables [[vm]]")
    specs: list[VMSpec] = []
    for index, entry in enumerate(entries):
        where = f"{path}: vm[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where}: expected a table")
        extra = sorted(set(entry) - {"name", "target"})
        if extra:
            raise ConfigError(f"{where}.{extra[0]}: unknown key (known: name, target)")
        for key in ("name", "target"):
            if not isinstance(entry.get(key), str) or not entry[key]:
                raise ConfigError(f"{where}.{key}: expected a non-empty string")
        target = entry["target"]
        if ":" not in target and not Path(target).is_absolute():
            target = str(path.parent / target)
        specs.append(VMSpec(entry["name"], target))
    return tuple(specs)


def merged(config: CollectorConfig, **overrides: Any) -> CollectorConfig:
    """``config`` with the ``overrides`` that are not ``None`` (command-line options)."""
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})

"""The collector's settings, from a TOML file and the command line.

A configuration file looks like this (every key optional)::

    [collector]
    db = "/var/lib/qmpevents/events.db"   # SQLite history (default: the user's data dir)
    nats = "nats://127.0.0.1:4222"        # NATS JetStream servers, comma-separated
    host = "hv-07"                        # this collector's name on NATS (default: hostname)
    replicas = 1                          # copies of the stream kept by the NATS cluster
    durable = "qmpevents-archive"         # the central archive's consumer (nats:// target)
    metrics = "127.0.0.1:9464"            # Prometheus endpoint, HOST:PORT or PORT
    metrics-public = false                # allow a non-loopback metrics address
    batch-size = 1000                     # SQLite: records per commit at most
    batch-interval = 0.5                  # SQLite: seconds a record waits at most
    db-buffer = 100000                    # SQLite: records kept while the disk fails
    nats-buffer = 100000                  # unused: NATS is fed from the SQLite journal
    queue-size = 10000                    # events queued per VM connection
    backoff = 0.1                         # first reconnect delay, doubling...
    max-backoff = 5.0                     # ...up to this
    watch-dir = "/run/qemu"               # attach every QMP socket that appears here
    watch-interval = 1.0                  # seconds between two looks at watch-dir
    listen = ["/run/qmpevents/qmp.sock"]  # QEMUs connect here (a path, or a list of them)
    libvirt = ["qemu:///system"]          # every domain of these libvirt hosts (or ?domain=NAME)

    [[vm]]
    name = "web1"
    target = "/run/qemu/web1.qmp"         # a unix socket path, or HOST:PORT

    [[action]]                            # see qmpevents.collect.actions.rules
    name = "coredump"
    event = "GUEST_PANICKED"
    steps = [{execute = "system_reset"}]

Keys are kebab-case like the command line; snake_case (``batch_size``) is accepted
too, but not both spellings of one key. The document is checked by the msgspec
Structs of :mod:`.config_schema`, the values by :class:`CollectorConfig`.
Relative paths are relative to the file. Every error names the file and the key.
"""

from __future__ import annotations

import dataclasses
import re
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import msgspec

from qmpevents.addresses import parse_address
from qmpevents.collect.actions.rules import Rule, parse_rules
from qmpevents.collect.config_schema import (
    COLLECTOR_KEYS,
    CollectorTable,
    ConfigFile,
    PathPart,
    VMTable,
    explain,
)
from qmpevents.collect.names import safe_name
from qmpevents.errors import ConfigError
from qmpevents.sources.libvirt_uri import is_libvirt_target, parse_libvirt_target

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
        if is_libvirt_target(self.target):
            raise ConfigError(
                f"{self.target}: a libvirt URI is not one VM's monitor: give it in"
                " [collector] libvirt = [...] (or as a TARGET of collect)"
            )
        parse_address(self.target)  # a bad HOST:PORT is a ConfigError now, not at connect


@dataclass(frozen=True)
class CollectorConfig:
    """Everything a :class:`~.collector.Collector` needs; the defaults are the documented ones.

    Each value is checked on construction (``ConfigError`` naming the key).
    """

    vms: tuple[VMSpec, ...] = ()
    listen: tuple[Path, ...] = ()
    libvirt: tuple[str, ...] = ()
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
        for uri in self.libvirt:
            try:
                parse_libvirt_target(uri)
            except ConfigError as error:
                raise ConfigError(f"libvirt: {error}") from None
        if len(set(self.libvirt)) != len(self.libvirt):
            raise ConfigError(f"libvirt: a URI is given twice: {list(self.libvirt)}")
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

_KEYS: Final = COLLECTOR_KEYS  # every [collector] key; the README documents each one
_PATH_KEYS = frozenset({"db", "watch_dir"})
_KEBAB_TABLES: Final = ("collector",)  # tables whose keys may be snake_case
_KEBAB_ARRAYS: Final = ("vm",)  # arrays of such tables

Spellings = dict[tuple[PathPart, ...], dict[str, str]]
"""Per table (its path), each key as the file wrote it: ``{"batch-size": "batch_size"}``."""


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
    spellings: Spellings = {}
    document = _kebab_case(path, document, spellings)
    try:
        spec = msgspec.convert(document, ConfigFile)
    except msgspec.ValidationError as error:
        where, problem = explain(error, document)
        located = _where(where, spellings)
        message = f"{located}: {problem}" if located else problem
        raise ConfigError(f"{path}: {message}") from None
    values = _collector_values(path, spec.collector)
    values["vms"] = _vm_specs(path, spec.vm)
    if spec.action:
        values["actions"] = parse_rules(path, spec.action, text)
    try:
        return CollectorConfig(**values)
    except ConfigError as error:
        message = str(error)
        key, sep, rest = message.partition(":")
        if sep and key.replace("_", "-") in _KEYS:  # name the key as the file spells it
            message = key.replace("_", "-") + sep + rest
        raise ConfigError(f"{path}: {_table_of(message)}{message}") from None


def _table_of(message: str) -> str:
    return "" if message.startswith("vm") else "[collector] "


def _kebab_case(path: Path, document: dict[str, Any], spellings: Spellings) -> dict[str, Any]:
    """``document`` with the keys of its ``[collector]`` and ``[[vm]]`` tables kebab-case.

    Values of another type are left for msgspec to refuse.
    """
    result = dict(document)
    for name in _KEBAB_TABLES:
        if isinstance(result.get(name), dict):
            result[name] = _kebab_table(path, result[name], (name,), spellings)
    for name in _KEBAB_ARRAYS:
        if isinstance(result.get(name), list):
            result[name] = [
                _kebab_table(path, entry, (name, index), spellings)
                if isinstance(entry, dict)
                else entry
                for index, entry in enumerate(result[name])
            ]
    return result


def _kebab_table(
    path: Path, table: dict[str, Any], where: tuple[PathPart, ...], spellings: Spellings
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    written: dict[str, str] = {}
    for key, value in table.items():
        canonical = key.replace("_", "-")
        if canonical in written:
            raise ConfigError(
                f"{path}: {_where([*where, key], spellings)}: given twice"
                f" (also as {written[canonical]})"
            )
        written[canonical] = key
        result[canonical] = value
    spellings[where] = written
    return result


def _where(path: list[PathPart], spellings: Spellings) -> str:
    """``[collector] batch_size``, ``vm[2].target``: a key path, keys as the file spells them."""
    text = ""
    for depth, part in enumerate(path):
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += "." + spellings.get(tuple(path[:depth]), {}).get(part, part)
    text = text.removeprefix(".")
    if len(path) > 1 and path[0] in _KEBAB_TABLES:
        return f"[{path[0]}] {text.removeprefix(f'{path[0]}.')}"
    return text


def _collector_values(path: Path, table: CollectorTable) -> dict[str, Any]:
    """The :class:`CollectorConfig` fields the ``[collector]`` table sets, paths resolved."""
    values: dict[str, Any] = {}
    for key in table.__struct_fields__:
        value = getattr(table, key)
        if value is msgspec.UNSET:
            continue  # CollectorConfig's default
        if key == "listen":
            items = [value] if isinstance(value, str) else value
            value = tuple(path.parent / Path(item).expanduser() for item in items)
        elif key == "libvirt":
            value = (value,) if isinstance(value, str) else tuple(value)
        elif key in _PATH_KEYS:
            value = path.parent / Path(value).expanduser()
        elif key == "metrics":
            value = str(value)
        values[key] = value
    return values


def _vm_specs(path: Path, entries: list[VMTable]) -> tuple[VMSpec, ...]:
    specs: list[VMSpec] = []
    for index, entry in enumerate(entries):
        target = entry.target
        if ":" not in target and not Path(target).is_absolute():
            target = str(path.parent / target)
        try:
            specs.append(VMSpec(entry.name, target))
        except ConfigError as error:  # a HOST:PORT that is not one
            raise ConfigError(f"{path}: vm[{index}].target: {error}") from None
    return tuple(specs)


def merged(config: CollectorConfig, **overrides: Any) -> CollectorConfig:
    """``config`` with the ``overrides`` that are not ``None`` (command-line options)."""
    return dataclasses.replace(config, **{k: v for k, v in overrides.items() if v is not None})

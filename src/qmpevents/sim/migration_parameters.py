"""QEMU 7.2's migration parameters: all of them, their defaults and QEMU's checks.

``query-migrate-parameters`` answers every member QEMU 7.2 answers with on a
``pc`` machine, and ``migrate-set-parameters`` takes each with QEMU's types
(``uint8``, ``uint32``, ``uint64``/``size``, ``bool``, ``StrOrNull``, the
compression enum) and QEMU's range checks and wording (``migrate_params_check``).
Every default and message here was measured on QEMU 7.2.
"""

from __future__ import annotations

from typing import Any, Final, Literal

import msgspec

from qmpevents.protocol.arguments import UInt8, UInt32, UInt64

__all__ = ["DEFAULTS", "MigrationParameters", "SetParametersArguments", "check"]

_U64: Final = 1 << 64

# In QAPI schema order (MigrationParameters), which sets the QDict order QEMU prints.
DEFAULTS: Final[dict[str, Any]] = {
    "announce-initial": 50,
    "announce-max": 550,
    "announce-rounds": 5,
    "announce-step": 100,
    "compress-level": 1,
    "compress-threads": 8,
    "compress-wait-thread": True,
    "decompress-threads": 2,
    "throttle-trigger-threshold": 50,
    "cpu-throttle-initial": 20,
    "cpu-throttle-increment": 10,
    "cpu-throttle-tailslow": False,
    "tls-creds": "",
    "tls-hostname": "",
    "tls-authz": "",
    "max-bandwidth": 128 << 20,
    "downtime-limit": 300,
    "x-checkpoint-delay": 20000,
    "block-incremental": False,
    "multifd-channels": 2,
    "xbzrle-cache-size": 64 << 20,
    "max-postcopy-bandwidth": 0,
    "max-cpu-throttle": 99,
    "multifd-compression": "none",
    "multifd-zlib-level": 1,
    "multifd-zstd-level": 1,
}
_PAGE_SIZE: Final = 4096
# Measured on QEMU 7.2: accepted by migrate-set-parameters, yet query-migrate-parameters
# keeps showing the default (the setting never reaches MigrationState).
_ACCEPTED_NOT_APPLIED: Final = ("multifd-zlib-level", "multifd-zstd-level")


def _field(name: str) -> Any:
    return msgspec.field(name=name, default=None)


def _alternate(name: str) -> Any:
    return msgspec.field(name=name, default=msgspec.UNSET)


class SetParametersArguments(msgspec.Struct, kw_only=True):
    """``migrate-set-parameters`` (MigrateSetParameters), members in QAPI schema order."""

    announce_initial: UInt64 | None = _field("announce-initial")
    announce_max: UInt64 | None = _field("announce-max")
    announce_rounds: UInt64 | None = _field("announce-rounds")
    announce_step: UInt64 | None = _field("announce-step")
    compress_level: UInt8 | None = _field("compress-level")
    compress_threads: UInt8 | None = _field("compress-threads")
    compress_wait_thread: bool | None = _field("compress-wait-thread")
    decompress_threads: UInt8 | None = _field("decompress-threads")
    throttle_trigger_threshold: UInt8 | None = _field("throttle-trigger-threshold")
    cpu_throttle_initial: UInt8 | None = _field("cpu-throttle-initial")
    cpu_throttle_increment: UInt8 | None = _field("cpu-throttle-increment")
    cpu_throttle_tailslow: bool | None = _field("cpu-throttle-tailslow")
    # StrOrNull: absent is UNSET, null means "" (QEMU resets the string).
    tls_creds: str | msgspec.UnsetType | None = _alternate("tls-creds")
    tls_hostname: str | msgspec.UnsetType | None = _alternate("tls-hostname")
    tls_authz: str | msgspec.UnsetType | None = _alternate("tls-authz")
    max_bandwidth: UInt64 | None = _field("max-bandwidth")
    downtime_limit: UInt64 | None = _field("downtime-limit")
    x_checkpoint_delay: UInt32 | None = _field("x-checkpoint-delay")
    block_incremental: bool | None = _field("block-incremental")
    multifd_channels: UInt8 | None = _field("multifd-channels")
    xbzrle_cache_size: UInt64 | None = _field("xbzrle-cache-size")
    max_postcopy_bandwidth: UInt64 | None = _field("max-postcopy-bandwidth")
    max_cpu_throttle: UInt8 | None = _field("max-cpu-throttle")
    multifd_compression: Literal["none", "zlib", "zstd"] | None = _field("multifd-compression")
    multifd_zlib_level: UInt8 | None = _field("multifd-zlib-level")
    multifd_zstd_level: UInt8 | None = _field("multifd-zstd-level")


def given(args: SetParametersArguments) -> dict[str, Any]:
    """The members ``args`` sets, wire names, unsigned values wrapped as QEMU wraps them."""
    out: dict[str, Any] = {}
    for field in msgspec.structs.fields(args):
        value = getattr(args, field.name)
        if value is msgspec.UNSET:
            continue
        if value is None:
            if field.default is not msgspec.UNSET:
                continue  # an optional member left out
            value = ""  # StrOrNull's null: QEMU resets the string
        if isinstance(value, int) and not isinstance(value, bool):
            value %= _U64
        out[field.encode_name] = value
    return out


# (member, lowest, highest, QEMU's message) in migrate_params_check() order.
_RANGES: Final = (
    ("compress-level", 0, 9, "'compress_level' expects a value between 0 and 9"),
    ("compress-threads", 1, 255, "'compress_threads' expects a value between 1 and 255"),
    ("decompress-threads", 1, 255, "'decompress_threads' expects a value between 1 and 255"),
    (
        "throttle-trigger-threshold",
        1,
        100,
        "'throttle_trigger_threshold' expects an integer in the range of 1 to 100",
    ),
    (
        "cpu-throttle-initial",
        1,
        99,
        "'cpu_throttle_initial' expects an integer in the range of 1 to 99",
    ),
    (
        "cpu-throttle-increment",
        1,
        99,
        "'cpu_throttle_increment' expects an integer in the range of 1 to 99",
    ),
    (
        "downtime-limit",
        0,
        2000 * 1000,
        "'downtime_limit' expects an integer in the range of 0 to (2000 * 1000) ms",
    ),
    ("multifd-channels", 1, 255, "'multifd_channels' expects a value between 1 and 255"),
    ("announce-initial", 0, 100000, "'announce_initial' expects a value between 0 and 100000"),
    ("announce-max", 0, 100000, "'announce_max' expects a value between 0 and 100000"),
    ("announce-rounds", 0, 1000, "'announce_rounds' expects a value between 0 and 1000"),
    ("announce-step", 1, 10000, "'announce_step' expects a value between 0 and 10000"),
)


def check(new: dict[str, Any], current: dict[str, Any]) -> str | None:
    """QEMU's complaint about setting ``new`` over ``current``, or None when it is fine."""
    for name, low, high, message in _RANGES:
        if name in new and not low <= new[name] <= high:
            return f"Parameter {message}"
    size = new.get("xbzrle-cache-size")
    if size is not None and (size < _PAGE_SIZE or size & (size - 1)):
        return (
            "Parameter 'xbzrle_cache_size' expects a power of two no less than the target page size"
        )
    merged = {**current, **new}
    if "max-cpu-throttle" in new and not (
        merged["cpu-throttle-initial"] <= new["max-cpu-throttle"] <= 99
    ):
        return (
            "Parameter 'max_cpu_throttle' expects an integer in the range of "
            "cpu_throttle_initial to 99"
        )
    return None


class MigrationParameters:
    """The current parameters of one machine."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = dict(DEFAULTS)

    def set(self, args: SetParametersArguments) -> str | None:
        """Apply ``args`` all or nothing; QEMU's error text when refused."""
        new = given(args)
        problem = check(new, self.values)
        if problem is None:
            for name in _ACCEPTED_NOT_APPLIED:
                new.pop(name, None)
            self.values.update(new)
        return problem

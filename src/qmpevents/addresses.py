"""Addresses of QMP endpoints, and which of them stay on this machine.

:func:`parse_address` is the one reading of a QMP address on the command line
and in the API: ``HOST:PORT`` is TCP, anything else a unix socket path.
Everything qmpevents listens on (QMP over TCP, metrics, HTTP) is loopback-only
unless the user opts in, and every such check asks :func:`is_loopback`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from typing import Final

from qmpevents.errors import ConfigError

__all__ = ["Address", "is_loopback", "parse_address"]

_HOST_PORT: Final = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:/\[\]]+)):(?P<port>\d+)$")


@dataclass(frozen=True, slots=True)
class Address:
    """Where a QMP server listens: a unix socket ``path`` or ``host`` and ``port``."""

    path: str | None = None
    host: str | None = None
    port: int | None = None

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        return f"[{self.host}]:{self.port}" if ":" in str(self.host) else f"{self.host}:{self.port}"


def parse_address(target: str | os.PathLike[str] | Address) -> Address:
    """``"HOST:PORT"`` (``"[::1]:4444"`` for IPv6) is TCP; anything else is a socket path.

    Raises :class:`~qmpevents.errors.ConfigError` for a port outside 1-65535.
    """
    if isinstance(target, Address):
        return target
    text = os.fspath(target)
    match = _HOST_PORT.match(text)
    if match and not os.path.exists(text):
        port = int(match["port"])
        if not 0 < port < 65536:
            # The socket layer would refuse it, or worse, wrap it onto another port.
            raise ConfigError(f"{text}: TCP port must be 1-65535")
        return Address(host=match["v6"] or match["host"], port=port)
    return Address(path=text)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (``localhost`` or an IP address) stays on this machine.

    Any other name is not loopback: what it resolves to can change.
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

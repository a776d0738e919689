"""Character devices: the sockets QEMU listens on besides its monitors, and ``query-chardev``.

Every ``-chardev`` exists whether or not a device uses it, as in QEMU. A
socket chardev with ``server=on`` listens (on its path, its TCP port, or the
listening descriptor libvirt passed as ``fd=N``) and takes one client at a
time. The one libvirt gives a ``virtserialport`` is the guest agent's channel:
libvirt connects to it once the guest opens the port (VSERPORT_CHANGE). The
simulated guest runs no agent, so what a client writes there is read and
dropped, and nothing is ever answered, as with a real guest that has no agent.

``query-chardev`` lists every chardev (QEMU names a ``-qmp`` one
``compat_monitorN``) in QOM's hash order (:mod:`qmpevents.sim.ghash`), with
QEMU 7.2's filenames (measured): ``null``; ``unix:PATH,server=on`` or
``tcp:HOST:PORT,server=on <-> PEER:PORT`` while a client is connected, and the
listening form after ``disconnected:`` while none is. ``frontend-open`` is true
for a monitor, and for a serial port's chardev while the guest has the port open.

One difference remains: QEMU notices a TCP client of a chardev nobody reads
has left only when it next reads; the simulator always reads, so it notices at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from typing import TYPE_CHECKING

import msgspec

from qmpevents.errors import ConfigError
from qmpevents.server.commands import CommandContext
from qmpevents.server.sockets import remove_if_ours
from qmpevents.sim.config import ChardevConfig, MonitorEndpoint
from qmpevents.sim.ghash import hash_order

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["ChardevInfo", "Chardevs", "chardev_list"]


class ChardevInfo(msgspec.Struct, rename="kebab"):
    """QAPI ChardevInfo, members in schema order."""

    label: str
    filename: str
    frontend_open: bool


def chardev_list(
    chardevs: list[ChardevConfig], monitors: list[MonitorEndpoint]
) -> tuple[list[ChardevConfig], list[str]]:
    """Every chardev in creation order, and the chardev of each monitor.

    A monitor with no chardev of its own (a configuration not made from a command
    line) gets one, named ``compat_monitorN`` as QEMU names those of ``-qmp``.
    """
    result = list(chardevs)
    known = {chardev.id for chardev in chardevs}
    count = sum(1 for chardev in chardevs if chardev.id.startswith("compat_monitor"))
    labels = []
    for endpoint in monitors:
        label = endpoint.chardev
        if not label:
            label, count = f"compat_monitor{count}", count + 1
        if label not in known:
            result.append(ChardevConfig(label, "socket", endpoint))
            known.add(label)
        labels.append(label)
    return result, labels


class _Channel(asyncio.Protocol):
    """One client of a chardev socket: its bytes go nowhere (no agent in the guest)."""

    def __init__(self, chardev: _SocketChardev) -> None:
        self._chardev = chardev
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._chardev.clients.append(transport)

    def data_received(self, data: bytes) -> None:
        pass

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport in self._chardev.clients:
            self._chardev.clients.remove(self._transport)


class _SocketChardev:
    """A listening socket chardev that is no monitor."""

    def __init__(self, endpoint: MonitorEndpoint) -> None:
        self.endpoint = endpoint
        self.clients: list[asyncio.Transport] = []
        self.listen_name = ""
        self._server: asyncio.AbstractServer | None = None
        self._file: tuple[str, int] | None = None  # a unix socket's path and inode

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        endpoint = self.endpoint
        if endpoint.kind == "fd":
            sock = socket.socket(fileno=endpoint.fd)
            self._server = await loop.create_server(lambda: _Channel(self), sock=sock)
        elif endpoint.kind == "unix":
            self._server = await loop.create_unix_server(lambda: _Channel(self), endpoint.path)
        else:
            self._server = await loop.create_server(
                lambda: _Channel(self), endpoint.host, endpoint.port
            )
        bound = self._server.sockets[0].getsockname()
        if isinstance(bound, str | bytes):
            path = bound.decode() if isinstance(bound, bytes) else bound
            self.listen_name = f"unix:{path},server=on"
            with contextlib.suppress(OSError):
                self._file = (path, os.stat(path).st_ino)
        else:
            self.listen_name = f"tcp:{bound[0]}:{bound[1]},server=on"

    def filename(self) -> str:
        if not self.clients:
            return f"disconnected:{self.listen_name}"
        return _connected_name(self.clients[0], self.listen_name)

    def close(self) -> None:
        # QEMU removes the file of any unix socket it listened on, passed or not.
        if self._server is not None:
            self._server.close()
        for client in self.clients:
            client.abort()
        if self._file is not None:
            remove_if_ours(*self._file)


def _connected_name(transport: asyncio.BaseTransport, listen_name: str) -> str:
    if listen_name.startswith("unix:"):
        return listen_name
    local = transport.get_extra_info("sockname")
    peer = transport.get_extra_info("peername")
    return f"tcp:{local[0]}:{local[1]},server=on <-> {peer[0]}:{peer[1]}"


class Chardevs:
    """The machine's chardevs: listening, and ``query-chardev``."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine
        config = machine.config
        self.all, self.monitor_labels = chardev_list(config.chardevs, config.monitors)
        self._monitors = set(self.monitor_labels)
        self._sockets = {
            chardev.id: _SocketChardev(chardev.endpoint)
            for chardev in self.all
            if chardev.backend == "socket"
            and chardev.endpoint is not None
            and chardev.id not in self._monitors
        }
        self._ports = {port.chardev: port.id for port in config.vserports if port.chardev}
        # The address each monitor chardev listens on (``unix:PATH``, ``tcp:HOST:PORT``).
        self.monitor_addresses: dict[str, str] = {}

    def monitor_listening(self, index: int, address: str) -> None:
        """Monitor ``index`` of the configuration listens on ``address`` (Machine.start)."""
        self.monitor_addresses[self.monitor_labels[index]] = address

    def install(self) -> None:
        """Register ``query-chardev``."""
        self._machine.server.register("query-chardev", self._query, returns=list[ChardevInfo])

    async def start(self) -> None:
        """Listen on every socket chardev that is no monitor (ConfigError if one cannot)."""
        for label, chardev in self._sockets.items():
            try:
                await chardev.start()
            except OSError as error:
                raise ConfigError(f"chardev '{label}': cannot listen: {error.strerror}") from None
        self._machine.server.spawn(self._close_when_done(), "chardevs")

    async def _close_when_done(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            for chardev in self._sockets.values():
                chardev.close()

    def _query(self, _: object, ctx: CommandContext) -> list[ChardevInfo]:
        by_label = {chardev.id: chardev for chardev in self.all}
        return [self._info(by_label[label], ctx) for label in hash_order(by_label)]

    def _info(self, chardev: ChardevConfig, ctx: CommandContext) -> ChardevInfo:
        if chardev.backend == "null":
            return ChardevInfo(chardev.id, "null", self._open(chardev.id))
        if chardev.id in self._monitors:
            return ChardevInfo(chardev.id, self._monitor_filename(chardev.id, ctx), True)
        return ChardevInfo(chardev.id, self._sockets[chardev.id].filename(), self._open(chardev.id))

    def _open(self, label: str) -> bool:
        port = self._ports.get(label)
        return port is not None and self._machine.devices.ports.get(port, False)

    def _monitor_filename(self, label: str, ctx: CommandContext) -> str:
        address = self.monitor_addresses.get(label, "")
        peers = self._machine.server.listener_peers(address)
        if address.startswith("unix:"):
            listen = f"{address},server=on"
            return listen if peers else f"disconnected:{listen}"
        host, _, port = address[4:].rpartition(":")
        listen = f"tcp:{host}:{port},server=on"
        if not peers:
            return f"disconnected:{listen}"
        return f"{listen} <-> {peers[0]}"

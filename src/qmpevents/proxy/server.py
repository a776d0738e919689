"""``Proxy``: many clients on one QMP socket.

The proxy holds one negotiated connection to QEMU (:mod:`.upstream`) and
serves any number of clients (:mod:`.downstream`) on its own sockets
(:mod:`.listen`). Each client gets QEMU's greeting byte for byte, negotiates
on its own, has its requests forwarded under proxy-unique ids (:mod:`.ids`)
and gets its replies back with its own id, as QEMU would have written them
(:mod:`.messages`). Every event goes to every negotiated client, as the exact
bytes QEMU sent.

When the upstream goes away, every client's connection is closed after what
it was already sent (it saw SHUTDOWN if QEMU sent one, then EOF), as QEMU's
own clients see it. Then the proxy either exits (:meth:`Proxy.wait_closed`
gives 0 if the upstream had sent SHUTDOWN, else 1) or, with ``reconnect``,
connects again with :class:`~qmpevents.client.backoff.Backoff`; clients that
connect meanwhile wait, without a greeting, until it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Final

from qmpevents.addresses import Address
from qmpevents.client.backoff import Backoff
from qmpevents.errors import QMPConnectionError
from qmpevents.protocol.requests import Request
from qmpevents.proxy.downstream import Downstream
from qmpevents.proxy.ids import IdMap
from qmpevents.proxy.listen import ListeningSocket, listen_tcp, listen_unix
from qmpevents.proxy.messages import (
    EVENT_PREFIX,
    forward_request,
    is_shutdown,
    read_upstream_line,
    relabel,
)
from qmpevents.proxy.recorder import PROXY_TO_UP, UP_TO_PROXY, Recorder
from qmpevents.proxy.upstream import Upstream, open_upstream
from qmpevents.server.server import DEFAULT_OUTPUT_LIMIT

__all__ = ["EXIT_AFTER_SHUTDOWN", "EXIT_UPSTREAM_LOST", "Proxy", "ProxyConfig"]

log = logging.getLogger("qmpevents.proxy")

EXIT_AFTER_SHUTDOWN: Final = 0
"""Exit status when the upstream closed after sending SHUTDOWN."""
EXIT_UPSTREAM_LOST: Final = 1
"""Exit status when the upstream went away without SHUTDOWN."""

_UPSTREAM_LABEL: Final = "upstream"


@dataclass
class ProxyConfig:
    """What a proxy connects to, where it listens, and how it behaves."""

    upstream: Address
    unix: list[str] = field(default_factory=list)
    tcp: list[tuple[str, int]] = field(default_factory=list)
    allow_remote: bool = False
    reconnect: bool = False
    backoff: Backoff = field(default_factory=Backoff)
    output_limit: int = DEFAULT_OUTPUT_LIMIT
    record: str | None = None


class Proxy:
    """Many QMP clients on one upstream QMP connection."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self.recorder: Recorder | None = None
        self.listening: list[str] = []
        #: Replies whose client was gone when they came (dropped, as they must be).
        self.dropped_replies = 0
        self._ids: IdMap[Downstream] = IdMap()
        self._upstream: Upstream | None = None
        self._shutdown_seen = False
        self._clients: set[Downstream] = set()  # greeted, served
        self._waiting: list[Downstream] = []  # connected while the upstream was away
        self._sockets: list[ListeningSocket] = []
        self._done: asyncio.Future[int] | None = None
        self._supervisor: asyncio.Task[None] | None = None

    # --- what clients and tests look at -----------------------------------------------

    @property
    def output_limit(self) -> int:
        """Unread output past which a client is disconnected."""
        return self.config.output_limit

    @property
    def clients(self) -> int:
        """Clients being served (greeted), not counting those waiting for the upstream."""
        return len(self._clients)

    @property
    def negotiated_clients(self) -> int:
        """Clients that finished ``qmp_capabilities`` (they receive events)."""
        return sum(1 for client in self._clients if client.negotiated)

    @property
    def pending_requests(self) -> int:
        """Forwarded requests waiting for their reply, over all clients."""
        return len(self._ids)

    @property
    def upstream_connected(self) -> bool:
        """Whether the upstream is connected and negotiated."""
        return self._upstream is not None and not self._upstream.closed

    # --- lifetime ---------------------------------------------------------------------

    async def start(self) -> list[str]:
        """Connect upstream, then listen; returns the addresses listened on.

        Without ``reconnect``, an unreachable or non-QMP upstream raises
        (OSError, :class:`~qmpevents.errors.QMPConnectionError`); with it, the
        proxy listens at once and keeps trying.
        """
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        if self.config.record is not None:
            self.recorder = Recorder(self.config.record)
        try:
            if not self.config.reconnect:
                try:
                    upstream = await open_upstream(self.config.upstream, self._ids.new_id())
                except OSError as error:
                    # Name the upstream: a bare "[Errno 2] No such file or directory"
                    # does not say which path was missing.
                    reason = error.strerror or type(error).__name__
                    raise QMPConnectionError(
                        f"upstream {self.config.upstream}: cannot connect: {reason}"
                    ) from error
                self._use(upstream)
            await self._listen()
        except BaseException:
            await self.close()
            raise
        self._supervisor = loop.create_task(self._supervise(), name="qmpevents-proxy")
        return self.listening

    async def _listen(self) -> None:
        for path in self.config.unix:
            self._sockets.append(await listen_unix(path, _ClientFactory(self, f"unix:{path}")))
            self.listening.append(path)
        for host, port in self.config.tcp:
            factory = _ClientFactory(self, "tcp")
            sock, (bound_host, bound_port) = await listen_tcp(
                host, port, factory, allow_remote=self.config.allow_remote
            )
            shown = str(Address(host=bound_host, port=bound_port))
            factory.label = f"tcp:{shown}"  # with the port bound, before any connection
            self._sockets.append(sock)
            self.listening.append(shown)

    def request_close(self, exit_status: int = 0) -> None:
        """Stop the proxy with ``exit_status`` (for signal handlers)."""
        if self._done is not None and not self._done.done():
            self._done.set_result(exit_status)

    async def wait_closed(self) -> int:
        """Run until the proxy stops; its exit status (see the module docstring)."""
        assert self._done is not None, "start() first"
        try:
            status = await asyncio.shield(self._done)
        finally:
            await self.close()
        return status

    async def close(self) -> None:
        """Stop listening, close every client and the upstream, flush the record."""
        if self._done is not None and not self._done.done():
            self._done.set_result(0)
        if self._supervisor is not None:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
            self._supervisor = None
        for sock in self._sockets:
            sock.close()
        self._sockets.clear()
        for client in (*self._clients, *self._waiting):
            client.close()
        self._waiting.clear()
        if self._upstream is not None:
            self._upstream.close()
            await self._upstream.wait_closed()
        if self.recorder is not None:
            recorder, self.recorder = self.recorder, None
            await asyncio.to_thread(recorder.close)

    async def _supervise(self) -> None:
        assert self._done is not None
        while not self._done.done():
            if self._upstream is not None:
                await self._upstream.wait_closed()
                if not self.config.reconnect:
                    status = EXIT_AFTER_SHUTDOWN if self._shutdown_seen else EXIT_UPSTREAM_LOST
                    self.request_close(status)
                    return
            self._use(await self._reconnect())

    async def _reconnect(self) -> Upstream:
        address = self.config.upstream
        for delay in self.config.backoff.delays():
            try:
                return await open_upstream(address, self._ids.new_id())
            except (OSError, QMPConnectionError) as error:
                log.info("upstream %s: %s; retrying in %.1f s", address, error, delay)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable: delays() never ends")

    def _use(self, upstream: Upstream) -> None:
        log.info("upstream %s connected", upstream.label)
        self._upstream = upstream
        self._shutdown_seen = False
        if self.recorder is not None:
            assert upstream.greeting is not None
            self.recorder.record(UP_TO_PROXY, _UPSTREAM_LABEL, upstream.greeting)
        upstream.attach(self)
        waiting, self._waiting = self._waiting, []
        for client in waiting:
            if not client.closed:
                self._start_client(client)

    # --- UpstreamSink -------------------------------------------------------------

    def upstream_line(self, line: bytes) -> None:
        """One line from QEMU: an event to every negotiated client, or a reply to route."""
        if self.recorder is not None:
            self.recorder.record(UP_TO_PROXY, _UPSTREAM_LABEL, line)
        if line.startswith(EVENT_PREFIX):
            if is_shutdown(line):
                self._shutdown_seen = True
            # A copy: a client over its output limit leaves the set while we iterate.
            for client in tuple(self._clients):
                client.send_event(line)
            return
        reply = read_upstream_line(line)
        if reply is None or type(reply.id) is not int:
            log.warning("upstream sent a line that is no reply to us: %r", line[:200])
            return
        pending = self._ids.pop(reply.id)
        if pending is None:
            self.dropped_replies += 1  # its client left mid-command
            return
        pending.client.reply(reply.id, relabel(reply, pending.id, pending.has_id), pending.oob)

    def upstream_lost(self) -> None:
        """QEMU went away: every client gets EOF after what it was already sent."""
        log.warning(
            "upstream %s closed%s",
            self.config.upstream,
            " after SHUTDOWN" if self._shutdown_seen else "",
        )
        self._ids.clear()
        for client in tuple(self._clients):
            client.close()

    # --- DownstreamHub ------------------------------------------------------------

    def attach(self, client: Downstream) -> None:
        """Greet ``client`` now if the upstream is there, else when it is back."""
        if self.upstream_connected:
            self._start_client(client)
        else:
            self._waiting.append(client)

    def _start_client(self, client: Downstream) -> None:
        upstream = self._upstream
        assert upstream is not None and upstream.greeting is not None
        assert upstream.greeting_info is not None
        self._clients.add(client)
        client.start(upstream.greeting, upstream.greeting_info)

    def detach(self, client: Downstream) -> None:
        """``client`` is gone: forget it and the requests it still waited for."""
        self._clients.discard(client)
        with contextlib.suppress(ValueError):
            self._waiting.remove(client)
        self._ids.forget_client(client)

    def forward(self, client: Downstream, request: Request) -> int | None:
        """Send ``request`` upstream under a fresh proxy id; None without an upstream."""
        upstream = self._upstream
        if upstream is None or upstream.closed:
            return None
        proxy_id = self._ids.add(client, request.id, request.has_id, request.oob)
        data = forward_request(request, proxy_id)
        if self.recorder is not None:
            self.recorder.record(PROXY_TO_UP, client.label, data)
        upstream.write(data)
        return proxy_id


class _ClientFactory:
    """Makes the :class:`Downstream` of each connection accepted on one socket."""

    def __init__(self, proxy: Proxy, label: str) -> None:
        self._proxy = proxy
        self.label = label
        self._accepted = 0

    def __call__(self) -> Downstream:
        self._accepted += 1
        return Downstream(self._proxy, f"{self.label}#{self._accepted}")

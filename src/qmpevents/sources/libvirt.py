"""Every QEMU domain of a libvirt host, through libvirt's QEMU monitor event API.

``qemu:///system`` (all domains) or ``qemu:///system?domain=NAME`` (one): libvirt
holds each domain's QMP socket, and hands us every QMP event unchanged, with its
name, QEMU's timestamp and its data (``virConnectDomainQemuMonitorEventRegister``
in ``libvirt_qemu``). We rebuild the exact line QEMU sent
(:func:`~qmpevents.protocol.encoding.encode_event`) and decode it with the same
typed models as a socket's, so a consumer cannot tell the two apart.

:class:`LibvirtSource` runs on asyncio through ``libvirtaio``. Iterating it yields
each domain once, as a :class:`~.libvirt_domain.DomainSource` (an ordinary
:class:`~.base.EventSource`), plus markers about libvirtd itself:
``Connected`` when (re)connected, ``Disconnected`` when the connection was lost,
``Unreachable`` when an attempt failed (once per new reason). Domains that start
are attached, domains that stop are detached (``Disconnected`` on their source),
and after libvirtd restarts every domain still running gets ``Connected`` and a
``Gap`` for the time nobody listened (kubevirt/kubevirt#194).

The connection is read-write: libvirt refuses monitor events on a read-only one.
A libvirtd that stops answering is noticed by libvirt's keepalive (``keepalive``:
interval and count) and handled as a lost connection. libvirt's calls block, so
they run on the event loop thread, as libvirtaio requires; on a local socket they
take milliseconds, and keepalive bounds a stuck daemon.

libvirt-python is the optional extra ``qmpevents[libvirt]``; without it a
libvirt target is a :class:`~qmpevents.errors.ConfigError` that names the extra.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Mapping
from types import ModuleType
from typing import Any

import msgspec

from qmpevents.client import OverflowPolicy
from qmpevents.client.backoff import Backoff
from qmpevents.errors import (
    ConfigError,
    ConnectionLost,
    QMPConnectionError,
    QMPEventsError,
)
from qmpevents.protocol.encoding import encode_event
from qmpevents.schema.decode import decode_event
from qmpevents.sources.base import Connected, Disconnected, Unreachable
from qmpevents.sources.libvirt_commands import command_text, reply_value
from qmpevents.sources.libvirt_domain import DomainSource
from qmpevents.sources.libvirt_states import close_reason, run_state, stop_reason
from qmpevents.sources.libvirt_uri import LIBVIRT_EXTRA_HINT, LibvirtTarget, parse_libvirt_target

__all__ = ["LibvirtItem", "LibvirtSource", "import_libvirt"]

log = logging.getLogger(__name__)

LibvirtItem = DomainSource | Connected | Disconnected | Unreachable
"""What iterating a :class:`LibvirtSource` yields."""

_LIFECYCLE_STARTED = 2
_LIFECYCLE_STOPPED = 5
_ANY_JSON = msgspec.json.Decoder()


def import_libvirt() -> tuple[ModuleType, ModuleType, ModuleType]:
    """``(libvirt, libvirt_qemu, libvirtaio)``; ``ConfigError`` naming the extra if absent."""
    try:
        import libvirt_qemu
        import libvirtaio

        import libvirt
    except ImportError as error:
        raise ConfigError(f"{LIBVIRT_EXTRA_HINT}: {error}") from None
    # libvirt prints every error to stderr by default; ours carry its message.
    libvirt.registerErrorHandler(lambda _context, _error: None, None)
    return libvirt, libvirt_qemu, libvirtaio


def _bind_event_loop(libvirtaio: ModuleType) -> None:
    """Dispatch libvirt's callbacks on the running asyncio loop (once per process)."""
    loop = asyncio.get_running_loop()
    impl = libvirtaio.getCurrentImpl()
    if impl is None:
        try:
            libvirtaio.virEventRegisterAsyncIOImpl(loop=loop)
        except RuntimeError as error:  # someone registered another implementation
            raise ConfigError(f"cannot run libvirt's events on asyncio: {error}") from None
    elif impl.loop is not loop:
        # libvirt accepts one event implementation per process: a later loop (a
        # second asyncio.run) takes it over once the previous one let go of it.
        if impl.callbacks:
            raise ConfigError(
                "libvirt's events still run on another asyncio loop with open connections"
            )
        impl.loop = loop


class LibvirtSource:
    """The domains of the libvirt connection ``target``; see the module docstring.

    ``names``, ``where``, ``queue_size`` and ``policy`` are each domain's, as for a
    :class:`~.qmp.QMPSource`. With ``reconnect`` a lost or failed connection is
    retried (``backoff``) and reported as markers; without it, the first failure
    raises ``QMPConnectionError`` from :meth:`start`, and a loss ends every domain
    and the iteration with ``ConnectionLost``.
    """

    def __init__(
        self,
        target: LibvirtTarget | str,
        *,
        names: tuple[str, ...] = (),
        where: Mapping[str, Any] | None = None,
        queue_size: int = 10_000,
        policy: OverflowPolicy = "block",
        reconnect: bool = True,
        backoff: Backoff | None = None,
        keepalive: tuple[int, int] = (5, 3),
    ) -> None:
        self.target = target if isinstance(target, LibvirtTarget) else parse_libvirt_target(target)
        self.name = self.target.text
        self.names = names
        self.where = dict(where or {})
        self.queue_size = queue_size
        self.policy: OverflowPolicy = policy
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.keepalive = keepalive
        self.rejected = 0  # events libvirt handed us that do not decode (logged)
        self.version: str | None = None  # libvirtd's, once connected
        self._modules = import_libvirt()
        self._domains: dict[str, DomainSource] = {}
        self._announce: asyncio.Queue[LibvirtItem | BaseException | None] = asyncio.Queue()
        self._conn: Any = None
        self._lifecycle_id: int | None = None
        self._monitor_id: int | None = None
        self._generation = 0  # callbacks of an earlier connection are ignored
        self._lost: asyncio.Queue[str] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def domains(self) -> Mapping[str, DomainSource]:
        """The domains announced so far, by name."""
        return dict(self._domains)

    @property
    def connected(self) -> bool:
        """Whether libvirtd is connected now."""
        return self._conn is not None

    async def start(self) -> None:
        """Connect (or, with ``reconnect``, keep trying in the background)."""
        if self._task is not None or self._closed:
            return
        _bind_event_loop(self._modules[2])
        if self.target.domain is not None:
            self._domain(self.target.domain)  # announced at once: its consumer waits for it
        try:
            self._connect()
        except QMPConnectionError as error:
            if not self.reconnect:
                raise
            self._announce.put_nowait(Unreachable(time.time(), f"{error}; retrying"))
            self._task = asyncio.create_task(self._keep(str(error)), name=f"libvirt {self.name}")
            return
        self._task = asyncio.create_task(self._keep(None), name=f"libvirt {self.name}")

    async def __aenter__(self) -> LibvirtSource:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __aiter__(self) -> AsyncIterator[LibvirtItem]:
        return self._items()

    async def _items(self) -> AsyncIterator[LibvirtItem]:
        while True:
            item = await self._announce.get()
            if item is None or isinstance(item, BaseException):
                self._announce.put_nowait(item)  # every iteration ends the same way
                if isinstance(item, BaseException):
                    raise item
                return
            yield item

    async def aclose(self) -> None:
        """Disconnect and end every domain (after what each holds). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._disconnect()
        for domain in list(self._domains.values()):
            await domain.aclose()
        self._announce.put_nowait(None)

    async def execute(
        self, domain: str, command: str, arguments: Mapping[str, Any] | None = None
    ) -> Any:
        """Run the QMP ``command`` on ``domain`` through libvirt; its return value.

        This is ``virsh qemu-monitor-command``: libvirt marks the domain tainted
        (custom-monitor). Raises ``ConnectionLost`` (libvirtd not connected),
        ``QMPConnectionError`` (no such running domain, or libvirt refused) and
        :class:`~qmpevents.errors.CommandError` (QEMU's error reply).
        """
        libvirt, libvirt_qemu, _ = self._modules
        conn = self._conn
        if conn is None:
            raise ConnectionLost(f"{self.name}: not connected to libvirtd: {command}")
        try:
            handle = conn.lookupByName(domain)
            reply = libvirt_qemu.qemuMonitorCommand(handle, command_text(command, arguments), 0)
        except libvirt.libvirtError as error:
            raise QMPConnectionError(f"{domain}: {command}: {error}") from None
        return reply_value(command, reply)

    # -- the connection -------------------------------------------------------------

    def _connect(self) -> None:
        """Open, register, and attach the running domains; ``QMPConnectionError``."""
        libvirt, libvirt_qemu, _ = self._modules
        self._generation += 1
        generation = self._generation
        try:
            conn = libvirt.open(self.target.uri)
        except libvirt.libvirtError as error:
            raise QMPConnectionError(f"{self.target.uri}: {error}") from None
        self._conn = conn
        try:
            conn.setKeepAlive(*self.keepalive)
            conn.registerCloseCallback(self._closed_cb, generation)
            self._lifecycle_id = conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle_cb, generation
            )
            self._monitor_id = libvirt_qemu.qemuMonitorEventRegister(
                conn, None, None, self._monitor_cb, generation, 0
            )
            running = [
                (domain.name(), run_state(*domain.state()[:2]))
                for domain in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            ]
            self.version = _version_text(conn.getLibVersion())
        except libvirt.libvirtError as error:
            self._disconnect()
            raise QMPConnectionError(f"{self.target.uri}: {error}") from None
        self._announce.put_nowait(
            Connected(time.time(), f"connected to {self.target.uri} (libvirt {self.version})")
        )
        for name, status in running:
            if self.target.wants(name):
                self._domain(name).attach(status, f"domain {name} running on {self.target.uri}")

    def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        self._generation += 1
        if conn is None:
            return
        libvirt = self._modules[0]
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
        # Each registration holds the connection: without these, close() would leave
        # its socket and timers on the event loop for ever.
        if self._monitor_id is not None:
            with contextlib.suppress(libvirt.libvirtError):
                self._modules[1].qemuMonitorEventDeregister(conn, self._monitor_id)
        if self._lifecycle_id is not None:
            with contextlib.suppress(libvirt.libvirtError):
                conn.domainEventDeregisterAny(self._lifecycle_id)
        self._monitor_id = self._lifecycle_id = None
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    async def _keep(self, failing: str | None) -> None:
        """Wait for losses and reconnect; any failure here ends the source loudly."""
        try:
            lost_at = time.time()
            if failing is None:
                reason = await self._lost.get()
                lost_at = self._lose(reason)
            while True:
                await self._reconnect(lost_at, failing)
                failing = None
                lost_at = self._lose(await self._lost.get())
        except asyncio.CancelledError:
            raise
        except BaseException as error:
            self._fail(error)

    def _lose(self, reason: str) -> float:
        """The connection is gone: detach every domain, or end everything (no reconnect)."""
        at = time.time()
        self._disconnect()
        text = f"libvirt connection to {self.target.uri} lost: {reason}"
        if not self.reconnect:
            raise ConnectionLost(text)
        for domain in self._domains.values():
            domain.detach(at, text)
        self._announce.put_nowait(Disconnected(at, f"{reason}; reconnecting"))
        return at

    async def _reconnect(self, lost_at: float, failing: str | None) -> None:
        delays = self.backoff.delays()
        while True:
            await asyncio.sleep(next(delays))
            try:
                self._connect()
                return
            except QMPConnectionError as error:
                limit = self.backoff.give_up_after
                if limit is not None and time.time() - lost_at >= limit:
                    raise ConnectionLost(f"no libvirt connection for {limit} s: {error}") from None
                if str(error) != failing:  # one marker per new reason, not per attempt
                    failing = str(error)
                    self._announce.put_nowait(Unreachable(time.time(), f"{error}; retrying"))

    def _fail(self, error: BaseException) -> None:
        at = time.time()
        self._disconnect()
        for domain in self._domains.values():
            domain.detach(at, str(error), error)
        self._announce.put_nowait(error)

    def _domain(self, name: str) -> DomainSource:
        domain = self._domains.get(name)
        if domain is None or domain.closed:
            domain = DomainSource(
                name,
                self.target.uri,
                names=self.names,
                where=self.where,
                queue_size=self.queue_size,
                policy=self.policy,
            )
            domain._execute = self.execute
            self._domains[name] = domain
            self._announce.put_nowait(domain)
        return domain

    # -- libvirt's callbacks (on the loop thread, dispatched by libvirtaio) ------------

    def _followed(self, domain: Any, generation: int) -> str | None:
        """The name of a domain whose callbacks this connection follows, else None."""
        if generation != self._generation:
            return None  # a callback of an earlier connection
        name: str = domain.name()
        return name if self.target.wants(name) else None

    def _closed_cb(self, _conn: Any, reason: int, generation: int) -> None:
        if generation == self._generation:
            self._lost.put_nowait(close_reason(reason))

    def _lifecycle_cb(
        self, _conn: Any, domain: Any, event: int, detail: int, generation: int
    ) -> None:
        try:
            name = self._followed(domain, generation)
            if name is None:
                return
            if event == _LIFECYCLE_STARTED:
                self._domain(name).attach(None, f"domain {name} started on {self.target.uri}")
            elif event == _LIFECYCLE_STOPPED:
                self._domain(name).detach(time.time(), f"domain {name} {stop_reason(detail)}")
        except Exception as error:  # never lost inside libvirt's dispatch
            self._callback_failed(error)

    def _monitor_cb(
        self,
        _conn: Any,
        domain: Any,
        event: str,
        seconds: int,
        micros: int,
        details: str | None,
        generation: int,
    ) -> None:
        try:
            name = self._followed(domain, generation)
            if name is None:
                return
            data = _ANY_JSON.decode(details) if details else None
            if data is not None and not isinstance(data, dict):
                raise ValueError(f"data is not a JSON object: {str(details)[:200]!r}")
            # The line as a socket's framer would hand it on: without its CRLF.
            line = encode_event(event, seconds, micros, data).removesuffix(b"\r\n")
            decoded = decode_event(line)
        except (QMPEventsError, ValueError, TypeError, msgspec.DecodeError) as error:
            self.rejected += 1
            log.warning("%s: an event libvirt passed on does not decode: %s", self.name, error)
            return
        except Exception as error:
            self._callback_failed(error)
            return
        self._domain(name).offer(decoded)

    def _callback_failed(self, error: Exception) -> None:
        log.error("%s: libvirt callback failed: %r", self.name, error)
        if self._task is not None:
            self._task.cancel()
        self._fail(error)


def _version_text(number: int) -> str:
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"

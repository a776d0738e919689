"""A blocking QMP client for scripts: connect, execute, wait_for.

::

    with SyncClient("/run/vm1/qmp.sock") as qmp:
        waiter = qmp.expect("DUMP_COMPLETED", timeout=30)
        qmp.execute("dump-guest-memory", {"paging": False, "protocol": "file:/x", "detach": True})
        event = waiter.wait()

One event loop runs for the life of the client in a background thread, and the
asyncio :class:`~qmpevents.client.connection.QMPClient` lives in it: events are received
and filtered there as they arrive, and each blocking call is one hop between the
threads, never a loop started per call or per event.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from qmpevents.addresses import Address
from qmpevents.protocol.client_session import Greeting
from qmpevents.schema.events import Event

from .connection import QMPClient
from .listeners import EventWaiter

__all__ = ["SyncClient", "SyncWaiter"]

T = TypeVar("T")


class SyncWaiter:
    """A pending :meth:`SyncClient.expect`; listening began when it was made."""

    def __init__(self, client: SyncClient, waiter: EventWaiter) -> None:
        self._client = client
        self._waiter = waiter

    def wait(self) -> Event:
        """Block until the event arrives; raises what :class:`EventWaiter` raises."""
        return self._client._run(self._await())

    async def _await(self) -> Event:
        return await self._waiter


class SyncClient:
    """A connected, blocking QMP client (see the module docstring).

    ``options`` are those of :class:`~qmpevents.client.connection.QMPClient`. Errors are
    the same as the asyncio client's. Not for use from inside a running event loop.
    """

    def __init__(self, target: str | os.PathLike[str] | Address, **options: Any) -> None:
        # Built first: a bad target or option raises before any thread exists.
        self._client = QMPClient(target, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"qmp-client {target}", daemon=True
        )
        self._thread.start()
        try:
            self._run(self._client.connect())
        except BaseException:
            self._stop()
            raise

    @property
    def greeting(self) -> Greeting | None:
        """The server's greeting."""
        return self._client.greeting

    @property
    def protocol_errors(self) -> int:
        """Protocol violations the server committed so far."""
        return self._client.protocol_errors

    def execute(
        self,
        command: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = None,
    ) -> Any:
        """Run ``command`` and return its value, as :meth:`QMPClient.execute`."""
        return self._run(self._client.execute(command, arguments, timeout=timeout))

    def expect(
        self,
        name: str | Iterable[str],
        where: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = 30.0,
    ) -> SyncWaiter:
        """Start listening for an event now; ``.wait()`` on the result blocks for it."""
        return SyncWaiter(self, self._run(self._expect(name, where, timeout)))

    async def _expect(
        self, name: str | Iterable[str], where: Mapping[str, Any] | None, timeout: float | None
    ) -> EventWaiter:
        return self._client.wait_for(name, where, timeout=timeout)

    def wait_for(
        self,
        name: str | Iterable[str],
        where: Mapping[str, Any] | None = None,
        *,
        timeout: float | None = 30.0,
    ) -> Event:
        """Block for the next such event (listening starts now; see :meth:`expect`)."""
        return self.expect(name, where, timeout=timeout).wait()

    def close(self) -> None:
        """Disconnect and stop the background loop. Idempotent."""
        if self._loop.is_closed():
            return
        try:
            self._run(self._client.close())
        finally:
            self._stop()

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

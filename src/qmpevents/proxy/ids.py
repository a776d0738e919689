"""Request ids: each forwarded request gets a proxy-unique one, mapped back on reply.

Clients choose their ids freely (any JSON value, or none), so two clients may
well use the same one. Upstream, every request carries an integer the proxy
never reuses; :class:`IdMap` remembers, per such integer, which client asked
and with which id. A client that goes away takes its entries with it, so the
map holds only requests whose client is still there and waiting.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

from qmpevents.protocol.framing import JSONValue

__all__ = ["IdMap", "Pending"]

C = TypeVar("C", bound=Hashable)


@dataclass(frozen=True, slots=True)
class Pending(Generic[C]):
    """One forwarded request: who asked, with which id (``has_id``: was there one)."""

    client: C
    id: JSONValue
    has_id: bool
    oob: bool


class IdMap(Generic[C]):
    """Proxy ids (1, 2, 3, ... never reused) to the requests they stand for."""

    def __init__(self) -> None:
        self._next = itertools.count(1)
        self._pending: dict[int, Pending[C]] = {}
        self._by_client: dict[C, set[int]] = {}

    def __len__(self) -> int:
        return len(self._pending)

    def new_id(self) -> int:
        """A fresh proxy id not tied to any client (the proxy's own requests)."""
        return next(self._next)

    def add(self, client: C, request_id: JSONValue, has_id: bool, oob: bool) -> int:
        """Remember a request of ``client``; returns the proxy id to send upstream."""
        proxy_id = next(self._next)
        self._pending[proxy_id] = Pending(client, request_id, has_id, oob)
        self._by_client.setdefault(client, set()).add(proxy_id)
        return proxy_id

    def pop(self, proxy_id: int) -> Pending[C] | None:
        """The request ``proxy_id`` answers, forgotten; None when nobody waits for it."""
        pending = self._pending.pop(proxy_id, None)
        if pending is not None:
            ids = self._by_client.get(pending.client)
            if ids is not None:
                ids.discard(proxy_id)
                if not ids:
                    del self._by_client[pending.client]
        return pending

    def waiting(self, client: C) -> int:
        """How many requests of ``client`` wait for their reply."""
        return len(self._by_client.get(client, ()))

    def forget_client(self, client: C) -> int:
        """``client`` is gone: drop its requests (their replies will be dropped)."""
        ids = self._by_client.pop(client, set())
        for proxy_id in ids:
            del self._pending[proxy_id]
        return len(ids)

    def clear(self) -> None:
        """The upstream is gone: nothing will be answered."""
        self._pending.clear()
        self._by_client.clear()

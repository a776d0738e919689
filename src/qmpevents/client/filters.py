"""Which events a listener wants, and an event's data as plain JSON for the ``where`` test.

:class:`EventFilter` keeps names (exact or fnmatch globs, decisions cached and
bounded) and ``where`` members (dotted paths into ``data``, wire names).
:func:`plain_data` computes an event's ``data`` once and shares it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from qmpevents.schema.events import Event

__all__ = ["EventFilter", "plain_data"]

_GLOB_CHARS: Final = frozenset("*?[")
# A misbehaving server could send endless distinct names; the per-listener cache
# of name decisions is cleared when it reaches this size rather than grow.
_NAME_CACHE_MAX: Final = 1024


class _DataOnly(msgspec.Struct):
    data: dict[str, Any] = msgspec.field(default_factory=dict)


_DATA: Final = msgspec.json.Decoder(_DataOnly)
_MISSING: Final = object()


# Where plain_data() keeps its result on the event, beside the received bytes.
_PLAIN_KEY: Final = "_plain"


def plain_data(event: Event) -> dict[str, Any]:
    """An event's ``data`` as plain JSON values with wire names (``{}`` when absent).

    Computed once per event and shared by every caller (each listener's ``where``
    filter, the live-schema check, watch): treat the result as read-only.
    """
    cache = event.__dict__
    plain: dict[str, Any] | None = cache.get(_PLAIN_KEY)
    if plain is not None:
        return plain
    raw = event.raw
    if raw is not None:
        # The received bytes also hold members the model does not know.
        plain = _DATA.decode(raw).data
    else:
        data = getattr(event, "data", None)
        plain = {} if data is None else msgspec.to_builtins(data)
    cache[_PLAIN_KEY] = plain
    return plain


class EventFilter:
    """Which events a listener wants: names (exact or fnmatch globs) and ``where`` members.

    ``where`` maps a member path below ``data`` (dotted for nested members, wire
    names: ``"result.status"``) to the value it must equal, as decoded JSON.
    No names means every event.
    """

    __slots__ = ("_cache", "_exact", "_globs", "_where", "names", "where")

    def __init__(self, names: Iterable[str] = (), where: Mapping[str, Any] | None = None) -> None:
        self.names = tuple(names)
        self.where = dict(where or {})
        self._exact = frozenset(n for n in self.names if not _GLOB_CHARS.intersection(n))
        self._globs = tuple(n for n in self.names if _GLOB_CHARS.intersection(n))
        self._where = tuple((tuple(path.split(".")), value) for path, value in self.where.items())
        self._cache: dict[str, bool] = {}

    def accepts_name(self, name: str) -> bool:
        """Whether an event called ``name`` passes the name part of the filter."""
        if not self.names:
            return True
        accepted = self._cache.get(name)
        if accepted is None:
            accepted = name in self._exact or any(
                fnmatch.fnmatchcase(name, glob) for glob in self._globs
            )
            if len(self._cache) >= _NAME_CACHE_MAX:
                self._cache.clear()
            self._cache[name] = accepted
        return accepted

    @property
    def passes_all(self) -> bool:
        """True when the filter accepts every event (no names, no members)."""
        return not self.names and not self._where

    def accepts(self, event: Event) -> bool:
        """Whether ``event`` passes the whole filter."""
        if not self.accepts_name(event.name):
            return False
        if not self._where:
            return True
        data = plain_data(event)
        return all(_lookup(data, path) == value for path, value in self._where)


def _lookup(data: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        if not isinstance(data, dict):
            return _MISSING
        data = data.get(part, _MISSING)
    return data

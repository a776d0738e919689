"""The collector's one HTTP server (aiohttp): the timeline page, its JSON API, SSE, metrics.

Routes:

- ``/``: the page; ``/static/timeline.js``, ``/static/timeline.css``: its assets;
- ``/api/timeline?since=&until=&vm=&event=&width=&bucket=``: the view, aggregated per
  lane when a lane has more events than buckets (:func:`~.web_api.timeline`);
- ``/api/events?vm=&event=&since=&until=&limit=&cursor=``: events oldest first, at most
  ``limit`` (1000), with ``next_cursor`` for the next page;
- ``/api/events/{id}``: one event exactly as QEMU sent it, with its typed fields;
- ``/api/vms?vm=``, ``/api/stats?vm=&event=&since=&until=``;
- ``/api/stream?vm=&event=``: new events and gaps as Server-Sent Events;
- ``/metrics``: the collector's Prometheus metrics (when it has a registry).

Bad parameters are HTTP 400 with ``{"error": message}``
(:mod:`.web_query`). Every query opens its own read-only connection in a worker
thread, so the page never slows the collector's writer. The server binds a loopback
address unless ``public`` is set (the page names every VM of the host).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from qmpevents.addresses import is_loopback
from qmpevents.collect.sqlite_schema import connect
from qmpevents.collect.web_api import event_detail, events_page, stats, timeline, vms
from qmpevents.collect.web_page import ASSETS, asset, served_page
from qmpevents.collect.web_query import (
    MAX_LIMIT,
    MAX_WIDTH,
    BadRequest,
    Filters,
    check_known,
    int_param,
    vm_pattern,
)
from qmpevents.collect.web_stream import Tail
from qmpevents.errors import ConfigError

__all__ = ["HttpOptions", "WebServer", "make_app", "start_web_server"]

T = TypeVar("T")
_FILTERS = ("vm", "event", "since", "until")
_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_DB = web.AppKey("db", Path)
_TAIL = web.AppKey("tail", Tail)
_REGISTRY = web.AppKey("registry", CollectorRegistry)


def _json(value: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=msgspec.json.encode(value), status=status, content_type="application/json"
    )


@web.middleware
async def _errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except BadRequest as error:
        response = _json({"error": str(error)}, 400)
    except (sqlite3.OperationalError, ConfigError) as error:
        response = _json({"error": f"history not readable: {error}"}, 503)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Content-Security-Policy", _CSP)
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    return response


async def _query(request: web.Request, read: Callable[[sqlite3.Connection], T]) -> T:
    path = request.app[_DB]

    def run() -> T:
        conn = connect(path, readonly=True)
        try:
            return read(conn)
        finally:
            conn.close()

    return await asyncio.to_thread(run)


def _params(request: web.Request, *known: str) -> dict[str, str]:
    return check_known(request.query.items(), known)


async def _page(request: web.Request) -> web.StreamResponse:
    _params(request, "vm", "event", "range", "end")  # the page's own state, read by its script
    return web.Response(text=served_page(), content_type="text/html", charset="utf-8")


async def _asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in ASSETS:
        raise web.HTTPNotFound()
    return web.Response(text=asset(name), content_type=ASSETS[name], charset="utf-8")


async def _timeline(request: web.Request) -> web.StreamResponse:
    query = _params(request, *_FILTERS, "width", "bucket")
    filters = Filters.from_query(query)
    width = int_param(query, "width", 1000, 10, MAX_WIDTH)
    bucket = int_param(query, "bucket", 2, 1, 100)
    body = await _query(request, lambda conn: timeline(conn, filters, width, bucket))
    response = _json(body)
    response.enable_compression()
    return response


async def _events(request: web.Request) -> web.StreamResponse:
    query = _params(request, *_FILTERS, "limit", "cursor")
    filters = Filters.from_query(query)
    limit = int_param(query, "limit", 100, 1, MAX_LIMIT)
    cursor = query.get("cursor") or None
    page = await _query(request, lambda conn: events_page(conn, filters, limit, cursor))
    return _json(page)


async def _event(request: web.Request) -> web.StreamResponse:
    _params(request)
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 18:
        raise BadRequest(f"event id: expected a whole number, got {text[:40]!r}")
    found = await _query(request, lambda conn: event_detail(conn, int(text)))
    if found is None:
        return _json({"error": f"no event {text}"}, 404)
    return _json(found)


async def _vms(request: web.Request) -> web.StreamResponse:
    query = _params(request, "vm")
    filters = Filters(vm=vm_pattern(query["vm"]) if query.get("vm") else None)
    return _json({"vms": await _query(request, lambda conn: vms(conn, filters))})


async def _stats(request: web.Request) -> web.StreamResponse:
    filters = Filters.from_query(_params(request, *_FILTERS))
    return _json(await _query(request, lambda conn: stats(conn, filters)))


async def _stream(request: web.Request) -> web.StreamResponse:
    filters = Filters.from_query(_params(request, "vm", "event"))
    tail = request.app[_TAIL]
    subscriber = tail.subscribe(filters.vm, filters.events)
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
            "Content-Security-Policy": _CSP,
        }
    )
    try:
        await response.prepare(request)
        with contextlib.suppress(TimeoutError):  # "hello" once new is told from old
            await asyncio.wait_for(tail.ready.wait(), 5)
        await response.write(b"retry: 2000\nevent: hello\ndata: {}\n\n")
        while True:
            try:
                message = await asyncio.wait_for(subscriber.queue.get(), 15)
            except TimeoutError:
                await response.write(b": keep-alive\n\n")
                continue
            if message is None:
                break
            await response.write(message)
            if subscriber.lagging and subscriber.queue.empty():
                subscriber.lagging = False
    except (ConnectionResetError, ConnectionError):
        pass
    finally:
        tail.unsubscribe(subscriber)
    return response


async def _metrics(request: web.Request) -> web.StreamResponse:
    _params(request, "name[]")  # what Prometheus may send: a selection of series
    registry = request.app.get(_REGISTRY)
    if registry is None:
        raise web.HTTPNotFound(text="no metrics: this server reads a history only")
    body = await asyncio.to_thread(generate_latest, registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def make_app(
    db: Path, *, registry: CollectorRegistry | None = None, interval: float = 0.25
) -> web.Application:
    """The application over the history at ``db`` (metrics from ``registry``, if any)."""
    app = web.Application(middlewares=[_errors])
    app[_DB] = db
    tail = app[_TAIL] = Tail(db, interval=interval)
    if registry is not None:
        app[_REGISTRY] = registry

    async def stop_streams(app: web.Application) -> None:
        await tail.aclose()

    app.on_shutdown.append(stop_streams)
    app.router.add_get("/", _page)
    app.router.add_get("/static/{name}", _asset)
    app.router.add_get("/api/timeline", _timeline)
    app.router.add_get("/api/events", _events)
    app.router.add_get("/api/events/{id}", _event)
    app.router.add_get("/api/vms", _vms)
    app.router.add_get("/api/stats", _stats)
    app.router.add_get("/api/stream", _stream)
    app.router.add_get("/metrics", _metrics)
    return app


@dataclass(frozen=True)
class HttpOptions:
    """Where the collector serves its page, API and metrics (``public``: any address)."""

    host: str = "127.0.0.1"
    port: int = 8080
    public: bool = False


class WebServer:
    """The running server; :attr:`url` is where the page is, :meth:`aclose` stops it."""

    def __init__(self, runner: web.AppRunner, host: str, port: int) -> None:
        self._runner = runner
        self.host = host
        self.port = port
        shown = f"[{host}]" if ":" in host else host
        self.url = f"http://{shown}:{port}/"

    async def aclose(self) -> None:
        """Close the streams and release the port. Idempotent."""
        await self._runner.cleanup()


async def start_web_server(
    db: Path,
    host: str = "127.0.0.1",
    port: int = 8080,
    *,
    public: bool = False,
    registry: CollectorRegistry | None = None,
    interval: float = 0.25,
) -> WebServer:
    """Serve :func:`make_app` on ``host:port`` (port 0: any free one).

    ``ConfigError`` for a non-loopback ``host`` without ``public``; ``OSError`` when
    the port is taken.
    """
    if not public and not is_loopback(host):
        raise ConfigError(
            f"http on {host}:{port} would be reachable from the network; bind to a "
            "loopback address or opt in explicitly (--http-public)"
        )
    app = make_app(db, registry=registry, interval=interval)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=2.0)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound = runner.addresses[0]
    return WebServer(runner, host, int(bound[1]))

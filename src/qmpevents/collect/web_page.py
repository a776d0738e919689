"""The timeline page: served with its script and style, or as one self-contained HTML file.

The assets live in ``qmpevents/collect/web/`` (package data). Served, the page loads
``/static/timeline.js`` and ``/static/timeline.css`` and reads the API (the server's
Content-Security-Policy allows nothing else). Written to a file
(:func:`standalone_page`), the script and style are inlined and the data is embedded
as JSON in a ``<script type="application/json">`` element, escaped so that no value
(a VM named ``</script>``) can end it; the script reads it with ``JSON.parse`` and
shows every text with ``textContent``, never as HTML.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from importlib.resources import files
from typing import Any

import msgspec

from qmpevents.collect.records import EventRecord, GapRecord, Record
from qmpevents.collect.web_api import detail_of, held_back

__all__ = ["ASSETS", "asset", "served_page", "standalone_data", "standalone_page"]

ASSETS = {"timeline.js": "text/javascript", "timeline.css": "text/css"}
_SCRIPT_TAG = '<script src="/static/timeline.js" defer></script>'
_STYLE_TAG = '<link rel="stylesheet" href="/static/timeline.css">'


def asset(name: str) -> str:
    """The text of asset ``name`` (``index.html``, ``timeline.js``, ``timeline.css``)."""
    return files("qmpevents.collect").joinpath("web", name).read_text(encoding="utf-8")


def served_page() -> str:
    """The page as the server sends it."""
    return asset("index.html")


def _json_for_script(value: Any) -> str:
    text = msgspec.json.encode(value).decode()
    # Inside <script>, "</" (and "<!--") would end or confuse the element: escape them.
    return (
        text.replace("<", "\\u003c")
        .replace(">", "\\u003e")
        .replace("&", "\\u0026")
        .replace("\u2028", "\\u2028")
        .replace("\u2029", "\\u2029")
    )


def standalone_data(records: Iterable[Record], title: str, now: float | None = None) -> Any:
    """What :func:`standalone_page` embeds: every event (with its detail) and gap."""
    events: list[list[Any]] = []
    details: dict[str, Any] = {}
    gaps: list[list[Any]] = []
    for index, record in enumerate(records, start=1):
        if isinstance(record, EventRecord):
            ts = record.qemu_ts
            events.append(
                [index, record.vm, record.name, ts, held_back(record.name, ts, record.received_at)]
            )
            details[str(index)] = detail_of(
                index, record.vm, record.name, ts, record.received_at, record.raw
            )
        elif isinstance(record, GapRecord):
            gaps.append([record.vm, record.started, record.ended, record.reason])
    return {
        "title": title,
        "generated": time.time() if now is None else now,
        "events": events,
        "gaps": gaps,
        "details": details,
    }


def standalone_page(data: Any) -> str:
    """One HTML file with the page, its script and style, and ``data`` embedded."""
    page = served_page()
    style = "<style>\n" + asset("timeline.css") + "\n</style>"
    script = asset("timeline.js").replace("</script", "<\\/script")
    embedded = (
        '<script type="application/json" id="qmp-data">' + _json_for_script(data) + "</script>\n"
        "<script>\n" + script + "\n</script>"
    )
    if _STYLE_TAG not in page or _SCRIPT_TAG not in page:
        raise RuntimeError("index.html does not reference timeline.js and timeline.css")
    return page.replace(_STYLE_TAG, style).replace(_SCRIPT_TAG, embedded)

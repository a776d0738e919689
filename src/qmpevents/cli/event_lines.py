"""How ``qmpevents watch`` writes an event: one line of text, JSON, or QEMU's bytes.

Pure functions (event in, text out) so that they can be tested and reused by
``demo`` and ``shell``; :class:`Printer` chooses between them for stdout.
"""

from __future__ import annotations

import datetime
import json
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

import click
from rich.console import Console
from rich.text import Text

from qmpevents.client import Dropped, Gap, ListenerItem, RunState
from qmpevents.client.listeners import plain_data
from qmpevents.schema.events import Event
from qmpevents.sources import Disconnected
from qmpevents.throttle import QEMU_RULES

__all__ = [
    "Printer",
    "describe",
    "format_item",
    "format_open_gap",
    "human_bytes",
    "json_item",
    "printable",
]

_STYLES = {"time": "dim", "vm": "cyan", "throttled": "yellow", "marker": "bold red"}
_ERROR_EVENTS = frozenset(
    {"QUORUM_FAILURE", "GUEST_PANICKED", "MEM_UNPLUG_ERROR", "DEVICE_UNPLUG_GUEST_ERROR"}
)


def human_bytes(count: int) -> str:
    """``67371008`` -> ``"64.2 MiB"``; below 1 KiB in bytes."""
    if count < 1024:
        return f"{count} B"
    value = float(count)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"


def _sectors(data: Mapping[str, Any]) -> str:
    return f"sectors {data.get('sector-num')}+{data.get('sectors-count')}"


def _dump(data: Mapping[str, Any]) -> str:
    result = data.get("result", {})
    text = (
        f"{result.get('status')} {human_bytes(int(result.get('completed', 0)))}"
        f"/{human_bytes(int(result.get('total', 0)))}"
    )
    return f"{text} error: {data['error']}" if "error" in data else text


def _report_bad(data: Mapping[str, Any]) -> str:
    text = f"node {data.get('node-name')} {_sectors(data)} {data.get('type')}"
    return f"{text} error: {data['error']}" if "error" in data else text


def _panicked(data: Mapping[str, Any]) -> str:
    info = data.get("info")
    return f"action {data.get('action')}" + (f" info {info.get('type')}" if info else "")


# ACPI _OST (ACPI 6.x, 6.3.5): the event a report answers, and its status codes;
# codes 0x80-0xff mean different things for an eject and for an insertion.
_OST_SOURCES = {
    0: "bus check", 1: "device check", 3: "eject request", 0x103: "eject (OSPM)",
    0x200: "insertion (OSPM)",
}  # fmt: skip
_OST_STATUS = {0: "success", 1: "failure", 2: "unrecognized notify"}
_OST_EJECT_STATUS = {
    0x80: "eject not supported", 0x81: "device in use", 0x82: "device busy",
    0x83: "eject dependency busy", 0x84: "eject in progress",
}  # fmt: skip
_OST_INSERT_STATUS = {
    0x80: "insertion in progress",
    0x81: "driver load failure",
    0x82: "insertion not supported",
}


def _acpi_ost(data: Mapping[str, Any]) -> str:
    info = data.get("info", {})
    source, status = info.get("source"), info.get("status")
    codes = {**_OST_STATUS, **(_OST_EJECT_STATUS if source in (3, 0x103) else _OST_INSERT_STATUS)}
    device = f"{info['device']} " if "device" in info else ""
    what = _OST_SOURCES.get(source, f"source {source:#x}" if isinstance(source, int) else "")
    answer = codes.get(status, "status")
    code = f"{status:#x}" if isinstance(status, int) else str(status)
    return f"{device}{info.get('slot-type')} slot {info.get('slot')}: {what}, {answer} ({code})"


def _ost_refused(data: Mapping[str, Any]) -> bool:
    """An eject the guest refused: what libvirt reports as a rejected unplug."""
    info = data.get("info", {})
    return info.get("source") in (3, 0x103) and info.get("status") in (1, 0x80, 0x81, 0x82, 0x83)


_DESCRIBERS: dict[str, Callable[[Mapping[str, Any]], str]] = {
    "ACPI_DEVICE_OST": _acpi_ost,
    "DUMP_COMPLETED": _dump,
    "QUORUM_REPORT_BAD": _report_bad,
    "QUORUM_FAILURE": lambda d: f"reference {d.get('reference')} {_sectors(d)}",
    "GUEST_PANICKED": _panicked,
    "MIGRATION_PASS": lambda d: f"pass {d.get('pass')}",
    "VSERPORT_CHANGE": lambda d: f"{d.get('id')} {'open' if d.get('open') else 'closed'}",
    "MEM_UNPLUG_ERROR": lambda d: f"{d.get('device')}: {d.get('msg')}",
    # The device's id is absent for a device that has none; its QOM path is always there.
    "DEVICE_UNPLUG_GUEST_ERROR": lambda d: " ".join(
        str(d[key]) for key in ("device", "path") if key in d
    ),
}


def describe(name: str, data: Mapping[str, Any]) -> str:
    """The members a person needs, for event ``name`` with ``data`` (wire names)."""
    describer = _DESCRIBERS.get(name)
    if describer is not None:
        return describer(data)
    return json.dumps(data, separators=(",", ":")) if data else ""


# Control characters (C0, DEL, C1) and bidi overrides: a VM could otherwise
# move the cursor, retitle the terminal or reorder what the operator reads.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """``text`` with every terminal control character shown as an escape (``\\x1b``)."""
    return _UNSAFE.sub(
        lambda m: (
            f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}"
        ),
        text,
    )


def _local_time(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch).strftime("%H:%M:%S.%f")[:-3]


def format_item(vm: str, item: ListenerItem, width: int = 0) -> Text:
    """One display line: local time, VM, event name, members, a rate-limit mark.

    The event's own timestamp is shown (QEMU keeps it on events it delays).
    ``width`` pads the VM name so that columns line up.
    """
    line = Text()
    if isinstance(item, Gap):
        line.append(_local_time(item.ended), _STYLES["time"])
        line.append(f" {printable(vm):<{width}} ", _STYLES["vm"])
        line.append(
            f"-- no connection from {_local_time(item.started)} "
            f"({item.duration:.1f} s): events in between are lost",
            _STYLES["marker"],
        )
        return line
    if isinstance(item, Dropped | RunState):
        line.append(_local_time(datetime.datetime.now().timestamp()), _STYLES["time"])
        line.append(f" {printable(vm):<{width}} ", _STYLES["vm"])
        if isinstance(item, Dropped):
            text = f"-- {item.count} event(s) dropped: output too slow"
        else:
            before = item.previous or ("running" if item.was_running else "not running")
            text = f"-- run state is now {item.status} (was {before}) after the gap"
        line.append(text, _STYLES["marker"])
        return line
    stamp = item.timestamp.seconds + item.timestamp.microseconds / 1e6
    line.append(_local_time(stamp), _STYLES["time"])
    line.append(f" {printable(vm):<{width}} ", _STYLES["vm"])
    line.append(printable(item.name), "bold red" if _is_error(item) else "bold")
    details = describe(item.name, plain_data(item))
    if details:
        line.append(f" {printable(details)}")
    rule = QEMU_RULES.get(item.name)
    if rule is not None:
        per = f" per {rule.key_member}" if rule.key_member else ""
        line.append(f" (rate-limited{per})", _STYLES["throttled"])
    return line


def _is_error(event: Event) -> bool:
    if event.name in _ERROR_EVENTS:
        return True
    if event.name == "ACPI_DEVICE_OST":
        return _ost_refused(plain_data(event))
    data = plain_data(event) if event.name in ("DUMP_COMPLETED", "QUORUM_REPORT_BAD") else {}
    return "error" in data


def json_item(vm: str, item: ListenerItem, received_at: datetime.datetime) -> str:
    """One JSON object: ``vm``, ``received-at`` and the event exactly as QEMU sent it.

    Markers become ``{"vm", "received-at", "gap": {"started", "ended"}}`` or
    ``{..., "dropped": N}``.
    """
    head = f'{{"vm": {json.dumps(vm)}, "received-at": "{received_at.isoformat()}", '
    if isinstance(item, Gap):
        return head + f'"gap": {{"started": {item.started}, "ended": {item.ended}}}}}'
    if isinstance(item, Dropped):
        return head + f'"dropped": {item.count}}}'
    if isinstance(item, RunState):
        state = {"status": item.status, "running": item.running, "previous": item.previous}
        return head + f'"run-state": {json.dumps(state)}}}'
    raw = item.raw
    # The received bytes are valid JSON already; splicing them keeps QEMU's exact text.
    body = raw.decode("utf-8", "replace") if raw is not None else json.dumps(item.to_message())
    return head + f'"event": {body}}}'


def format_open_gap(vm: str, marker: Disconnected, width: int = 0) -> Text:
    """The line of a gap a host recorded and has not closed (yet): since when, and why."""
    line = Text()
    line.append(_local_time(marker.at), _STYLES["time"])
    line.append(f" {printable(vm):<{width}} ", _STYLES["vm"])
    line.append(
        f"-- not connected since {_local_time(marker.at)}: {printable(marker.reason)}",
        _STYLES["marker"],
    )
    return line


class Printer:
    """Writes items to stdout: rich colours on a terminal, plain text, JSON or QEMU's bytes."""

    def __init__(self, mode: str, width: int) -> None:
        self.mode = mode
        self.width = width
        self.console = (
            Console(highlight=False, soft_wrap=True)
            if mode == "text" and sys.stdout.isatty()
            else None
        )

    def __call__(self, vm: str, item: ListenerItem) -> None:
        if self.mode == "json":
            received = datetime.datetime.now(datetime.UTC)
            click.echo(json_item(vm, item, received))
        elif self.mode == "raw":
            if isinstance(item, Gap | Dropped | RunState):
                # Markers are not QEMU's bytes: they go to stderr, as words.
                click.echo(f"qmpevents watch: {format_item(vm, item).plain}", err=True)
                return
            # The event's bytes as received; the framer took off the \r\n QEMU ends
            # every message with, so it goes back on.
            sys.stdout.flush()
            sys.stdout.buffer.write((item.raw or b"") + b"\r\n")
            sys.stdout.buffer.flush()
        elif self.console is not None:
            self.console.print(format_item(vm, item, self.width))
        else:
            click.echo(format_item(vm, item, self.width).plain)

    def open_gap(self, vm: str, marker: Disconnected) -> None:
        """A gap still open on its host (read from NATS)."""
        if self.mode == "json":
            received = datetime.datetime.now(datetime.UTC).isoformat()
            gap = {"started": marker.at, "ended": None, "reason": marker.reason}
            click.echo(
                f'{{"vm": {json.dumps(vm)}, "received-at": "{received}", "gap": {json.dumps(gap)}}}'
            )
        elif self.mode == "raw":
            click.echo(f"qmpevents watch: {format_open_gap(vm, marker).plain}", err=True)
        elif self.console is not None:
            self.console.print(format_open_gap(vm, marker, self.width))
        else:
            click.echo(format_open_gap(vm, marker, self.width).plain)

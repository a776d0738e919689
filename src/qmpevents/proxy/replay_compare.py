"""How a replay's messages are compared with the recording's (no I/O).

Per client, step by step (the steps number what the recorded client received,
from 1, the greeting):

* the greeting: byte for byte, except that the version (``qemu`` numbers and
  ``package``) may differ: a note, or a difference under ``strict``;
* replies, in order: byte for byte. A reply that is only a version (what
  ``query-version`` returns) follows the greeting's rule;
* events: matched by name and data (timestamps ignored), in order, then
  compared byte for byte with the timestamps normalized; each is timed from
  the chunk sent before it (see :mod:`.replay_load`) and must come within
  ``slack`` seconds of its recorded delay, else it is late or early.

Anything the target sent that the recording does not have is a difference too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from qmpevents.proxy.replay_load import ChunkRef, ClientScript, Expected

__all__ = [
    "Comparison",
    "Difference",
    "Kind",
    "Received",
    "compare_client",
    "event_key",
    "normalize_event",
]

_TIMESTAMP: Final = re.compile(rb'"timestamp": \{"seconds": -?\d+, "microseconds": -?\d+\}')
_NORMAL_TIMESTAMP: Final = b'"timestamp": {"seconds": 0, "microseconds": 0}'


Kind = Literal["greeting", "reply", "event"]


@dataclass(frozen=True, slots=True)
class Received:
    """One line the target sent in the replay, and when (the replay's clock)."""

    kind: Kind
    time: float
    data: bytes


@dataclass(frozen=True, slots=True)
class Difference:
    """One step where the replay differs from the recording."""

    client: int
    step: int
    kind: str  # greeting, reply, event, event-late, event-early, missing, unexpected, ...
    expected: str
    got: str
    after: bool = False  # an unexpected message: it came after ``step``

    def line(self) -> str:
        """``client N, step K: expected ..., got ...``."""
        where = f"after step {self.step}" if self.after else f"step {self.step}"
        return f"client {self.client}, {where}: expected {self.expected}, got {self.got}"

    def as_json(self) -> dict[str, Any]:
        """The difference as a JSON object."""
        return {
            "client": self.client,
            "step": self.step,
            "after": self.after,
            "kind": self.kind,
            "expected": self.expected,
            "got": self.got,
        }


@dataclass
class Comparison:
    """Everything compared for one client."""

    compared: int = 0
    differences: list[Difference] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def show(data: bytes) -> str:
    """A message as printed: its text without the line end."""
    return data.rstrip(b"\r\n").decode("utf-8", "backslashreplace")


def normalize_event(data: bytes) -> bytes:
    """An event line with its ``timestamp`` members zeroed."""
    return _TIMESTAMP.sub(_NORMAL_TIMESTAMP, data.rstrip(b"\r\n"))


def _load(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def event_key(data: bytes) -> tuple[str, str]:
    """(name, data as canonical JSON): what events are matched by."""
    message = _load(data)
    if not isinstance(message, dict):
        return ("", show(data))
    body = json.dumps(message.get("data"), sort_keys=True, separators=(",", ":"))
    return (str(message.get("event")), body)


def _version_only(data: bytes) -> dict[str, Any] | None:
    """The version object of a greeting or a query-version reply, else None."""
    message = _load(data)
    if not isinstance(message, dict):
        return None
    if isinstance(message.get("QMP"), dict):
        version = message["QMP"].get("version")
        rest = {**message["QMP"], "version": None}
        return {"version": version, "rest": rest} if isinstance(version, dict) else None
    value = message.get("return")
    if isinstance(value, dict) and set(value) == {"qemu", "package"}:
        return {"version": value, "rest": {**message, "return": None}}
    return None


def _describe_version(version: Any) -> str:
    if not isinstance(version, dict):
        return "?"
    qemu = version.get("qemu") or {}
    numbers = ".".join(str(qemu.get(k, "?")) for k in ("major", "minor", "micro"))
    return f"{numbers} {version.get('package', '')!r}"


class _Client:
    def __init__(self, script: ClientScript, sent: dict[ChunkRef, float], slack: float) -> None:
        self.script = script
        self.sent = sent
        self.slack = slack
        self.result = Comparison()
        self.reply_times: list[tuple[float, int]] = []

    def differ(self, step: int, kind: str, expected: str, got: str, after: bool = False) -> None:
        self.result.differences.append(
            Difference(self.script.number, step, kind, expected, got, after)
        )

    def replies(self, expected: list[Expected], received: list[Received], strict: bool) -> None:
        for want, got in zip(expected, received, strict=False):
            self.result.compared += 1
            if want.data == got.data:
                continue
            if not strict and self._versions_only(want, got):
                continue
            self.differ(want.step, want.kind, show(want.data), show(got.data))
        for want in expected[len(received) :]:
            self.result.compared += 1
            self.differ(want.step, "missing", show(want.data), "nothing")
        last = expected[-1].step if expected else 0
        for got in received[len(expected) :]:
            self.result.compared += 1
            self.differ(last, "unexpected", "nothing", show(got.data), after=True)

    def _versions_only(self, want: Expected, got: Received) -> bool:
        mine, theirs = _version_only(want.data), _version_only(got.data)
        if mine is None or theirs is None or mine["rest"] != theirs["rest"]:
            return False
        what = "greeting" if want.kind == "greeting" else "reply"
        self.result.notes.append(
            f"client {self.script.number}, step {want.step}: the {what} gives version "
            f"{_describe_version(theirs['version'])} where the recording has "
            f"{_describe_version(mine['version'])}"
        )
        return True

    def events(self, expected: list[Expected], received: list[Received]) -> None:
        taken = [False] * len(received)
        keys = [event_key(got.data) for got in received]
        for want in expected:
            self.result.compared += 1
            key = event_key(want.data)
            match = next(
                (i for i, k in enumerate(keys) if not taken[i] and k == key),
                None,
            )
            if match is None:
                self.differ(want.step, "missing", _event(want.data), "nothing")
                continue
            taken[match] = True
            self._check(want, received[match])
        for i, got in enumerate(received):
            if not taken[i]:
                self.result.compared += 1
                self.differ(
                    self._step_before(got.time), "unexpected", "nothing", _event(got.data), True
                )

    def _check(self, want: Expected, got: Received) -> None:
        if normalize_event(want.data) != normalize_event(got.data):
            self.differ(want.step, "event", show(want.data), show(got.data))
            return
        if want.anchor is None or want.anchor not in self.sent:
            return
        delay = got.time - self.sent[want.anchor]
        off = delay - want.delay
        if abs(off) <= self.slack:
            return
        name = event_key(want.data)[0]
        client, chunk = want.anchor
        late = "late" if off > 0 else "early"
        self.differ(
            want.step,
            f"event-{late}",
            f"event {name} {want.delay:.3f} s after client {client}'s send #{chunk + 1}",
            f"it {delay:.3f} s after ({late} by {abs(off):.3f} s, slack {self.slack:g} s)",
        )

    def _step_before(self, when: float) -> int:
        """The step of the last reply received before ``when`` (0: none)."""
        step = 0
        for time, number in self.reply_times:
            if time <= when:
                step = number
        return step


def _event(data: bytes) -> str:
    message = _load(data)
    if not isinstance(message, dict):
        return show(data)
    shown = f"event {message.get('event')}"
    return shown + (f" {json.dumps(message['data'])}" if "data" in message else "")


def compare_client(
    script: ClientScript,
    received: list[Received],
    sent: dict[ChunkRef, float],
    *,
    slack: float,
    strict: bool = False,
) -> Comparison:
    """``received`` (the replay of ``script``) against the recording."""
    client = _Client(script, sent, slack)
    want_replies = [item for item in script.expected if item.kind != "event"]
    got_replies = [item for item in received if item.kind != "event"]
    client.reply_times = [
        (got.time, want.step) for want, got in zip(want_replies, got_replies, strict=False)
    ]
    client.replies(want_replies, got_replies, strict)
    client.events(
        [item for item in script.expected if item.kind == "event"],
        [item for item in received if item.kind == "event"],
    )
    client.result.differences.sort(key=lambda d: (d.step, d.after))
    return client.result

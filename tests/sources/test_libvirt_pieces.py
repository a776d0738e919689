"""The parts of the libvirt source that need no libvirtd: targets, states, replies, domains."""

from __future__ import annotations

import sys

import pytest

from qmpevents.client import Dropped, Gap, RunState
from qmpevents.errors import CommandError, ConfigError, ConnectionLost, QMPConnectionError
from qmpevents.schema.decode import decode_event
from qmpevents.sources import Connected, Disconnected, DomainSource, parse_target
from qmpevents.sources.libvirt import import_libvirt
from qmpevents.sources.libvirt_commands import command_text, reply_value
from qmpevents.sources.libvirt_states import close_reason, run_state, stop_reason
from qmpevents.sources.libvirt_uri import is_libvirt_target, parse_libvirt_target

STOP = decode_event(b'{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "STOP"}\r\n')
RESUME = decode_event(b'{"timestamp": {"seconds": 1, "microseconds": 3}, "event": "RESUME"}\r\n')


@pytest.mark.parametrize(
    ("text", "uri", "domain"),
    [
        ("qemu:///system", "qemu:///system", None),
        ("qemu:///system?domain=web", "qemu:///system", "web"),
        ("qemu:///session?domain=a%20b", "qemu:///session", "a b"),
        (
            "qemu+ssh://root@h/system?domain=x&no_verify=1",
            "qemu+ssh://root@h/system?no_verify=1",
            "x",
        ),
        ("qemu+unix:///system?socket=/run/l.sock", "qemu+unix:///system?socket=/run/l.sock", None),
    ],
)
def test_libvirt_targets(text: str, uri: str, domain: str | None) -> None:
    target = parse_libvirt_target(text)
    assert (target.uri, target.domain) == (uri, domain)
    assert parse_libvirt_target(target.text) == target  # the text reads back the same
    spec = parse_target(text)
    assert spec.libvirt == target and not spec.monitor and not spec.fleet
    assert spec.name == (domain or uri)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("qemu://", "needs a path"),
        ("qemu:///system?domain=", "domain= is empty"),
        ("qemu:///system?domain=a&domain=b", "domain= given 2 times"),
    ],
)
def test_bad_libvirt_targets_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_target(text)


def test_what_is_a_libvirt_target() -> None:
    assert is_libvirt_target("qemu+tls://host/system")
    assert not is_libvirt_target("/run/qemu.sock")
    assert not is_libvirt_target("nats://127.0.0.1:4222")
    assert not is_libvirt_target("xen:///system")
    with pytest.raises(ConfigError, match="LibvirtSource"):
        parse_target("qemu:///system").source()


def test_without_the_extra_the_error_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "libvirt", None)  # as if libvirt-python were missing
    with pytest.raises(ConfigError, match=r"pip install 'qmpevents\[libvirt\]'"):
        import_libvirt()
    with pytest.raises(ConfigError, match=r"qmpevents\[libvirt\]"):
        parse_target("qemu:///system").libvirt_source()


def test_states_in_qmp_words() -> None:
    assert run_state(1, 1) == ("running", True)
    assert run_state(3, 1) == ("paused", False)
    assert run_state(3, 5) == ("io-error", False)
    assert run_state(6, 1) == ("guest-panicked", False)
    assert run_state(0, 0) is None
    assert stop_reason(1) == "stopped (destroyed)"
    assert stop_reason(99) == "stopped (reason 99)"
    assert close_reason(2) == "libvirtd stopped answering keepalives"


def test_commands_and_replies() -> None:
    assert command_text("query-status", None) == '{"execute": "query-status"}'
    assert command_text("stop", {"a": 1}) == '{"execute": "stop", "arguments": {"a": 1}}'
    assert reply_value("query-status", '{"return": {"status": "running"}, "id": "x"}') == {
        "status": "running"
    }
    with pytest.raises(CommandError, match="GenericError: nope") as caught:
        reply_value("cont", '{"error": {"class": "GenericError", "desc": "nope"}}')
    assert caught.value.error_class == "GenericError"
    with pytest.raises(QMPConnectionError, match="not JSON"):
        reply_value("cont", "{")
    with pytest.raises(QMPConnectionError, match="not a QMP reply"):
        reply_value("cont", "[1]")


async def items_until(source: DomainSource, count: int) -> list[object]:
    got: list[object] = []
    async for item in source:
        got.append(item)
        if len(got) == count:
            break
    return got


async def test_a_domain_across_runs_and_a_restart() -> None:
    domain = DomainSource("web", "qemu:///system")
    domain.attach(("running", True), "domain web running")
    domain.offer(STOP)
    domain.detach(100.0, "libvirt connection lost")
    domain.offer(RESUME)  # told of it before the lifecycle event: attached again at once
    domain.detach(200.0, "domain web stopped (destroyed)")
    domain.attach(("paused", False), "domain web running")
    got = await items_until(domain, 10)
    kinds = [type(item).__name__ for item in got]
    assert kinds == [
        "Connected", "Stop", "Disconnected",
        "Connected", "Gap", "Resume", "Disconnected",
        "Connected", "Gap", "RunState",
    ]  # fmt: skip
    first_gap = got[4]
    assert isinstance(first_gap, Gap) and first_gap.started == 100.0
    assert isinstance(got[6], Disconnected) and got[6].reason.endswith("(destroyed)")
    marker = got[9]
    assert isinstance(marker, RunState) and marker.status == "paused" and marker.was_running
    assert domain.attached
    await domain.aclose()
    assert await items_until(domain, 1) == []


async def test_attach_twice_is_one_attachment_and_errors_end_the_source() -> None:
    domain = DomainSource("web", "qemu:///system")
    domain.attach(None, "first")
    domain.attach(None, "second")
    domain.detach(5.0, "gone", ConnectionLost("libvirtd went away"))
    items = aiter(domain)
    first = await anext(items)
    assert isinstance(first, Connected) and first.detail == "first"
    with pytest.raises(ConnectionLost, match="went away"):
        await anext(items)


async def test_an_overflowing_domain_counts_its_drops() -> None:
    domain = DomainSource("web", "qemu:///system", queue_size=2, policy="drop-oldest")
    domain.attach(None, "up")
    for _ in range(5):
        domain.offer(STOP)
    domain.detach(1.0, "gone")
    got = await items_until(domain, 5)
    assert [type(item).__name__ for item in got] == [
        "Connected", "Dropped", "Stop", "Stop", "Disconnected",
    ]  # fmt: skip
    dropped = got[1]
    assert isinstance(dropped, Dropped) and dropped.count == 3


async def test_execute_needs_the_libvirt_source() -> None:
    with pytest.raises(ConnectionLost, match="not attached"):
        await DomainSource("web", "qemu:///system").execute("query-status")

"""The asyncio QMP client against a scripted server double that misbehaves on cue."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from qmpevents.addresses import Address, parse_address
from qmpevents.client import Dropped, Gap, QMPClient, connect
from qmpevents.errors import (
    CommandError,
    ConnectionLost,
    EventsDropped,
    GreetingError,
    QMPConnectionError,
    QMPTimeoutError,
)
from qmpevents.protocol.encoding import encode_event
from qmpevents.schema.events import GenericEvent, MigrationPass, QuorumReportBad
from qmpevents.server import QMPServer
from tests.helpers import REFERENCE

GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
    b'"package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}\r\n'
)


def event(name: str, data: dict[str, Any] | None = None, seconds: int = 1795799056) -> bytes:
    return encode_event(name, seconds, 709675, data)


def passes(*numbers: int) -> bytes:
    return b"".join(event("MIGRATION_PASS", {"pass": n}) for n in numbers)


def report_bad(node: str, sector: int = 0) -> bytes:
    return event(
        "QUORUM_REPORT_BAD",
        {"type": "read", "node-name": node, "sector-num": sector, "sectors-count": 1},
    )


class Peer:
    """The server's end of one connection, driven by a test script."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, *chunks: bytes) -> None:
        for chunk in chunks:
            self.writer.write(chunk)
        await self.writer.drain()

    async def request(self) -> dict[str, Any]:
        line = await self.reader.readline()
        if not line:
            raise EOFError
        request: dict[str, Any] = json.loads(line)
        return request

    async def reply(self, request: dict[str, Any], value: Any = None, *before: bytes) -> None:
        body = {"return": {} if value is None else value, "id": request["id"]}
        await self.send(*before, json.dumps(body).encode() + b"\r\n")

    async def error(self, request: dict[str, Any], error_class: str, desc: str) -> None:
        body = {"id": request["id"], "error": {"class": error_class, "desc": desc}}
        await self.send(json.dumps(body).encode() + b"\r\n")

    async def greet(self, *before_reply: bytes) -> dict[str, Any]:
        """Greeting and negotiation; ``before_reply`` goes out ahead of the reply."""
        await self.send(GREETING)
        request = await self.request()
        assert request["execute"] == "qmp_capabilities"
        await self.reply(request, None, *before_reply)
        return request

    async def serve(self, answers: dict[str, Any] | None = None) -> None:
        """Answer commands (from ``answers``, else ``{}``) until the client leaves."""
        answers = answers or {}
        try:
            while True:
                request = await self.request()
                answer = answers.get(request["execute"])
                if callable(answer):
                    await answer(self, request)
                else:
                    await self.reply(request, answer)
        except (EOFError, ConnectionError):
            pass

    def close(self) -> None:
        self.writer.close()


Script = Callable[[Peer], Awaitable[None]]


class FakeQEMU:
    """A unix-socket QMP server; connection number ``n`` runs ``scripts[n]``."""

    def __init__(self, path: Path, *scripts: Script) -> None:
        self.path = path
        self.scripts = list(scripts)
        self.connections = 0
        self.server: asyncio.Server | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.requests: list[dict[str, Any]] = []

    async def __aenter__(self) -> FakeQEMU:
        self.server = await asyncio.start_unix_server(self._handle, str(self.path))
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        script = self.scripts[min(self.connections, len(self.scripts) - 1)]
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self.tasks.append(task)
        peer = Peer(reader, writer)
        try:
            await script(peer)
        except asyncio.CancelledError:
            pass  # stop() ends scripts still waiting for the client; that is no failure
        finally:
            writer.close()


async def normal(peer: Peer) -> None:
    await peer.greet()
    await peer.serve()


@pytest.fixture
def sock(tmp_path: Path) -> Path:
    return tmp_path / "qmp.sock"


# -- connecting -----------------------------------------------------------------------


async def test_connect_exposes_greeting_and_negotiates_oob(sock: Path) -> None:
    seen: list[dict[str, Any]] = []

    async def script(peer: Peer) -> None:
        seen.append(await peer.greet())
        await peer.serve()

    async with FakeQEMU(sock, script), connect(sock) as qmp:
        assert qmp.connected
        assert qmp.greeting is not None
        assert qmp.greeting.version == "7.2.22"
        assert qmp.greeting.capabilities == ("oob",)
    assert seen[0]["arguments"] == {"enable": ["oob"]}
    assert not qmp.connected


async def test_missing_socket_names_the_target(sock: Path) -> None:
    with pytest.raises(QMPConnectionError, match=str(sock)):
        await connect(sock).connect()


async def test_refused_socket_names_the_target(sock: Path) -> None:
    # A socket file with nobody listening: what a crashed QEMU leaves behind.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(sock))
    stale.close()
    with pytest.raises(QMPConnectionError, match=f"{sock}: cannot connect"):
        await connect(sock).connect()


async def test_garbage_greeting_is_a_greeting_error(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(b"SSH-2.0-OpenSSH_9.2\r\n")
        await peer.serve()

    async with FakeQEMU(sock, script):
        with pytest.raises(GreetingError) as caught:
            await connect(sock).connect()
    assert caught.value.raw == b"SSH-2.0-OpenSSH_9.2"


async def test_silent_server_times_out(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.serve()

    async with FakeQEMU(sock, script):
        with pytest.raises(QMPTimeoutError, match=r"no greeting within 0\.05 s: another client"):
            await connect(sock, greeting_timeout=0.05).connect()


async def test_close_before_greeting_is_a_greeting_error(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(b'{"QMP": {"vers')

    async with FakeQEMU(sock, script):
        with pytest.raises(GreetingError, match="middle of a message"):
            await connect(sock).connect()


async def test_refused_negotiation_is_a_connection_error(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(GREETING)
        await peer.error(await peer.request(), "GenericError", "nope")

    async with FakeQEMU(sock, script):
        with pytest.raises(QMPConnectionError, match="qmp_capabilities failed: GenericError"):
            await connect(sock).connect()


async def test_event_before_the_negotiation_reply_is_delivered(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.greet(passes(1))
        await peer.serve()

    async with FakeQEMU(sock, script):
        qmp = QMPClient(sock)
        listener = qmp.events()
        async with qmp:
            first = await anext(listener)
    assert isinstance(first, MigrationPass)
    assert first.data.pass_ == 1


def test_targets_parse() -> None:
    assert parse_address("localhost:4444") == Address(host="localhost", port=4444)
    assert parse_address("[::1]:4444") == Address(host="::1", port=4444)
    assert str(parse_address("[::1]:4444")) == "[::1]:4444"
    assert parse_address("/run/vm.sock") == Address(path="/run/vm.sock")
    assert parse_address("vm.sock") == Address(path="vm.sock")


async def test_tcp_target() -> None:
    served = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        await peer.greet()
        await peer.serve({"query-name": {"name": "tcp"}})
        writer.close()
        await writer.wait_closed()
        served.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        async with connect(f"127.0.0.1:{port}") as qmp:
            assert await qmp.execute("query-name") == {"name": "tcp"}
        await served.wait()


# -- commands -------------------------------------------------------------------------


async def test_execute_returns_values_and_raises_command_errors(sock: Path) -> None:
    async def fail(peer: Peer, request: dict[str, Any]) -> None:
        await peer.error(request, "DeviceNotFound", "Device 'nope' not found")

    async def script(peer: Peer) -> None:
        await peer.greet()
        await peer.serve({"query-status": {"status": "prelaunch"}, "device_del": fail})

    async with FakeQEMU(sock, script), connect(sock) as qmp:
        assert await qmp.execute("query-status") == {"status": "prelaunch"}
        with pytest.raises(CommandError) as caught:
            await qmp.execute("device_del", {"id": "nope"})
    assert (caught.value.command, caught.value.error_class) == ("device_del", "DeviceNotFound")
    assert caught.value.desc == "Device 'nope' not found"


async def test_replies_are_matched_by_id_with_events_between(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.greet()
        first, second = await peer.request(), await peer.request()
        await peer.reply(second, "second", passes(1))
        await peer.reply(first, "first", passes(2))
        await peer.serve()

    async with FakeQEMU(sock, script), connect(sock) as qmp, qmp.events() as listener:
        results = await asyncio.gather(qmp.execute("a"), qmp.execute("b"))
        assert results == ["first", "second"]
        got = [listener.get_nowait(), listener.get_nowait()]
    assert [e.data.pass_ for e in got if isinstance(e, MigrationPass)] == [1, 2]


async def test_execute_timeout_and_late_reply_ignored(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.greet()
        slow = await peer.request()
        fast = await peer.request()  # sent after the slow one timed out
        await peer.reply(slow, "late")
        await peer.reply(fast, "fast")
        await peer.serve()

    async with FakeQEMU(sock, script), connect(sock) as qmp:
        with pytest.raises(QMPTimeoutError, match="slow: no reply"):
            await qmp.execute("slow", timeout=0.01)
        assert await qmp.execute("fast") == "fast"
        assert qmp.protocol_errors == 0


async def test_pending_command_fails_when_the_connection_drops(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.greet()
        await peer.request()

    async with FakeQEMU(sock, script), connect(sock) as qmp:
        with pytest.raises(ConnectionLost, match="closed the connection"):
            await qmp.execute("quit")
        with pytest.raises(ConnectionLost):
            await qmp.execute("query-status")


# -- bad server output ----------------------------------------------------------------


async def test_bad_lines_are_counted_logged_once_and_skipped(
    sock: Path, caplog: pytest.LogCaptureFixture
) -> None:
    bad = [b"{not json\r\n", b"[1, 2]\r\n", b'"just a string"\r\n', b'{"what": 1}\r\n']

    async def script(peer: Peer) -> None:
        await peer.greet()
        request = await peer.request()
        await peer.reply(request, None, *[line + passes(i) for i, line in enumerate(bad, 1)])
        await peer.serve()

    caplog.set_level(logging.WARNING, logger="qmpevents.client.connection")
    async with FakeQEMU(sock, script), connect(sock) as qmp, qmp.events() as listener:
        await qmp.execute("go")
        got = [listener.get_nowait() for _ in bad]
        assert qmp.protocol_errors == len(bad)
    assert [e.data.pass_ for e in got if isinstance(e, MigrationPass)] == [1, 2, 3, 4]
    warnings = [r for r in caplog.records if "protocol error" in r.getMessage()]
    assert len(warnings) == len(bad)
    assert "{not json" in warnings[0].getMessage()


async def test_event_that_breaks_the_model_is_reported_and_delivered_generic(sock: Path) -> None:
    broken = event("MIGRATION_PASS", {"pass": "one"})

    async def script(peer: Peer) -> None:
        await peer.greet()
        await peer.reply(await peer.request(), None, broken)
        await peer.serve()

    async with FakeQEMU(sock, script), connect(sock) as qmp, qmp.events() as listener:
        await qmp.execute("go")
        got = listener.get_nowait()
    assert isinstance(got, GenericEvent)
    assert got.data == {"pass": "one"}
    assert got.raw == broken.rstrip(b"\r\n")
    assert qmp.protocol_errors == 1


@pytest.mark.parametrize("max_line", [None, 1 << 20])
async def test_twelve_megabyte_event(sock: Path, max_line: int | None) -> None:
    huge = event("BIG_EVENT", {"blob": "x" * (12 << 20)})

    async def script(peer: Peer) -> None:
        await peer.greet()
        await peer.reply(await peer.request(), None, huge, passes(7))
        await peer.serve()

    options = {} if max_line is None else {"max_line": max_line}
    async with FakeQEMU(sock, script), connect(sock, **options) as qmp, qmp.events() as listener:
        await qmp.execute("go")
        items = [listener.get_nowait() for _ in range(2)]
    if max_line is None:
        assert isinstance(items[0], GenericEvent)
        assert len(items[0].data["blob"]) == 12 << 20
        assert qmp.protocol_errors == 0
    else:
        assert items[1] is None
        assert qmp.protocol_errors == 1
    tail = items[1] if max_line is None else items[0]
    assert isinstance(tail, MigrationPass)
    assert tail.data.pass_ == 7


async def test_close_mid_message_ends_listeners_with_the_detail(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.greet()
        await peer.request()
        await peer.send(passes(1), b'{"timestamp": {"seconds": 1')

    async with FakeQEMU(sock, script), connect(sock) as qmp, qmp.events() as listener:
        qmp_task = asyncio.ensure_future(qmp.execute("go"))
        first = await anext(listener)
        with pytest.raises(ConnectionLost, match="middle of a message"):
            await anext(listener)
        with pytest.raises(ConnectionLost):
            await qmp_task
    assert isinstance(first, MigrationPass)


# -- listeners ------------------------------------------------------------------------


async def test_listener_filters_by_name_glob_and_where(sock: Path) -> None:
    dump_failed = event(
        "DUMP_COMPLETED",
        {"result": {"status": "failed", "completed": 0, "total": 4}, "error": "boom"},
    )
    dump_ok = event(
        "DUMP_COMPLETED", {"result": {"status": "completed", "completed": 4, "total": 4}}
    )
    stream = [report_bad("qM-c1"), report_bad("qM-c2"), passes(1), dump_ok, dump_failed]

    async def script(peer: Peer) -> None:
        await peer.greet()
        await peer.reply(await peer.request(), None, *stream)
        await peer.serve()

    async with FakeQEMU(sock, script), connect(sock) as qmp:
        quorum = qmp.events("QUORUM_*")
        c2 = qmp.events("QUORUM_REPORT_BAD", where={"node-name": "qM-c2"})
        failed = qmp.events("DUMP_COMPLETED", where={"result.status": "failed"})
        missing_member = qmp.events(where={"result.nope": 1})
        exact = qmp.events("MIGRATION_PASS", "DUMP_COMPLETED")
        await qmp.execute("go")

        def drain(listener: Any) -> list[Any]:
            items = []
            while (item := listener.get_nowait()) is not None:
                items.append(item)
            return items

        assert [e.data.node_name for e in drain(quorum)] == ["qM-c1", "qM-c2"]
        [bad] = drain(c2)
        assert isinstance(bad, QuorumReportBad)
        assert bad.data.node_name == "qM-c2"
        [dump] = drain(failed)
        assert dump.data.error == "boom"
        assert drain(missing_member) == []
        assert [e.name for e in drain(exact)] == ["MIGRATION_PASS"] + ["DUMP_COMPLETED"] * 2


async def test_drop_oldest_counts_and_marks_the_loss(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.greet()
        await peer.reply(await peer.request(), None, passes(1, 2, 3, 4, 5))
        await peer.serve()

    async with FakeQEMU(sock, script), connect(sock) as qmp:
        listener = qmp.events(maxsize=2, policy="drop-oldest")
        await qmp.execute("go")
        items = [await anext(listener) for _ in range(3)]
    assert items[0] == Dropped(3)
    assert [e.data.pass_ for e in items[1:] if isinstance(e, MigrationPass)] == [4, 5]
    assert listener.dropped == 3


async def test_disconnect_policy_ends_the_listener(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.greet()
        await peer.reply(await peer.request(), None, passes(1, 2, 3, 4))
        await peer.serve()

    async with FakeQEMU(sock, script), connect(sock) as qmp:
        strict = qmp.events(maxsize=2, policy="end")
        other = qmp.events()
        await qmp.execute("go")
        got = [await anext(strict), await anext(strict)]
        with pytest.raises(EventsDropped) as caught:
            await anext(strict)
        assert not strict.active
        assert other.active  # one listener's overflow is its own business
    assert [e.data.pass_ for e in got if isinstance(e, MigrationPass)] == [1, 2]
    assert caught.value.dropped == 1


async def test_listener_context_exit_unregisters(sock: Path) -> None:
    async with FakeQEMU(sock, normal), connect(sock) as qmp:
        async with qmp.events() as listener:
            pass
        assert not listener.active
        with pytest.raises(StopAsyncIteration):
            await anext(listener)


async def test_wait_for_catches_an_event_raised_by_the_command(sock: Path) -> None:
    async def dump(peer: Peer, request: dict[str, Any]) -> None:
        # QEMU's synchronous dump sends the event before the reply.
        done = {"result": {"status": "completed", "completed": 8, "total": 8}}
        await peer.reply(request, None, event("DUMP_COMPLETED", done))

    async def script(peer: Peer) -> None:
        await peer.greet()
        await peer.serve({"dump-guest-memory": dump})

    async with FakeQEMU(sock, script), connect(sock) as qmp:
        waiter = qmp.wait_for("DUMP_*", where={"result.status": "completed"}, timeout=5)
        await qmp.execute("dump-guest-memory")
        done = await waiter
    assert done.name == "DUMP_COMPLETED"


async def test_wait_for_times_out(sock: Path) -> None:
    async with FakeQEMU(sock, normal), connect(sock) as qmp:
        with pytest.raises(QMPTimeoutError, match="no GUEST_PANICKED within"):
            await qmp.wait_for("GUEST_PANICKED", timeout=0.01)
        assert qmp._hub._listeners == ()  # the waiter left


async def test_iterators_end_when_the_connection_is_lost(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.greet()
        await peer.request()
        await peer.send(passes(1))

    async with FakeQEMU(sock, script), connect(sock) as qmp:
        listener = qmp.events()
        waiter = qmp.wait_for("NEVER", timeout=None)
        with pytest.raises(ConnectionLost):
            await qmp.execute("bye")
        got = [item async for item in _until_lost(listener)]
        with pytest.raises(ConnectionLost):
            await waiter
        late = qmp.events()
    assert len(got) == 1
    with pytest.raises(StopAsyncIteration):
        await anext(late)


async def _until_lost(listener: Any) -> Any:
    with pytest.raises(ConnectionLost, match="closed the connection"):
        async for item in listener:
            yield item


async def test_close_ends_iterators_normally(sock: Path) -> None:
    async with FakeQEMU(sock, normal):
        qmp = await _connected(sock)
        listener = qmp.events()
        consumer = asyncio.ensure_future(_collect(listener))
        await asyncio.sleep(0)
        await qmp.close()
        await qmp.close()  # idempotent
        assert await consumer == []


async def _connected(sock: Path, **options: Any) -> QMPClient:
    qmp = QMPClient(sock, **options)
    await qmp.connect()
    return qmp


async def _collect(listener: Any) -> list[Any]:
    return [item async for item in listener]


# -- reconnect and validation ---------------------------------------------------------


async def test_reconnect_marks_the_gap_and_keeps_listeners(sock: Path) -> None:
    async def first(peer: Peer) -> None:
        await peer.greet()
        await peer.reply(await peer.request())  # query-status: this peer has no state
        await peer.reply(await peer.request(), None, passes(1))

    async def second(peer: Peer) -> None:
        await peer.greet()
        # An event during the handshake still comes after the Gap.
        await peer.send(passes(2))
        await peer.serve({"query-name": {"name": "back"}})

    async with FakeQEMU(sock, first, second), connect(sock, reconnect=True, backoff=0.01) as qmp:
        listener = qmp.events()
        await qmp.execute("go")
        items = [await anext(listener) for _ in range(3)]
        assert await qmp.execute("query-name") == {"name": "back"}
    one, gap, two = items
    assert isinstance(one, MigrationPass) and one.data.pass_ == 1
    assert isinstance(gap, Gap) and gap.ended >= gap.started
    assert isinstance(two, MigrationPass) and two.data.pass_ == 2


async def test_reconnect_gives_up_and_ends_listeners(sock: Path) -> None:
    server = FakeQEMU(sock, normal)
    async with server:
        qmp = await _connected(
            sock, reconnect=True, backoff=0.01, max_backoff=0.02, reconnect_timeout=0.1
        )
        listener = qmp.events()
        await server.stop()
        for task in server.tasks:
            assert task.done()
    with pytest.raises(ConnectionLost, match=r"no connection for 0\.1 s"):
        await anext(listener)
    with pytest.raises(ConnectionLost):
        await qmp.execute("query-status")
    await qmp.close()


async def test_validate_against_the_live_schema(sock: Path) -> None:
    schema = json.loads((REFERENCE / "qmp_schema_full.json").read_text())

    async def script(peer: Peer) -> None:
        await peer.greet()
        await peer.reply(await peer.request(), schema)
        await peer.reply(await peer.request(), None, event("NOT_IN_SCHEMA"), passes(3))
        await peer.serve()

    async with FakeQEMU(sock, script), connect(sock, validate=True) as qmp:
        assert qmp.schema is not None
        assert "MIGRATION_PASS" in qmp.schema.event_names()
        async with qmp.events() as listener:
            await qmp.execute("go")
            names = [listener.get_nowait(), listener.get_nowait()]
    assert [e.name for e in names if e is not None and not isinstance(e, Gap | Dropped)] == [
        "NOT_IN_SCHEMA",
        "MIGRATION_PASS",
    ]
    assert qmp.invalid_events == 1


@contextlib.contextmanager
def fake_qemu_in_thread(path: Path, *scripts: Script) -> Iterator[Path]:
    """A FakeQEMU on its own loop in a thread, as a real QEMU runs apart from a
    blocking client or a command that runs its own event loop; yields ``path``."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()

    async def run() -> None:
        async with FakeQEMU(path, *scripts):
            started.set()
            await stop.wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    started.wait(5)
    try:
        yield path
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(5)
        loop.close()


async def test_an_event_instead_of_a_greeting_fails_at_once(sock: Path) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(passes(1))
        await peer.serve()

    async with FakeQEMU(sock, script):
        qmp = QMPClient(sock, greeting_timeout=60)
        async with asyncio.timeout(5):  # far less than the greeting timeout
            with pytest.raises(GreetingError, match="expected a QMP greeting, got event"):
                await qmp.connect()
        await qmp.close()


async def test_errors_name_what_is_wrong_with_the_target(tmp_path: Path) -> None:
    regular = tmp_path / "file.sock"
    regular.write_text("")
    for target, words in ((regular, "not a socket but a file"), (tmp_path, "but a directory")):
        with pytest.raises(QMPConnectionError, match=words):
            await QMPClient(target).connect()


async def test_a_socket_held_by_another_client_is_named_as_the_likely_cause(sock: Path) -> None:
    server = QMPServer()  # one client per socket, as QEMU
    await server.listen_unix(str(sock))
    try:
        async with connect(sock):
            second = QMPClient(sock, greeting_timeout=0.2)
            with pytest.raises(QMPTimeoutError, match="another client may hold this socket"):
                await second.connect()
            await second.close()
    finally:
        await server.close()

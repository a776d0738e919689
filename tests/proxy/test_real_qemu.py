"""The proxy in front of a real QEMU 7.2: what clients get is what QEMU would send them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from qemu.qmp import QMPClient as QemuQMPClient

from qmpevents.client import connect
from tests.proxy.conftest import TIMEOUT, Raw, StartQEMU, running_proxy, until

pytestmark = pytest.mark.qemu

QMPEVENTS = str(Path(sys.executable).with_name("qmpevents"))

# Each request as a client may write it; the reply must be QEMU's own, byte for byte.
REQUESTS = [
    b'{"execute": "query-status", "id": "a"}',
    b'{"execute": "query-status", "id": 7}',
    b'{"execute": "query-status", "id": {"x": [1]}}',
    b'{"execute": "query-status", "id": null}',
    b'{"execute": "query-status"}',
    b'{"execute": "query-status", "id": [true, false, 1.5, "\\u00e9"]}',
    b'{"id": {"b": 1, "a": 2, "request": "z"}, "execute": "query-name"}',
    b'{"execute": "no-such-command", "id": "n"}',
    b'{"execute": "query-status", "arguments": {"x": 1}, "id": 3}',
    b'{"execute": "qmp_capabilities", "id": "again"}',
    b'{"execute": "query-cpus-fast", "id": 1e3}',
    b'{"execute": "human-monitor-command", "arguments": {"command-line": "info version"}, "id": 9}',
    b'{"exec-oob": "query-status", "id": "oob"}',
    b'{"execute": "query-status", "id": 1, "bad": 1}',
    b'{"execute": 3}',
    b"[1, 2]",
    b'{"execute": "query-status", "id": 18446744073709551615}',
]


async def test_greeting_and_replies_are_qemus_own(start_qemu: StartQEMU, tmp_path: Path) -> None:
    async with start_qemu() as vm, running_proxy(vm.upstream, tmp_path / "p.sock") as proxy:
        direct = await Raw.connect(vm.direct)
        relayed = await Raw.connect(tmp_path / "p.sock")
        assert relayed.greeting == direct.greeting
        assert relayed.greeting.startswith(b'{"QMP": {"version": {"qemu": {"micro": ')
        for request in REQUESTS:
            want = await direct.ask(request)
            got = await relayed.ask(request)
            assert got == want, request
        # Every request was answered: the pending-id map is empty again.
        assert proxy.pending_requests == 0
        direct.close()
        relayed.close()


async def test_negotiation_is_answered_like_qemu(start_qemu: StartQEMU, tmp_path: Path) -> None:
    before = [
        b'{"execute": "query-status", "id": 1}',
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["nope"]}, "id": 2}',
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": 3}',
        b'{"exec-oob": "query-status", "id": 4}',
        b'{"exec-oob": "migrate-recover", "arguments": {"uri": "tcp:127.0.0.1:1"}, "id": 5}',
        b'{"execute": "query-status", "id": 6}',
    ]
    async with start_qemu() as vm, running_proxy(vm.upstream, tmp_path / "p.sock"):
        direct = await Raw.connect(vm.direct, negotiate=False)
        relayed = await Raw.connect(tmp_path / "p.sock", negotiate=False)
        for request in before:
            assert await relayed.ask(request) == await direct.ask(request), request
        direct.close()
        relayed.close()


async def test_three_kinds_of_client_see_the_same_events(
    start_qemu: StartQEMU, tmp_path: Path
) -> None:
    sock = tmp_path / "p.sock"
    async with start_qemu() as vm, running_proxy(vm.upstream, sock) as proxy:
        watch = await asyncio.create_subprocess_exec(
            QMPEVENTS,
            "watch",
            "--raw",
            "--count",
            "2",
            "--timeout",
            "30",
            str(sock),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        theirs = QemuQMPClient("theirs")
        await asyncio.wait_for(theirs.connect(str(sock)), TIMEOUT)
        try:
            async with connect(str(sock)) as ours, ours.events("STOP", "RESUME") as events:
                await until(lambda: proxy.negotiated_clients == 3)
                listener = await Raw.connect(sock)
                driver = await Raw.connect(sock)
                assert b'"return"' in await driver.ask(b'{"execute": "cont", "id": "go"}')
                assert b'"return"' in await driver.ask(b'{"execute": "stop", "id": "halt"}')
                ours_seen = []
                async for event in events:
                    ours_seen.append(event.raw)
                    if len(ours_seen) == 2:
                        break
                theirs_seen = [
                    await asyncio.wait_for(theirs.events.get(), TIMEOUT) for _ in range(2)
                ]
                out, err = await asyncio.wait_for(watch.communicate(), TIMEOUT)
                driver_seen = [await listener.event("RESUME"), await listener.event("STOP")]
                driver.close()
                listener.close()
        finally:
            await theirs.disconnect()
    assert watch.returncode == 0, err.decode()
    assert [line.rstrip(b"\r\n") for line in driver_seen] == [bytes(r) for r in ours_seen]
    assert [m["event"] for m in theirs_seen] == ["RESUME", "STOP"]
    assert [m["timestamp"] for m in theirs_seen] == [
        json.loads(line)["timestamp"] for line in driver_seen
    ]
    # --raw prints QEMU's exact bytes: the same as every other client got.
    assert out.splitlines() == [line.rstrip(b"\r\n") for line in driver_seen]


async def test_clashing_ids_pipelined(start_qemu: StartQEMU, tmp_path: Path) -> None:
    burst = (
        b'{"execute": "query-status", "id": 1}'
        b'{"execute": "query-name", "id": 1}{"execute": "nope", "id": 1}'
        b'{"execute": "query-status", "id": "s"}{"bad'
        b'"}{"execute": "query-kvm", "id": 1}\n'
    )
    async with start_qemu() as vm, running_proxy(vm.upstream, tmp_path / "p.sock") as proxy:
        direct = await Raw.connect(vm.direct)
        await direct.send(burst)
        want = await direct.replies(6)
        one = await Raw.connect(tmp_path / "p.sock")
        two = await Raw.connect(tmp_path / "p.sock")
        await asyncio.gather(one.send(burst), two.send(burst))
        got_one, got_two = await asyncio.gather(one.replies(6), two.replies(6))
        assert got_one == want
        assert got_two == want
        assert proxy.pending_requests == 0
        for client in (direct, one, two):
            client.close()


async def test_a_client_killed_mid_command(start_qemu: StartQEMU, tmp_path: Path) -> None:
    sock = tmp_path / "p.sock"
    async with start_qemu() as vm, running_proxy(vm.upstream, sock) as proxy:
        other = await Raw.connect(sock)
        for _ in range(5):
            doomed = await Raw.connect(sock)
            # A large reply, and gone before it comes.
            await doomed.send(b'{"execute": "query-qmp-schema", "id": "mine"}\n')
            doomed.writer.transport.abort()
        await until(lambda: proxy.clients == 1 and proxy.pending_requests == 0)
        assert await other.ask(b'{"execute": "query-status", "id": "mine"}') == (
            b'{"return": {"status": "prelaunch", "singlestep": false, "running": false},'
            b' "id": "mine"}\r\n'
        )
        await until(lambda: proxy.dropped_replies + proxy.pending_requests <= 5)
        assert proxy.pending_requests == 0
        other.close()


async def test_upstream_killed_then_reconnected(start_qemu: StartQEMU, tmp_path: Path) -> None:
    sock = tmp_path / "p.sock"
    async with start_qemu() as vm, running_proxy(vm.upstream, sock, reconnect=True) as proxy:
        await until(lambda: proxy.upstream_connected)
        clients = [await Raw.connect(sock) for _ in range(3)]
        busy = await Raw.connect(sock)
        await busy.send(b'{"execute": "query-qmp-schema", "id": 1}\n')
        vm.process.kill()
        for client in [*clients, busy]:
            await client.eof()
            client.close()
        await until(lambda: not proxy.upstream_connected and proxy.pending_requests == 0)
        vm.process.wait(TIMEOUT)
        # A client arriving meanwhile waits, ungreeted, for the new QEMU.
        early = asyncio.ensure_future(Raw.connect(sock))
        async with start_qemu() as again:
            assert again.upstream == vm.upstream
            await until(lambda: proxy.upstream_connected)
            waited = await asyncio.wait_for(early, TIMEOUT)
            fresh = await Raw.connect(sock)
            direct = await Raw.connect(again.direct)
            assert fresh.greeting == waited.greeting == direct.greeting
            request = b'{"execute": "query-status", "id": 2}'
            assert await fresh.ask(request) == await direct.ask(request)
            assert await waited.ask(request) == await direct.ask(request)
            for client in (waited, fresh, direct):
                client.close()


def _proxy_command(upstream: Path, listen: Path, *extra: str) -> list[str]:
    return [QMPEVENTS, "proxy", str(upstream), "--listen", str(listen), *extra]


async def _spawn_proxy(upstream: Path, listen: Path, *extra: str) -> asyncio.subprocess.Process:
    child = await asyncio.create_subprocess_exec(
        *_proxy_command(upstream, listen, *extra), stderr=subprocess.PIPE
    )
    assert child.stderr is not None
    line = await asyncio.wait_for(child.stderr.readline(), TIMEOUT)
    assert b"upstream" in line
    line = await asyncio.wait_for(child.stderr.readline(), TIMEOUT)
    assert b"listening on" in line
    return child


async def test_exit_status_after_quit_is_0(start_qemu: StartQEMU, tmp_path: Path) -> None:
    sock = tmp_path / "p.sock"
    async with start_qemu() as vm:
        child = await _spawn_proxy(vm.upstream, sock)
        watcher = await Raw.connect(sock)
        quitter = await Raw.connect(sock)
        assert (
            await quitter.ask(b'{"execute": "quit", "id": "q"}') == b'{"return": {}, "id": "q"}\r\n'
        )
        rest = await watcher.eof()
        assert b'"event": "SHUTDOWN"' in rest
        assert await asyncio.wait_for(child.wait(), TIMEOUT) == 0
        assert not sock.exists()


async def test_exit_status_when_upstream_killed_is_1(start_qemu: StartQEMU, tmp_path: Path) -> None:
    sock = tmp_path / "p.sock"
    async with start_qemu() as vm:
        child = await _spawn_proxy(vm.upstream, sock)
        client = await Raw.connect(sock)
        vm.process.send_signal(signal.SIGKILL)
        assert await client.eof() == b""
        assert await asyncio.wait_for(child.wait(), TIMEOUT) == 1
        assert child.stderr is not None
        assert b"without SHUTDOWN" in await child.stderr.read()


async def test_a_hundred_clients_all_get_the_event(start_qemu: StartQEMU, tmp_path: Path) -> None:
    sock = tmp_path / "p.sock"
    async with start_qemu() as vm, running_proxy(vm.upstream, sock) as proxy:
        clients = await asyncio.gather(*(Raw.connect(sock) for _ in range(100)))
        assert proxy.negotiated_clients == 100
        direct = await Raw.connect(vm.direct)
        await direct.send(b'{"execute": "cont"}\n')
        want = await direct.event("RESUME")
        got = await asyncio.gather(*(client.event("RESUME") for client in clients))
        assert set(got) == {want}
        for client in [*clients, direct]:
            client.close()


@pytest.mark.skipif(not hasattr(os, "fchmod"), reason="unix sockets")
async def test_listening_socket_is_private(start_qemu: StartQEMU, tmp_path: Path) -> None:
    sock = tmp_path / "p.sock"
    async with start_qemu() as vm, running_proxy(vm.upstream, sock):
        assert sock.stat().st_mode & 0o777 == 0o600

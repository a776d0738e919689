"""`qmpevents serve`: usage errors, scenarios with --exit-after-scenario, a client attached."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from qmpevents.cli import main
from qmpevents.client.connection import QMPClient
from qmpevents.errors import QMPTimeoutError
from qmpevents.schema.events import Event

SERVE = [sys.executable, "-c", "from qmpevents.cli import main; main()", "serve"]


def serve(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["serve", *args])
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "nothing to serve: give --socket PATH or --tcp HOST:PORT"),
        (("--socket", "x.sock", "--exit-after-scenario"), "--exit-after-scenario needs --scenario"),
        (("--tcp", "localhost"), "'localhost': expected HOST:PORT"),
        (("--socket", "x.sock", "--ram", "lots"), "Parameter 'ram' expects a non-negative number"),
        (("--socket", "x.sock", "--panic-action", "explode"), "'explode' is not one of"),
        (("--socket", "x.sock", "--scenario", "/nonexistent.toml"), "cannot read"),
    ],
)
def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    status, _, stderr = serve(*args)
    assert status == 2
    assert message in stderr


def test_bad_scenario_names_its_line(tmp_path: Path) -> None:
    scenario = tmp_path / "bad.toml"
    scenario.write_text('[[steps]]\nsay = "hi"\n\n[[steps]]\nguest = "panic"\nvalue = "x"\n')
    status, _, stderr = serve("--socket", str(tmp_path / "s"), "--scenario", str(scenario))
    assert status == 2
    assert f"--scenario: {scenario}:6: steps[1].value: Expected `int`, got `str`" in stderr
    assert "Traceback" not in stderr


def test_scenario_runs_then_exits(tmp_path: Path) -> None:
    scenario = tmp_path / "ok.toml"
    scenario.write_text('[[steps]]\nsay = "hello"\n[[steps]]\ncommand = "stop"\n')
    sock = tmp_path / "s.sock"
    args = ("--socket", str(sock), "--scenario", str(scenario), "--exit-after-scenario")
    status, stdout, stderr = serve(*args)
    assert (status, stdout) == (0, "» hello\n")
    assert f"listening on {sock}" in stderr
    assert not sock.exists()


def test_failing_step_exits_1(tmp_path: Path) -> None:
    scenario = tmp_path / "fail.toml"
    scenario.write_text('[[steps]]\ncommand = "device_del"\narguments = { id = "nope" }\n')
    args = ("--socket", str(tmp_path / "s"), "--scenario", str(scenario), "--exit-after-scenario")
    status, _, stderr = serve(*args)
    assert status == 1
    assert (
        f"{scenario}:1: steps[0]: device_del failed: DeviceNotFound: Device 'nope' not found"
        in stderr
    )


SCENARIO = """\
[machine]
panic-action = "pause"
vserports = ["vs0"]

[[steps]]
wait-event = "RESUME"
timeout = 20

[[steps]]
say = "the client said go"

[[steps]]
guest = "vserport"
id = "vs0"
open = true

[[steps]]
guest = "panic"
"""


async def test_client_sees_the_scenario_events(tmp_path: Path) -> None:
    scenario = tmp_path / "go.toml"
    scenario.write_text(SCENARIO)
    sock = tmp_path / "vm.sock"
    process = await asyncio.create_subprocess_exec(
        *SERVE, "--socket", str(sock), "--paused", "--scenario", str(scenario),
        "--exit-after-scenario", stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(20):
            while not sock.exists():
                await asyncio.sleep(0.02)
        names: list[str] = []
        async with QMPClient(sock) as qmp:
            listener = qmp.events()
            # The scenario waits for RESUME; repeat until its own client was there to see it.
            async with asyncio.timeout(20):
                while True:
                    panicked = qmp.wait_for("GUEST_PANICKED", timeout=0.5)
                    await qmp.execute("cont")
                    try:
                        await panicked
                        break
                    except QMPTimeoutError:
                        await qmp.execute("stop")
            # Everything up to the panic is queued by now: the listener is older than the waiter.
            while (item := listener.get_nowait()) is not None:
                if isinstance(item, Event):
                    names.append(item.name)
        assert "VSERPORT_CHANGE" in names and "GUEST_PANICKED" in names
        async with asyncio.timeout(20):
            assert await process.wait() == 0
        assert process.stdout is not None
        assert await process.stdout.read() == "» the client said go\n".encode()
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


# --- non-loopback TCP needs --tcp-public --------------------------------------------

QUICK = '[[steps]]\nsay = "up"\n'


@pytest.mark.parametrize("address", ["0.0.0.0:0", "[::]:0", "192.0.2.1:4444", "example.com:4444"])
def test_public_tcp_is_refused_before_serving(tmp_path: Path, address: str) -> None:
    # The scenario ends the run even if something were served; the socket shows nothing was.
    scenario = tmp_path / "quick.toml"
    scenario.write_text(QUICK)
    sock = tmp_path / "s.sock"
    status, stdout, stderr = serve(
        "--socket", str(sock), "--tcp", address, "--scenario", str(scenario),
        "--exit-after-scenario",
    )  # fmt: skip
    assert (status, stdout) == (2, "")
    assert stderr == (
        f"qmpevents serve: --tcp {address}: not a loopback address, and QMP has no "
        "authentication: any peer that reaches it could run every command, including ones "
        "that write files (give --tcp-public to allow it)\n"
    )
    assert not sock.exists()


@pytest.mark.parametrize("address", ["127.0.0.1:0", "localhost:0"])
def test_loopback_tcp_needs_no_flag(tmp_path: Path, address: str) -> None:
    scenario = tmp_path / "quick.toml"
    scenario.write_text(QUICK)
    status, stdout, stderr = serve(
        "--tcp", address, "--scenario", str(scenario), "--exit-after-scenario"
    )
    assert (status, stdout) == (0, "» up\n")
    assert "qmpevents serve: listening on 127.0.0.1:" in stderr
    assert "warning" not in stderr


def test_tcp_public_lets_the_address_through_with_a_warning() -> None:
    # 192.0.2.1 (TEST-NET-1) is no address of this host: binding fails, nothing listens.
    probe = socket.socket()
    try:
        probe.bind(("192.0.2.1", 0))
    except OSError:
        pass
    else:
        pytest.skip("192.0.2.1 is an address of this host")
    finally:
        probe.close()
    status, _, stderr = serve("--tcp", "192.0.2.1:0", "--tcp-public")
    assert status == 2
    warning, error = stderr.splitlines()
    assert warning.startswith("qmpevents serve: warning: QMP on tcp:192.0.2.1:0 is not a loopback")
    assert "no authentication" in warning and "write files" in warning
    assert error == "qmpevents serve: 192.0.2.1:0: cannot listen: cannot assign requested address"


def test_tcp_public_help_says_what_it_exposes() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())  # unwrapped
    entry = text[text.index("--tcp-public Allow") : text.index(" --ram ")]
    for words in ("no authentication", "any peer", "every command", "overwrite files"):
        assert words in entry


# --- signals, as QEMU takes them ----------------------------------------------------


async def test_sigterm_sends_shutdown_and_reports_like_qemu(tmp_path: Path) -> None:
    sock = tmp_path / "vm.sock"
    process = await asyncio.create_subprocess_exec(
        *SERVE, "--socket", str(sock), stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(20):
            while not sock.exists():
                await asyncio.sleep(0.02)
            reader, writer = await asyncio.open_unix_connection(str(sock))
            await reader.readline()
            writer.write(b'{"execute": "qmp_capabilities"}\n')
            assert await reader.readline() == b'{"return": {}}\r\n'
            process.send_signal(signal.SIGTERM)
            wire = await reader.read()
            writer.close()
            assert await process.wait() == 0
            assert process.stderr is not None
            stderr = (await process.stderr.read()).decode()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert re.fullmatch(
        rb'\{"timestamp": \{"seconds": \d+, "microseconds": \d+\}, "event": "SHUTDOWN", '
        rb'"data": \{"guest": false, "reason": "host-signal"\}\}\r\n',
        wire,
    )
    with open("/proc/self/cmdline", "rb") as f:
        me = f.read().split(b"\0", 1)[0].decode()
    assert stderr.splitlines()[-1] == (
        f"qmpevents serve: terminating on signal 15 from pid {os.getpid()} ({me})"
    )

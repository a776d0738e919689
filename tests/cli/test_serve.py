"""`qmpevents serve`: usage errors, scenarios with --exit-after-scenario, a client attached."""

from __future__ import annotations

import asyncio
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

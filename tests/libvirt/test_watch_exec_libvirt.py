"""``qmpevents watch`` and ``exec`` on a libvirt host, as a user types them."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable

import pytest
from click.testing import CliRunner

from qmpevents.cli import main
from tests.libvirt.host import URI, Domain, virsh

pytestmark = pytest.mark.timeout(180)


async def qmpevents(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        "from qmpevents.cli import main; main()",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def watch_while(
    args: list[str], ready_lines: int, action: Callable[[], None]
) -> tuple[str, list[str]]:
    """Run ``watch ARGS``; once it printed ``ready_lines`` on stderr, do ``action``."""
    process = await qmpevents("watch", *args)
    assert process.stdout is not None and process.stderr is not None
    errors: list[str] = []
    try:
        async with asyncio.timeout(90):
            while len(errors) < ready_lines:
                errors.append((await process.stderr.readline()).decode())
            await asyncio.to_thread(action)
            output = (await process.stdout.read()).decode()
            errors += (await process.stderr.read()).decode().splitlines()
            assert await process.wait() == 0, errors
            return output, errors
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def test_watch_every_domain_of_the_host(domains: Callable[..., Domain]) -> None:
    first, second = domains(), domains()

    def act() -> None:
        first.start()
        second.start()
        for domain in (first, second):
            virsh("suspend", domain.name)

    output, errors = asyncio.run(
        watch_while([URI, "--event", "STOP", "--count", "2", "--timeout", "80"], 1, act)
    )
    shown = sorted(line.split()[1:3] for line in output.splitlines())
    assert shown == sorted([[first.name, "STOP"], [second.name, "STOP"]])
    assert errors[0].startswith(f"qmpevents watch: {URI}: connected to {URI} (libvirt ")


def test_watch_one_domain_as_json(domains: Callable[..., Domain]) -> None:
    domain = domains()
    domain.start()
    target = f"{URI}?domain={domain.name}"

    def act() -> None:
        virsh("suspend", domain.name)
        virsh("resume", domain.name)

    output, errors = asyncio.run(watch_while([target, "--json", "--count", "2"], 2, act))
    envelopes = [json.loads(line) for line in output.splitlines()]
    assert [e["event"]["event"] for e in envelopes] == ["STOP", "RESUME"]
    assert {e["vm"] for e in envelopes} == {domain.name}
    assert all(set(e["event"]["timestamp"]) == {"seconds", "microseconds"} for e in envelopes)
    assert any(f"domain {domain.name} running on {URI}" in line for line in errors)


def test_exec_through_libvirt(domains: Callable[..., Domain]) -> None:
    domain = domains()
    domain.start()
    runner = CliRunner()
    target = f"{URI}?domain={domain.name}"
    done = runner.invoke(main, ["exec", target, "stop", "--", "query-status"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.output.splitlines()[-1])["status"] == "paused"
    refused = runner.invoke(main, ["exec", target, "no-such-command"])
    assert refused.exit_code == 1 and "CommandNotFound" in refused.output
    missing = runner.invoke(main, ["exec", f"{URI}?domain=no-such-domain", "query-status"])
    assert missing.exit_code == 2 and "no-such-domain" in missing.output
    whole_host = runner.invoke(main, ["exec", URI, "query-status"])
    assert whole_host.exit_code == 2 and "?domain=NAME" in whole_host.output


def test_without_the_extra_watch_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "libvirt", None)
    done = CliRunner().invoke(main, ["watch", URI])
    assert done.exit_code == 2 and "qmpevents[libvirt]" in done.output

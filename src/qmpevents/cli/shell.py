"""``qmpevents shell``: an interactive QMP shell with completion, history and live events.

    qmpevents shell /run/vm1/qmp.sock
    (QEMU) query-status
    {"status": "running", "singlestep": false, "running": true}
    (QEMU) migrate-set-parameters max-bandwidth=4194304
    {}
    (QEMU) stop
    {}
    12:00:01.250 vm1 STOP

Commands and their argument names complete with Tab, from the VM's own
``query-qmp-schema``; arguments are written as for ``qmpevents exec`` (one JSON
object, or ``key=value`` pairs typed from the schema). Events are printed as
they arrive, above the prompt (qemu.qmp's qmp-shell shows them only when Enter
is pressed on an empty line). History is kept in the user's data directory.
Ctrl-D leaves; Ctrl-C abandons the line being typed.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import click
from prompt_toolkit import PromptSession
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

from qmpevents.cli.event_lines import format_item
from qmpevents.cli.exec import CommandTypes, parse_arguments
from qmpevents.client import QMPClient
from qmpevents.errors import (
    CommandError,
    ConfigError,
    ConnectionLost,
    QMPConnectionError,
    QMPTimeoutError,
)
from qmpevents.sources import parse_target

__all__ = ["QMPCompleter", "shell"]

PROMPT = "(QEMU) "


class QMPCompleter(Completer):
    """Command names first, then ``name=`` for the command's arguments."""

    def __init__(self, entries: Iterable[Mapping[str, Any]]) -> None:
        entries = list(entries)
        by_name = {e.get("name"): e for e in entries}
        self.commands: dict[str, list[str]] = {}
        for entry in entries:
            if entry.get("meta-type") != "command":
                continue
            arg_type = by_name.get(entry.get("arg-type"), {})
            members = [m.get("name", "") for m in arg_type.get("members", [])]
            self.commands[entry["name"]] = members

    def get_completions(
        self, document: Document, complete_event: CompleteEvent
    ) -> Iterator[Completion]:
        text = document.text_before_cursor
        words = text.split()
        if not words or (len(words) == 1 and not text.endswith(" ")):
            prefix = words[0] if words else ""
            for name in sorted(self.commands):
                if name.startswith(prefix):
                    yield Completion(name, start_position=-len(prefix))
            return
        current = "" if text.endswith(" ") else words[-1]
        if "=" in current:
            return
        given = {word.split("=", 1)[0] for word in words[1:]}
        for member in self.commands.get(words[0], []):
            if member.startswith(current) and member not in given:
                yield Completion(f"{member}=", start_position=-len(current))


def _history() -> History:
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    path = base / "qmpevents" / "shell_history"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
    except OSError:
        return InMemoryHistory()  # a read-only home still gets a working shell
    return FileHistory(str(path))


async def _print_events(qmp: QMPClient, vm: str) -> None:
    async with qmp.events(policy="drop-oldest") as events:
        async for item in events:
            print(format_item(vm, item).plain, flush=True)


async def run_shell(target: str, timeout: float | None) -> int:
    """The shell's loop; returns the exit status."""
    spec = parse_target(target)
    async with QMPClient(spec.address) as qmp:
        schema = await qmp.execute("query-qmp-schema", timeout=timeout)
        types = CommandTypes(schema)
        greeting = qmp.greeting
        version = f"QEMU {greeting.version}" if greeting is not None else "QMP"
        click.echo(f"Connected to {spec.text} ({version}). Tab completes; Ctrl-D leaves.")
        session: PromptSession[str] = PromptSession(
            completer=QMPCompleter(schema), history=_history()
        )
        printer = asyncio.ensure_future(_print_events(qmp, spec.name))
        try:
            with patch_stdout(raw=True):
                while True:
                    try:
                        line = await session.prompt_async(PROMPT)
                    except KeyboardInterrupt:
                        continue
                    except EOFError:
                        return 0
                    await _run_line(qmp, line, types, timeout)
        finally:
            printer.cancel()


async def _run_line(qmp: QMPClient, line: str, types: CommandTypes, timeout: float | None) -> None:
    try:
        words = shlex.split(line)
    except ValueError as error:
        print(f"error: {error}")
        return
    if not words:
        return
    name, rest = words[0], words[1:]
    try:
        arguments = parse_arguments(name, rest, types)
        value = await qmp.execute(name, arguments, timeout=timeout)
    except click.BadParameter as error:
        print(f"error: {error.message}")
    except CommandError as error:
        print(f"error: {error.error_class}: {error.desc}")
    except QMPTimeoutError as error:
        print(f"error: {error}")
    else:
        print(json.dumps(value))


@click.command()
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds per reply.")
@click.argument("target")
def shell(target: str, timeout: float | None) -> None:
    """An interactive QMP shell on TARGET: completion, history, events as they come."""
    try:
        spec = parse_target(target)
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="TARGET") from None
    if spec.fleet:
        raise click.BadParameter(
            f"{target}: a nats:// target is a fleet's event stream, not a QMP monitor "
            "(give a socket path or HOST:PORT)",
            param_hint="TARGET",
        )
    if spec.libvirt is not None:
        raise click.BadParameter(
            f"{target}: libvirt holds this domain's monitor; send commands with"
            " qmpevents exec qemu:///system?domain=NAME COMMAND",
            param_hint="TARGET",
        )
    try:
        status = asyncio.run(run_shell(target, timeout))
    except ConnectionLost as error:
        click.echo(f"qmpevents shell: {error}", err=True)
        status = 1
    except QMPConnectionError as error:
        click.echo(f"qmpevents shell: {error}", err=True)
        status = 2
    except KeyboardInterrupt:
        status = 130
    raise SystemExit(status)

"""``qmpevents exec``: send QMP commands to a VM and print each reply as JSON.

    qmpevents exec vm.sock query-status
    qmpevents exec vm.sock migrate-set-parameters max-bandwidth=4194304 downtime-limit=1
    qmpevents exec vm.sock device_del '{"id": "dimm1"}'
    qmpevents exec vm.sock stop -- query-status -- cont

Arguments are one JSON object, or qmp-shell-style ``key=value`` pairs: nested
members use dots (``cache.direct=true``), and each value is typed from the VM's
own ``query-qmp-schema`` (so ``id=123`` stays a string where the schema says
``str``); a member the schema does not describe is read as JSON when it parses,
else as a string. Several commands share one connection, separated by ``--``.

Exit status: 0 when every command returned, 1 at the first error reply (QEMU's
class and desc on stderr; later commands are not sent), 2 for a usage error or
an unreachable target.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any

import click

from qmpevents.client import QMPClient
from qmpevents.errors import CommandError, ConfigError, QMPConnectionError, QMPTimeoutError
from qmpevents.sources import Target, parse_target

__all__ = ["CommandTypes", "exec_command", "parse_arguments", "split_commands"]

_BUILTIN_JSON = {"string": "str", "int": "int", "number": "number", "boolean": "bool"}


def split_commands(words: Sequence[str]) -> list[tuple[str, list[str]]]:
    """``["a", "x=1", "--", "b"]`` -> ``[("a", ["x=1"]), ("b", [])]``."""
    commands: list[tuple[str, list[str]]] = []
    current: list[str] = []
    for word in [*words, "--"]:
        if word != "--":
            current.append(word)
            continue
        if not current:
            raise click.UsageError("an empty command between '--' separators")
        commands.append((current[0], current[1:]))
        current = []
    return commands


class CommandTypes:
    """The JSON types of commands' arguments, read from ``query-qmp-schema`` entries."""

    def __init__(self, entries: Iterable[Mapping[str, Any]]) -> None:
        self._entries = {entry["name"]: entry for entry in entries if "name" in entry}

    def member_type(self, command: str, path: Sequence[str]) -> str | None:
        """``str``, ``int``, ``number``, ``bool`` or ``object`` for a member; None: unknown."""
        entry = self._entries.get(command)
        if entry is None or entry.get("meta-type") != "command":
            return None
        type_name = entry.get("arg-type")
        for part in path:
            entry = self._entries.get(type_name or "")
            if entry is None or entry.get("meta-type") != "object":
                return None
            members = list(entry.get("members", []))
            for variant in entry.get("variants", []):
                variant_entry = self._entries.get(variant.get("type", ""), {})
                members += variant_entry.get("members", [])
            member = next((m for m in members if m.get("name") == part), None)
            if member is None:
                return None
            type_name = member.get("type")
        entry = self._entries.get(type_name or "")
        if entry is None:
            return None
        meta = entry.get("meta-type")
        if meta == "builtin":
            return _BUILTIN_JSON.get(entry.get("json-type", ""))
        if meta == "enum":
            return "str"
        if meta == "object":
            return "object"
        if meta == "alternate":
            # StrOrNull and the like: a string, or null spelled "null".
            kinds = {self._kind(m.get("type", "")) for m in entry.get("members", [])}
            if "str" in kinds and "object" not in kinds:
                return "str-or-null" if "null" in kinds else "str"
        return None

    def _kind(self, type_name: str) -> str | None:
        entry = self._entries.get(type_name, {})
        if entry.get("meta-type") == "builtin":
            json_type = entry.get("json-type", "")
            return "null" if json_type == "null" else _BUILTIN_JSON.get(json_type)
        return {"enum": "str", "object": "object"}.get(entry.get("meta-type", ""))


def _typed(text: str, json_type: str | None, key: str) -> Any:
    if json_type == "str":
        return text
    if json_type == "str-or-null":
        return None if text == "null" else text
    try:
        if json_type == "int":
            return int(text, 0)
        if json_type == "number":
            return float(text)
    except ValueError:
        raise click.BadParameter(f"{key}={text}: expected {json_type}") from None
    if json_type == "bool":
        if text in ("true", "on", "yes"):
            return True
        if text in ("false", "off", "no"):
            return False
        raise click.BadParameter(f"{key}={text}: expected true or false")
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_arguments(command: str, words: Sequence[str], types: CommandTypes | None) -> Any:
    """The ``arguments`` of one command from its words (see the module docstring)."""
    if not words:
        return None
    if len(words) == 1 and words[0].lstrip().startswith("{"):
        try:
            value = json.loads(words[0])
        except ValueError as error:
            raise click.BadParameter(f"{command}: arguments are not JSON: {error}") from None
        if not isinstance(value, dict):
            raise click.BadParameter(f"{command}: arguments must be a JSON object")
        return value
    arguments: dict[str, Any] = {}
    for word in words:
        key, sep, text = word.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{command}: {word!r}: expected KEY=VALUE or a JSON object")
        path = key.split(".")
        json_type = types.member_type(command, path) if types is not None else None
        target = arguments
        for part in path[:-1]:
            nested = target.setdefault(part, {})
            if not isinstance(nested, dict):
                raise click.BadParameter(f"{command}: {key}: {part} is already a value")
            target = nested
        target[path[-1]] = _typed(text, json_type, key)
    return arguments


async def exec_command(
    target: str, commands: list[tuple[str, list[str]]], *, pretty: bool, timeout: float | None
) -> int:
    """Run ``commands`` over one connection; print each return value; the exit status."""
    async with _monitor(parse_target(target)) as execute:
        types: CommandTypes | None = None
        if any(words and "=" in words[0] for _, words in commands):
            types = CommandTypes(await execute("query-qmp-schema", None, timeout))
        for name, words in commands:
            arguments = parse_arguments(name, words, types)
            try:
                value = await execute(name, arguments, timeout)
            except CommandError as error:
                click.echo(f"qmpevents exec: {name}: {error.error_class}: {error.desc}", err=True)
                return 1
            click.echo(json.dumps(value, indent=2 if pretty else None))
    return 0


Execute = Callable[[str, Mapping[str, Any] | None, float | None], Awaitable[Any]]


@contextlib.asynccontextmanager
async def _monitor(spec: Target) -> AsyncIterator[Execute]:
    """A command runner on the target's monitor: our own QMP connection, or libvirt's."""
    libvirt = spec.libvirt
    if libvirt is not None and libvirt.domain is not None:
        domain = libvirt.domain
        async with spec.libvirt_source(reconnect=False) as source:

            async def through_libvirt(
                name: str, arguments: Mapping[str, Any] | None, timeout: float | None
            ) -> Any:
                return await source.execute(domain, name, arguments)

            yield through_libvirt
        return
    async with QMPClient(spec.address) as qmp:

        async def directly(
            name: str, arguments: Mapping[str, Any] | None, timeout: float | None
        ) -> Any:
            return await qmp.execute(name, arguments, timeout=timeout)

        yield directly


@click.command(context_settings={"allow_interspersed_args": False})
@click.option("--pretty", is_flag=True, help="Indent the JSON output.")
@click.option("--timeout", type=click.FloatRange(min=0), help="Seconds to wait for each reply.")
@click.argument("target")
@click.argument(
    "words", nargs=-1, required=True, type=click.UNPROCESSED, metavar="COMMAND [ARGS]..."
)
def exec_(target: str, words: tuple[str, ...], pretty: bool, timeout: float | None) -> None:
    """Send COMMAND (with ARGS) to the QMP monitor at TARGET; print the reply as JSON.

    ARGS is one JSON object or KEY=VALUE pairs (dots for nested members, values
    typed from the VM's schema). Separate several commands with --. TARGET may
    be qemu:///system?domain=NAME: the commands then go through libvirt, as with
    virsh qemu-monitor-command (which marks the domain tainted). Exit status:
    0 all returned, 1 an error reply (on stderr), 2 usage error or unreachable.
    """
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
    if spec.libvirt is not None and spec.libvirt.domain is None:
        raise click.BadParameter(
            f"{target}: name the domain to send to: {spec.libvirt.uri}?domain=NAME",
            param_hint="TARGET",
        )
    commands = split_commands(words)
    try:
        status = asyncio.run(exec_command(target, commands, pretty=pretty, timeout=timeout))
    except ConfigError as error:  # libvirt-python missing
        click.echo(f"qmpevents exec: {error}", err=True)
        status = 2
    except (QMPConnectionError, QMPTimeoutError) as error:
        click.echo(f"qmpevents exec: {error}", err=True)
        status = 2 if isinstance(error, QMPConnectionError) else 1
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)


exec_.name = "exec"

"""The README keeps its word: every command it shows parses, its Python runs as far
as imports go, and the commands that need only a VM run against the simulator."""

from __future__ import annotations

import ast
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from qmpevents.cli import main
from qmpevents.sim.cmdline import parse_command_line
from tests.helpers import REPO
from tests.sim.programs import simulated_vm

README = (REPO / "README.md").read_text()


def _indented_lines() -> list[str]:
    """Command lines of the README's indented blocks, continuations joined."""
    lines: list[str] = []
    pending = ""
    for raw in README.splitlines():
        if not raw.startswith("    ") or raw.startswith("     "):
            if pending:
                lines.append(pending)
                pending = ""
            if not raw.startswith("    "):
                continue
        text = raw.strip()
        if pending:
            text = pending + " " + text
            pending = ""
        if text.endswith("\\"):
            pending = text[:-1].rstrip()
            continue
        lines.append(text)
    return lines


def _words(line: str, program: str) -> list[str] | None:
    """The argv of a README line that runs ``program``, without comments, pipes, redirects."""
    line = re.split(r"\s+#\s", line, maxsplit=1)[0]
    if "|" in line:
        parts = [part.strip() for part in line.split("|")]
        line = next((part for part in parts if part.startswith(program + " ")), "")
    line = re.split(r"\s+>\s", line, maxsplit=1)[0]
    if not line.startswith(program + " "):
        return None
    return shlex.split(line)[1:]


COMMANDS = [w for line in _indented_lines() if (w := _words(line, "qmpevents")) is not None]
CODE = re.findall(r"```python\n(.*?)```", README, re.DOTALL)


def test_the_readme_shows_commands_and_code() -> None:
    assert len(COMMANDS) >= 25 and len(CODE) >= 2


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a)[:60])
def test_each_qmpevents_command_parses(args: list[str], tmp_path: Path) -> None:
    """Options exist and their values are valid; files the example names may be absent."""
    try:
        command = main.get_command(click.Context(main), args[0])
        assert command is not None, f"no command {args[0]!r}"
        command.make_context(args[0], list(args[1:])).close()
    except click.BadParameter as error:
        # An example file or socket that is not on this machine: fine, it is an example.
        assert "does not exist" in str(error) or "No such file" in str(error), error


def test_each_qemu_command_line_parses() -> None:
    found = re.findall(r"`qmpevents-qemu ([^`]+)`", README)
    assert len(found) >= 6
    for line in found:
        argv = shlex.split(line.replace("\n", " ").replace("…", ""))
        if "help" in argv or argv[0] in ("-version", "-h", "-qmp"):
            continue
        parse_command_line(argv)


@pytest.mark.parametrize("code", CODE, ids=lambda c: c.split("\n", 1)[0][:50])
def test_python_snippets_compile_and_import(code: str) -> None:
    tree = ast.parse(code)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            module = __import__(node.module or "", fromlist=[a.name for a in node.names])
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"


@pytest.fixture
def vm(tmp_path: Path) -> Iterator[str]:
    with simulated_vm(tmp_path / "vm.sock") as path:
        yield path


def test_the_exec_examples_run_as_written(vm: str) -> None:
    qmpevents = Path(sys.executable).parent / "qmpevents"
    examples = [args for args in COMMANDS if args[:2] == ["exec", "vm.sock"]]
    assert len(examples) >= 4
    for args in examples:
        result = subprocess.run(
            [str(qmpevents), "exec", vm, *args[2:]], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, (args, result.stderr)

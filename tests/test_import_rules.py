"""The layer rules of docs/architecture.md, enforced: a lower layer never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "qmpevents"

# layer -> the layers it may import (itself always allowed)
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "schema": {"errors"},
    "protocol": {"schema", "errors"},
    "throttle": {"schema", "errors"},
    "aio": {"protocol", "schema", "throttle", "errors"},
    "sim": {"aio", "protocol", "schema", "throttle", "errors"},
    "collect": {"aio", "protocol", "schema", "throttle", "errors"},
    "cli": {"aio", "protocol", "schema", "throttle", "errors", "sim", "collect"},
}


def layer_of(module_path: Path) -> str:
    rel = module_path.relative_to(SRC)
    if len(rel.parts) == 1:
        # cli.py and its command modules (cli_watch.py, ...) are one layer
        return "cli" if rel.stem.startswith("cli") else rel.stem
    return rel.parts[0]


def imported_layers(module_path: Path) -> list[tuple[int, str]]:
    """(line, target layer) for every qmpevents import; '' is the package top level."""
    tree = ast.parse(module_path.read_text(), filename=str(module_path))
    package_parts = ("qmpevents", *module_path.relative_to(SRC).parent.parts)
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package_parts[: len(package_parts) - node.level + 1]
                full = ".".join(base + ((node.module,) if node.module else ()))
                if node.module is None:
                    # "from . import x" names submodules of the base package
                    names = [f"{full}.{alias.name}" for alias in node.names]
                else:
                    names = [full]
            else:
                names = [node.module or ""]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "qmpevents":
                continue
            target = parts[1] if len(parts) > 1 else ""
            found.append((node.lineno, "cli" if target.startswith("cli") else target))
    return found


MODULES = sorted(p for p in SRC.rglob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_module_respects_layers(module: Path) -> None:
    layer = layer_of(module)
    if layer == "__init__":
        return
    assert layer in ALLOWED, f"{module}: unknown layer {layer!r}; see docs/architecture.md"
    for line, target in imported_layers(module):
        assert target != "", f"{module}:{line} imports the package top level"
        assert target == layer or target in ALLOWED[layer], (
            f"{module}:{line}: layer {layer!r} may not import {target!r}"
        )


def test_nothing_imports_cli() -> None:
    for module in MODULES:
        if layer_of(module) == "cli":
            continue
        for line, target in imported_layers(module):
            assert target != "cli", f"{module}:{line} imports cli"


def test_the_rule_checker_catches_a_violation(tmp_path: Path) -> None:
    bad = SRC / "protocol" / "_probe_violation.py"
    try:
        bad.write_text("from qmpevents.aio import server\nfrom .. import sim\n")
        assert imported_layers(bad) == [(1, "aio"), (2, "sim")]
    finally:
        bad.unlink()

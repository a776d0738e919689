"""The layer rules of docs/architecture.md, enforced: a lower layer never imports a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "qmpevents"

# layer -> the layers it may import (itself always allowed). A layer is a folder of
# the package, or a module at its top (errors, addresses, throttle).
BASE = {"errors", "addresses"}
CORE = BASE | {"schema", "protocol", "throttle"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "addresses": {"errors"},
    "schema": {"errors"},
    "protocol": {"schema", "errors"},
    "throttle": {"schema", "errors"},
    "client": CORE,
    "server": CORE,
    "sources": CORE | {"client"},
    "proxy": CORE | {"client", "server"},
    "sim": CORE | {"server", "client"},  # the scenario runner watches as a client does
    "collect": CORE | {"client", "sources"},
    "cli": CORE | {"client", "server", "sources", "proxy", "sim", "collect"},
}

# The sans-IO core does no I/O, keeps no time and starts no thread: whoever calls
# it decides all of that (and tests drive it without a socket or a clock).
FORBIDDEN_STDLIB: dict[str, set[str]] = {
    layer: {"asyncio", "socket", "selectors", "threading", "time", "subprocess"}
    for layer in ("schema", "protocol", "throttle", "errors", "addresses")
}


def layer_of(module_path: Path) -> str:
    rel = module_path.relative_to(SRC)
    return rel.stem if len(rel.parts) == 1 else rel.parts[0]


def imported_modules(module_path: Path) -> list[tuple[int, str]]:
    """(line, top-level name) for every absolute import outside qmpevents."""
    tree = ast.parse(module_path.read_text(), filename=str(module_path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return [(line, name) for line, name in found if name != "qmpevents"]


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
            found.append((node.lineno, target))
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


@pytest.mark.parametrize(
    "module",
    [m for m in MODULES if layer_of(m) in FORBIDDEN_STDLIB],
    ids=lambda p: str(p.relative_to(SRC)),
)
def test_core_imports_no_io_clock_or_threads(module: Path) -> None:
    forbidden = FORBIDDEN_STDLIB[layer_of(module)]
    used = [(line, name) for line, name in imported_modules(module) if name in forbidden]
    assert used == [], f"{module}: the sans-IO core may not import {used}"


PROBE = "from qmpevents.client import connect\nfrom .. import sim\nimport time, os\n"


def test_the_checkers_catch_violations_in_a_probe_module() -> None:
    bad = SRC / "protocol" / "_probe_violation.py"
    try:
        bad.write_text(PROBE)
        assert imported_layers(bad) == [(1, "client"), (2, "sim")]
        assert imported_modules(bad) == [(3, "time"), (3, "os")]
        with pytest.raises(AssertionError, match="may not import 'client'"):
            test_module_respects_layers(bad)
        with pytest.raises(AssertionError, match="may not import"):
            test_core_imports_no_io_clock_or_threads(bad)
    finally:
        bad.unlink()


def test_every_layer_is_declared() -> None:
    layers = {layer_of(m) for m in MODULES} - {"__init__"}
    assert layers <= set(ALLOWED), layers - set(ALLOWED)

"""The repository stands on its own: no test, benchmark or tool reads beside it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests import conftest
from tests.helpers import REPO

CHECKED = sorted(
    path
    for folder in ("tests", "benchmarks", "tools")
    for path in (REPO / folder).rglob("*.py")
    if path.name != "test_self_contained.py"
)


def escaping_literals(source: str) -> list[tuple[int, str]]:
    """String constants that name a place beside the repository."""
    tree = ast.parse(source)
    # A string standing alone as a statement is a docstring: it opens nothing.
    prose = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            text = node.value
            if "../" in text or text.startswith(("/work/", "shared/")) or text == "shared":
                found.append((node.lineno, text))
    return sorted(found)


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(REPO)))
def test_no_path_literal_leaves_the_repository(path: Path) -> None:
    assert escaping_literals(path.read_text()) == []


def test_the_scan_finds_an_escaping_literal() -> None:
    source = 'A = REPO / "shared" / "x"\nB = open("../shared/seed.txt")\nC = "tests/data"\n'
    assert [line for line, _ in escaping_literals(source)] == [1, 2]


def test_the_audit_hook_sees_an_open_beside_the_repository(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Wherever this clone lives, pretend it lives in /nonexistent-root/repo.
    monkeypatch.setattr(conftest, "guard", conftest.Neighbourhood("/nonexistent-root/repo", "/t"))
    with pytest.raises(FileNotFoundError):
        open("/nonexistent-root/shared/seed.txt")  # noqa: SIM115
    with pytest.raises(FileNotFoundError):
        open("/nonexistent-root/repo/tests/x")  # noqa: SIM115
    try:
        assert conftest.outside_opens == ["/nonexistent-root/shared/seed.txt"]
    finally:
        conftest.outside_opens.clear()


def test_neighbourhood() -> None:
    near = conftest.Neighbourhood("/work/main", "/tmp")
    assert near.beside("/work/shared/x")
    assert near.beside("/work/main-other/x")
    assert not near.beside("/work/main/tests")
    assert not near.beside("/tmp/x")
    assert not near.beside("/usr/lib/python3")
    in_temp = conftest.Neighbourhood("/tmp/clone", "/tmp")
    assert not in_temp.beside("/tmp/pytest-of-root/x")

"""The repository stands on its own: no test, benchmark or tool reads beside it."""

from __future__ import annotations

import ast
import tempfile
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


def _in_temp(repo: Path) -> bool:
    return repo.parent == Path(tempfile.gettempdir())


def siblings(repo: Path) -> frozenset[str]:
    """The names of what lies beside the repository here (found, never written down).

    Only folders count, and not one the repository also has inside (``tests``
    beside a clone is no sign).
    """
    if _in_temp(repo):  # a clone in /tmp: its neighbours are anybody's temp files
        return frozenset()
    inside = {p.name for p in repo.iterdir()}
    return frozenset(
        p.name for p in repo.parent.iterdir() if p.is_dir() and p.name not in inside | {repo.name}
    )


def escaping_literals(source: str, repo: Path, beside: frozenset[str]) -> list[tuple[int, str]]:
    """String constants that name a place beside ``repo``: a climb (``../``), an absolute
    path next to it, or a path into one of its sibling folders ``beside`` (``NAME/...``;
    a bare word is not a path: beside a clone in /tmp, any word may name a folder)."""
    tree = ast.parse(source)
    # A string standing alone as a statement is a docstring: it opens nothing.
    prose = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Expr)}
    parent = f"{repo.parent}/"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose:
            text = node.value
            absolute_beside = (
                not _in_temp(repo) and text.startswith(parent) and not text.startswith(f"{repo}/")
            )
            first, slash, _ = text.partition("/")
            if "../" in text or absolute_beside or (slash and first in beside):
                found.append((node.lineno, text))
    return sorted(found)


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(REPO)))
def test_no_path_literal_leaves_the_repository(path: Path) -> None:
    assert escaping_literals(path.read_text(), REPO, siblings(REPO)) == []


def test_the_scan_finds_an_escaping_literal() -> None:
    repo = Path("/nonexistent-root/repo")
    source = (
        'A = REPO.parent / "elsewhere/seed.txt"\n'
        'B = open("../elsewhere/seed.txt")\n'
        'C = "tests/data"\n'
        'D = "/nonexistent-root/elsewhere/y"\n'
        'E = "/nonexistent-root/repo/tests"\n'
    )
    found = escaping_literals(source, repo, frozenset({"elsewhere"}))
    assert [line for line, _ in found] == [1, 2, 4]


def test_the_audit_hook_sees_an_open_beside_the_repository(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Wherever this clone lives, pretend it lives in /nonexistent-root/repo.
    monkeypatch.setattr(conftest, "guard", conftest.Neighbourhood("/nonexistent-root/repo", "/t"))
    with pytest.raises(FileNotFoundError):
        open("/nonexistent-root/elsewhere/seed.txt")  # noqa: SIM115
    with pytest.raises(FileNotFoundError):
        open("/nonexistent-root/repo/tests/x")  # noqa: SIM115
    try:
        assert conftest.outside_opens == ["/nonexistent-root/elsewhere/seed.txt"]
    finally:
        conftest.outside_opens.clear()


def test_neighbourhood() -> None:
    near = conftest.Neighbourhood("/srv/main", "/tmp")
    assert near.beside("/srv/elsewhere/x")
    assert near.beside("/srv/main-other/x")
    assert not near.beside("/srv/main/tests")
    assert not near.beside("/tmp/x")
    assert not near.beside("/usr/lib/python3")
    in_temp = conftest.Neighbourhood("/tmp/clone", "/tmp")
    assert not in_temp.beside("/tmp/pytest-of-root/x")

"""Guards that hold for every test: the suite reads nothing beside the repository.

A user's clone has nothing next to it, so a test that opens a file in a sibling
directory (a shared folder, another checkout) passes here and fails for them. An
audit hook sees every ``open`` in this process; the test that caused one fails.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.helpers import REPO


@dataclass(frozen=True)
class Neighbourhood:
    """Which paths lie next to a repository rather than in it (or elsewhere)."""

    repo: str
    temp: str

    def beside(self, path: str) -> bool:
        full = os.path.abspath(path)
        parent = os.path.dirname(self.repo) + os.sep
        return (
            full.startswith(parent)
            and not (full + os.sep).startswith(self.repo + os.sep)
            # Tests make their files under the temp directory; when the clone itself
            # lives there, its neighbours are caught by the literal scan instead.
            and not full.startswith(self.temp + os.sep)
        )


guard = Neighbourhood(str(REPO), os.path.realpath(tempfile.gettempdir()))
outside_opens: list[str] = []


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and args and isinstance(args[0], str | bytes | os.PathLike):
        path = os.fsdecode(args[0])
        if guard.beside(path):
            outside_opens.append(path)


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def _reads_only_the_repository() -> Iterator[None]:
    yield
    if outside_opens:
        found = sorted(set(outside_opens))
        outside_opens.clear()
        pytest.fail(f"opened paths outside the repository: {found}", pytrace=False)

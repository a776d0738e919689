"""Guards that hold for every test: the suite reads nothing beside the repository.

A user's clone has nothing next to it, so a test that opens a file in a sibling
directory (``../shared``, another checkout) passes here and fails for them. An
audit hook sees every ``open`` in this process; the test that caused one fails.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator

import pytest

from tests.helpers import REPO

_BESIDE = str(REPO.parent) + os.sep
_INSIDE = str(REPO) + os.sep
# Tests make their files under the temp directory; when the clone itself lives
# there, its neighbours are only caught by the literal scan of test_self_contained.
_TEMP = os.path.realpath(tempfile.gettempdir()) + os.sep
outside_opens: list[str] = []


def beside_repository(path: str) -> bool:
    """Whether ``path`` lies next to the repository rather than in it (or elsewhere)."""
    full = os.path.abspath(path)
    return (
        full.startswith(_BESIDE)
        and not (full + os.sep).startswith(_INSIDE)
        and not full.startswith(_TEMP)
    )


def _audit(event: str, args: tuple[object, ...]) -> None:
    if event == "open" and args and isinstance(args[0], str | bytes | os.PathLike):
        path = os.fsdecode(args[0])
        if beside_repository(path):
            outside_opens.append(path)


sys.addaudithook(_audit)


@pytest.fixture(autouse=True)
def _reads_only_the_repository() -> Iterator[None]:
    yield
    if outside_opens:
        found = sorted(set(outside_opens))
        outside_opens.clear()
        pytest.fail(f"opened paths outside the repository: {found}", pytrace=False)

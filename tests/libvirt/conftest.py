"""Fixtures of the libvirt tests: a reachable libvirtd, and domains destroyed after use."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.libvirt.host import Domain, require_libvirt


@pytest.fixture
def domains(tmp_path: Path) -> Iterator[Callable[..., Domain]]:
    """Make domains (not started); every one is destroyed when the test ends."""
    require_libvirt()
    made: list[Domain] = []

    def make(**options: str) -> Domain:
        domain = Domain(tmp_path, **options)
        made.append(domain)
        return domain

    yield make
    for domain in made:
        domain.destroy()

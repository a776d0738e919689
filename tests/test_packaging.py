"""The package installs like any Python tool: build, check, install, run.

A wheel and an sdist are built from a copy of the repository (so the checkout
stays clean), ``twine check`` accepts both, the wheel holds everything the
commands need at run time and nothing of the tests, and ``qmpevents demo`` runs
from a fresh virtual environment that has only the wheel and its dependencies.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO

SEVEN = (
    "DUMP_COMPLETED",
    "GUEST_PANICKED",
    "MEM_UNPLUG_ERROR",
    "QUORUM_FAILURE",
    "QUORUM_REPORT_BAD",
    "MIGRATION_PASS",
    "VSERPORT_CHANGE",
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md"):
        if (REPO / name).exists():
            shutil.copy2(REPO / name, source / name)
    shutil.copytree(
        REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out


def test_twine_accepts_the_wheel_and_the_sdist(dist: Path) -> None:
    files = sorted(dist.iterdir())
    assert {f.suffix for f in files} == {".whl", ".gz"}
    result = subprocess.run(
        [sys.executable, "-m", "twine", "check", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_wheel_carries_what_commands_need_and_no_tests(dist: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "qmpevents/sim/scenarios/demo.toml" in names
    assert "qmpevents/sim/data/libvirt-qemu-7.2.json" in names
    assert "qmpevents/py.typed" in names
    assert not [n for n in names if n.startswith("tests/")]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "qmpevents = qmpevents.cli:main" in text
    assert "qmpevents-qemu = qmpevents.sim.main:main" in text


def test_demo_runs_from_a_fresh_venv_with_only_the_wheel(dist: Path, tmp_path: Path) -> None:
    (wheel,) = dist.glob("*.whl")
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    subprocess.run(
        [str(bin_dir / "python"), "-m", "pip", "install", "--quiet", str(wheel)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    version = subprocess.run(
        [str(bin_dir / "qmpevents"), "--version"], capture_output=True, text=True, timeout=60
    )
    assert version.returncode == 0 and "qmpevents, version" in version.stdout
    demo = subprocess.run(
        [str(bin_dir / "qmpevents"), "demo"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    for name in SEVEN:
        assert name in demo.stdout

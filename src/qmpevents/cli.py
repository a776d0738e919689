"""The ``qmpevents`` command line."""

from __future__ import annotations

from importlib.metadata import version

import click


@click.group()
@click.version_option(version("qmpevents"), prog_name="qmpevents")
def main() -> None:
    """The QEMU Machine Protocol event system: validate, serve, watch and collect events."""

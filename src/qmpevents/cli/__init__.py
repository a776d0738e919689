"""The ``qmpevents`` command line: one module per subcommand, gathered here.

Exit statuses follow one rule across commands: 0 success, 1 the input or the run
was not what it should be (invalid messages, a timeout), 2 a usage error (bad
options, unreadable files, unreachable targets), 130 interrupted.
"""

from __future__ import annotations

from importlib.metadata import version

import click

from qmpevents.cli.collect import collect
from qmpevents.cli.demo import demo
from qmpevents.cli.exec import exec_
from qmpevents.cli.history import history, stats
from qmpevents.cli.proxy import proxy
from qmpevents.cli.replay import replay_command
from qmpevents.cli.serve import serve
from qmpevents.cli.shell import shell
from qmpevents.cli.ui import ui
from qmpevents.cli.validate import validate
from qmpevents.cli.watch import watch


@click.group()
@click.version_option(version("qmpevents"), prog_name="qmpevents")
def main() -> None:
    """The QEMU Machine Protocol event system: validate, serve, watch and collect events."""


for command in (
    validate,
    watch,
    exec_,
    shell,
    history,
    stats,
    collect,
    serve,
    demo,
    proxy,
    replay_command,
    ui,
):
    main.add_command(command)

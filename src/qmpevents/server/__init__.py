"""The asyncio QMP server that speaks exactly like QEMU 7.2.

- :class:`QMPServer` (:mod:`.server`): commands, declared events, VM run state and
  the one rate limiter, served on any number of sockets.
- :mod:`.monitor`: one client connection; :mod:`.sockets`: listening sockets,
  one client at a time like QEMU; :mod:`.broadcast`: timestamp, encode once,
  rate-limit, deliver; :mod:`.commands` and :mod:`.builtins`: the command
  registry and the commands every QMP server has; :mod:`.vmstate`: STOP/RESUME.
"""

from qmpevents.server.commands import CommandContext, QMPCommandFailure
from qmpevents.server.server import (
    DEFAULT_OUTPUT_LIMIT,
    QMPServer,
    default_greeting,
    install_signal_handlers,
)

__all__ = [
    "DEFAULT_OUTPUT_LIMIT",
    "CommandContext",
    "QMPCommandFailure",
    "QMPServer",
    "default_greeting",
    "install_signal_handlers",
]

"""Answers recorded from QEMU 7.2, for what libvirt asks and the simulator does not model.

Before libvirt uses a QEMU binary it asks it about itself (its capability
probe: CPU models, device and object properties, command-line options, ...),
and when it starts a domain it reads the ~400 properties of the guest CPU. The
simulator models none of that. Rather than invent answers it gives QEMU 7.2's
own, from ``qmpevents/sim/data/libvirt-qemu-7.2.json`` (``-ppc64.json`` for
``qmpevents-qemu-ppc64``, :mod:`qmpevents.sim.target`): what QEMU answered
libvirtd, recorded by ``tools/record_libvirt.py`` (``make libvirt-recording``).

The rules, so that a recording never hides or contradicts the model:

* The simulator's own commands win. :meth:`Recording.install` runs last when
  a machine is set up and registers a recorded command only when nothing
  registered that name. The session and introspection commands
  (``qmp_capabilities``, ``query-commands``, ``query-qmp-schema``) are never
  taken from a recording: they describe what this server answers.
* A recorded command is declared as QEMU declared it: arguments and return
  type come from the recorded ``query-qmp-schema``
  (:mod:`qmpevents.sim.recorded_schema`). So ``query-commands`` and
  ``query-qmp-schema`` list exactly the commands the simulator answers, and
  bad arguments get QEMU's argument errors.
* Arguments that were recorded (the same members and values, in any order)
  get the recorded answer: the return value, or the error with its class and
  text (``DeviceNotFound`` for ``device-list-properties`` of an s390 device).
* Any other arguments get a ``GenericError`` that says the simulator cannot
  answer them. QEMU would answer, and no invented value would be right; an
  error is what a client can handle and a person can read.

Where the model knows better (its machine types, KVM, QOM types, TPM,
command-line options: :mod:`qmpevents.sim.capabilities`, :mod:`qmpevents.sim.qom`)
it registers the command itself and takes from the recording only what it
lacks, with :meth:`Recording.reply`; so can a model that answers a recorded
command for some arguments only (``qom-list`` of ``/machine/peripheral``).

What the x86_64 recording holds describes QEMU 7.2's binary (x86_64, TCG, no KVM) and
its ``qemu64`` CPU (``qom-get``/``qom-list`` of ``/machine/unattached/device[0]``),
the CPU libvirt gives a pc or q35 domain under TCG. The simulator keeps no CPU
model of its own: under another ``-cpu`` those answers describe the wrong CPU.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import TYPE_CHECKING, Any, Final

import msgspec

from qmpevents.errors import ConfigError
from qmpevents.protocol.requests import GENERIC_ERROR
from qmpevents.server.commands import CommandContext, QMPCommandFailure
from qmpevents.sim.recorded_schema import RecordedCommand, RecordedSchema

if TYPE_CHECKING:
    from qmpevents.server.server import QMPServer

__all__ = ["Answer", "Recording", "arguments_of", "bundled"]

# Answered by the session and the registry from what this server really is.
_NEVER_RECORDED: Final = frozenset({"qmp_capabilities", "query-commands", "query-qmp-schema"})


@dataclass(frozen=True, slots=True)
class Answer:
    """A recorded answer: a return value, or an error (``error_class``, ``desc``)."""

    value: Any = None
    error: tuple[str, str] | None = None

    def reply(self) -> Any:
        """The return value, or raise the recorded error as this command's failure."""
        if self.error is not None:
            raise QMPCommandFailure(*self.error)
        return self.value


def _key(arguments: Mapping[str, Any]) -> str:
    return json.dumps(arguments, sort_keys=True, separators=(",", ":"))


class Recording:
    """QEMU's answers to the questions of one recording, by command and arguments.

    ``entries`` is the data file's list of ``{"execute", "arguments", "return"
    | "error"}``; ``source`` names it in errors. A malformed entry, or one
    question answered twice, is a :class:`ConfigError`.
    """

    def __init__(self, entries: Sequence[Any], source: str) -> None:
        self.source = source
        self._answers: dict[str, dict[str, Answer]] = {}
        for index, entry in enumerate(entries):
            command, arguments, answer = _read_entry(entry, f"{source}: entry {index}")
            by_arguments = self._answers.setdefault(command, {})
            if _key(arguments) in by_arguments:
                raise ConfigError(f"{source}: entry {index}: {command} is recorded twice")
            by_arguments[_key(arguments)] = answer
        schema = self._answers.get("query-qmp-schema", {}).get(_key({}))
        self._schema = RecordedSchema(schema.value if schema and schema.value else [])

    @property
    def commands(self) -> list[str]:
        """The recorded commands, sorted."""
        return sorted(self._answers)

    def questions(self, command: str) -> int:
        """How many different arguments of ``command`` were recorded."""
        return len(self._answers.get(command, {}))

    def answer(self, command: str, arguments: Mapping[str, Any]) -> Answer | None:
        """QEMU's answer to ``command`` with exactly ``arguments``; None if never recorded."""
        return self._answers.get(command, {}).get(_key(arguments))

    def recorded_value(self, command: str, arguments: Mapping[str, Any] | None = None) -> Any:
        """The recorded return value of a question (ConfigError if not recorded or an error)."""
        answer = self.answer(command, arguments or {})
        if answer is None or answer.error is not None:
            raise ConfigError(f"{self.source}: no return value recorded for {command}")
        return answer.value

    def declaration(self, command: str) -> RecordedCommand:
        """How QEMU declared ``command`` (ConfigError if its recorded schema does not)."""
        return self._schema.command(command)

    def install(self, server: QMPServer) -> list[str]:
        """Register every recorded command ``server`` does not have; returns their names.

        Call it after everything else is registered: a name registered later
        would clash (``ConfigError``), and the model must win.
        """
        installed = []
        for command in self.commands:
            if command in _NEVER_RECORDED or command in server.commands:
                continue
            declared = self.declaration(command)
            server.register(
                command,
                functools.partial(self._handle, command),
                declared.args,
                returns=declared.returns,
                allow_oob=declared.allow_oob,
            )
            installed.append(command)
        return installed

    def reply(self, command: str, arguments: Mapping[str, Any]) -> Any:
        """The recorded return value of a question; raises its recorded error, or
        :meth:`unanswerable` when it was never recorded."""
        answer = self.answer(command, arguments)
        if answer is None:
            raise self.unanswerable(command, arguments)
        return answer.reply()

    def unanswerable(self, command: str, arguments: Mapping[str, Any]) -> QMPCommandFailure:
        """The GenericError for a question the recording does not answer."""
        return QMPCommandFailure(
            GENERIC_ERROR,
            f"qmpevents-qemu cannot answer {command} {_key(arguments)}: it knows only QEMU "
            f"7.2's answers to the arguments libvirt sends ({self.questions(command)} recorded)",
        )

    def _handle(self, command: str, args: msgspec.Struct, ctx: CommandContext) -> Any:
        return self.reply(command, arguments_of(args))


def arguments_of(args: msgspec.Struct) -> dict[str, Any]:
    """The members a client sent, from its arguments Struct (absent optional ones omitted)."""
    value: dict[str, Any] = msgspec.to_builtins(args)
    return value


@functools.cache
def bundled(arch: str = "x86_64") -> Recording:
    """The recording of the QEMU binary of target ``arch``, shipped in the package
    (read once per process; :mod:`qmpevents.sim.target`)."""
    from qmpevents.sim.target import TARGETS

    data_file = TARGETS[arch].data_file
    data = resources.files("qmpevents.sim").joinpath("data", data_file)
    try:
        entries = msgspec.json.decode(data.read_bytes())
    except (OSError, msgspec.DecodeError) as error:
        raise ConfigError(f"{data_file}: cannot be read: {error}") from None
    if not isinstance(entries, list):
        raise ConfigError(f"{data_file}: not a JSON list")
    return Recording(entries, data_file)


def _read_entry(entry: Any, where: str) -> tuple[str, dict[str, Any], Answer]:
    """Check one entry of a data file; ConfigError naming ``where`` and what is wrong."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: not a JSON object")
    command, arguments = entry.get("execute"), entry.get("arguments", {})
    if not isinstance(command, str) or not command:
        raise ConfigError(f"{where}: 'execute' must be a command name")
    if not isinstance(arguments, dict):
        raise ConfigError(f"{where}: 'arguments' of {command} must be an object")
    unknown = set(entry) - {"execute", "arguments", "return", "error"}
    if unknown or ("return" in entry) == ("error" in entry):
        raise ConfigError(f"{where}: {command} needs either 'return' or 'error', nothing else")
    if "return" in entry:
        return command, arguments, Answer(entry["return"])
    error = entry["error"]
    if not (
        isinstance(error, dict)
        and set(error) == {"class", "desc"}
        and all(isinstance(v, str) for v in error.values())
    ):
        raise ConfigError(f"{where}: the error of {command} needs 'class' and 'desc' strings")
    return command, arguments, Answer(error=(error["class"], error["desc"]))

"""Accelerators: QEMU 7.2's ``configure_accelerators()`` on a host without KVM.

Debian's ``qemu-system-x86_64`` 7.2 is built with two accelerators, ``tcg`` and
``kvm`` (``-accel help``); any other name is an ``invalid accelerator``. It
tries the ones it is given in order, ``-machine accel=kvm:tcg`` or one
``-accel`` option each, and keeps the first that starts. The simulator runs no
guest code, so no accelerator does anything here; it answers as that QEMU does
on the same host. Where ``/dev/kvm`` cannot be opened (measured with it hidden):
``kvm`` fails with QEMU's two lines, a list goes on to ``tcg`` with ``falling
back to tcg``, ``kvm`` alone ends the program with status 1, and ``query-kvm``
says ``present`` (KVM support is built in) and not ``enabled``. Where it can,
``kvm`` starts and ``query-kvm`` says ``enabled``, as QEMU's does. libvirt's
capability probe (``-machine none,accel=kvm:tcg``) must see that: it re-probes an
emulator that said no KVM on a host where ``/dev/kvm`` is usable, at every
domain start. ``QMPEVENTS_SIM_KVM_DEVICE`` names another device (a missing path
plays a host without KVM).

QEMU does this after ``-daemonize``, before it creates the machine; so does
``Machine.start()``, through :func:`start_accelerator`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from qmpevents.sim.cmdline import CommandLineError
from qmpevents.sim.help import ACCELERATORS
from qmpevents.sim.opts import OptionError, parse_bool, parse_opts
from qmpevents.sim.target import TARGETS

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["AccelError", "AccelOutcome", "configure_accelerators", "start_accelerator"]

# qom-list-properties of tcg-accel and kvm-accel in QEMU 7.2 (QOM's "type" aside).
_PROPERTIES: Final = {
    "tcg": frozenset({"thread", "tb-size", "split-wx"}),
    "kvm": frozenset(
        {"kernel-irqchip", "notify-window", "dirty-ring-size", "notify-vmexit", "kvm-shadow-mem"}
    ),
}
# QEMU's kvm_init() prints this line itself (no program name), then error_report().
_NO_KVM_MODULE: Final = "Could not access KVM kernel module: No such file or directory"
_NO_KVM: Final = "failed to initialize kvm: No such file or directory"
# QEMU's default for a program whose name does not end in "kvm".
_DEFAULT: Final = "tcg:kvm"


@dataclass(frozen=True, slots=True)
class _Request:
    """One accelerator to try: its name, properties, and the option QEMU names in errors."""

    name: str
    properties: dict[str, str] = field(default_factory=dict)
    location: str | None = None


@dataclass(slots=True)
class AccelOutcome:
    """What starting the accelerators did.

    ``name`` is the accelerator in use (None: none started, the program exits
    with status 1). ``lines`` are what QEMU prints on stderr meanwhile, in
    order, each with whether it goes through ``error_report()`` (program name,
    ``-msg timestamp=on``) or is printed as it is.
    """

    name: str | None = None
    lines: list[tuple[str, bool]] = field(default_factory=list)

    def report(self, message: str, location: str | None = None) -> None:
        """Add an ``error_report()`` line, after ``location: `` when QEMU names the option."""
        self.lines.append((f"{location}: {message}" if location else message, True))


def kvm_usable() -> bool:
    """Whether QEMU could open the KVM device here (``QMPEVENTS_SIM_KVM_DEVICE``, ``/dev/kvm``)."""
    device = os.environ.get("QMPEVENTS_SIM_KVM_DEVICE", "/dev/kvm")
    return os.access(device, os.R_OK | os.W_OK)


def configure_accelerators(
    machine_accel: str | None,
    accel_options: Sequence[str],
    *,
    kvm: bool | None = None,
    built_with: Sequence[str] = ACCELERATORS,
) -> AccelOutcome:
    """Start the first accelerator that can start, as QEMU 7.2 does.

    ``kvm`` says whether KVM can start (default: :func:`kvm_usable`);
    ``built_with`` names the accelerators the binary has (the target's).

    ``machine_accel`` is ``-machine accel=`` (a ``:`` list; None when not given),
    ``accel_options`` the values of the ``-accel`` options in order. A property
    error ends the program at once, as QEMU's ``error_fatal`` does:
    :class:`AccelError`, with the lines printed before it in ``error.outcome``.
    """
    outcome = AccelOutcome()
    kvm = kvm_usable() if kvm is None else kvm
    failed = False
    requests: list[_Request] = []
    if not accel_options:
        names = machine_accel if machine_accel is not None else _DEFAULT
        # g_strsplit("") gives no names at all; "tcg:" gives "tcg" and "".
        for name in names.split(":") if names else []:
            if name in built_with:
                requests.append(_Request(name))
            else:
                failed = True
                outcome.report(f"invalid accelerator {name}")
    elif machine_accel is not None:
        raise _fatal(outcome, 'The -accel and "-machine accel=" options are incompatible')
    for text in accel_options:
        properties = parse_opts(text, "accel")
        name = properties.pop("accel", "")
        requests.append(_Request(name, properties, f"-accel {text}"))
    for request in requests:
        if request.name not in built_with:
            failed = True
            outcome.report(f"invalid accelerator {request.name}", request.location)
            continue
        _check_properties(request, outcome)
        if request.name == "kvm" and not kvm:
            failed = True
            outcome.lines.append((_NO_KVM_MODULE, False))
            outcome.report(_NO_KVM, request.location)
            continue
        outcome.name = request.name
        break
    if outcome.name is None and not failed:
        outcome.report("no accelerator found")
    elif outcome.name is not None and failed:
        outcome.report(f"falling back to {outcome.name}")
    return outcome


def _check_properties(request: _Request, outcome: AccelOutcome) -> None:
    location = request.location
    for key, value in request.properties.items():
        if key not in _PROPERTIES[request.name]:
            raise _fatal(outcome, f"Property '{request.name}-accel.{key}' not found", location)
        # kvm fails to start in any case; its values are not checked (nor measured).
        if request.name != "tcg":
            continue
        if key == "thread" and value not in ("single", "multi"):
            raise _fatal(outcome, f"Invalid 'thread' setting {value}", location)
        if key == "tb-size" and not re.fullmatch(r"\d+", value):
            raise _fatal(outcome, "Parameter 'tb-size' expects uint64", location)
        if key == "split-wx":
            try:
                parse_bool(value, key)
            except OptionError as error:
                raise _fatal(outcome, str(error), location) from None


class AccelError(CommandLineError):
    """An accelerator option QEMU ends on; ``outcome.lines`` were printed before it."""

    def __init__(self, message: str, outcome: AccelOutcome) -> None:
        super().__init__(message)
        self.outcome = outcome


def _fatal(outcome: AccelOutcome, message: str, location: str | None = None) -> AccelError:
    return AccelError(f"{location}: {message}" if location else message, outcome)


def start_accelerator(machine: Machine) -> str:
    """Start ``machine``'s accelerator as its command line asks; returns its name.

    QEMU's lines go to the machine's stderr as QEMU prints them. When none
    starts, the last of them is raised as :class:`CommandLineError` for the
    program to print (status 1), as QEMU exits after it.
    """
    config = machine.config
    try:
        outcome = configure_accelerators(
            config.machine_accel,
            config.accel_options,
            built_with=TARGETS[config.target].accelerators,
        )
    except AccelError as error:
        _print(machine, error.outcome.lines)
        raise CommandLineError(str(error)) from None
    if outcome.name is None:
        _print(machine, outcome.lines[:-1])
        raise CommandLineError(outcome.lines[-1][0])
    _print(machine, outcome.lines)
    return outcome.name


def _print(machine: Machine, lines: list[tuple[str, bool]]) -> None:
    for line, reported in lines:
        if reported:
            machine.error_report(line)
        else:
            machine.stderr.write(f"{line}\n")
            machine.stderr.flush()

"""A scenario bound to a machine that someone else started: ``-x-sim-scenario FILE``.

A test of a management stack (libvirt, Nova, KubeVirt, Proxmox) does not start
the emulator itself: the stack does, with its own command line. To script what
the guest does there ("panic 30 s after boot"), the emulator is given the
scenario on that command line, e.g. through libvirt's ``<qemu:commandline>``::

    <qemu:commandline>
      <qemu:arg value='-x-sim-scenario'/>
      <qemu:arg value='/etc/qmpevents/panic-after-boot.toml'/>
    </qemu:commandline>

(QEMU spells experimental options ``x-``; libvirt marks such a domain tainted,
"custom-argv".) The command line describes the machine, so a bound scenario
has no ``[machine]`` table; its images, drives and steps are as in any
scenario. Its timeline starts when the guest first runs (after libvirt's
``cont`` of a machine started with ``-S``), once per emulator process. A step
that fails is reported on stderr as QEMU reports errors (libvirt keeps it in
the domain's log) and ends the timeline; the machine keeps running, as the
management stack expects of a guest.
"""

from __future__ import annotations

import os
import tomllib

from qmpevents.errors import ConfigError
from qmpevents.sim.machine import Machine
from qmpevents.sim.scenario import Scenario, load_scenario
from qmpevents.sim.scenario_runner import run_scenario

__all__ = ["load_bound_scenario", "play_bound_scenario"]

OPTION = "-x-sim-scenario"


def load_bound_scenario(path: str | os.PathLike[str]) -> Scenario:
    """The scenario at ``path``, checked for binding; ``ConfigError`` names what is wrong."""
    scenario = load_scenario(path)
    if "machine" in tomllib.loads(scenario.text):
        raise ConfigError(
            f"{OPTION} {os.fspath(path)}: [machine] describes a machine, which the command"
            " line gives here: leave the table out"
        )
    return scenario


async def play_bound_scenario(machine: Machine, scenario: Scenario) -> None:
    """Wait for the guest's first run, then play the timeline; report a failure, never raise."""
    await machine.server.vm.first_run()
    try:
        await run_scenario(machine, scenario)
    except ConfigError as error:  # ScenarioError: a step failed, with its line
        machine.error_report(f"{OPTION}: {error}")

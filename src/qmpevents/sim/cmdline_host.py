"""Host-side options of the ``qmpevents-qemu`` command line, read as QEMU 7.2 reads them.

These are the options libvirt passes for every domain besides its devices:
``-name``, ``-cpu``, ``-smp``, ``-numa``, ``-overcommit``, ``-rtc``, ``-boot``,
``-audiodev`` and ``-sandbox``. Each is checked with QEMU's syntax and QEMU's
messages (measured on qemu-system-x86_64 7.2), and then either modelled or
refused with a message that says what the simulator lacks. Nothing is dropped:

* modelled: the guest name and ``debug-threads`` (the vCPU threads are real,
  and named as QEMU names them), the ``qemu64`` CPU and the topology that
  ``query-hotpluggable-cpus``/``query-cpus-fast`` report, NUMA nodes (their
  memory and CPUs), ``mem-lock`` (``mlockall``), ``-sandbox`` (a real seccomp
  filter, :mod:`qmpevents.sim.sandbox`);
* accepted because nothing the simulator shows depends on them: ``-rtc`` (the
  simulated guest never reads its clock), ``-boot`` (it boots at once, from no
  device in particular), ``-overcommit cpu-pm`` (a KVM hint), ``-audiodev
  driver=none`` (no audio, which is what ``none`` means);
* refused: other CPU models or CPU features (libvirt's recorded CPU answers
  describe plain qemu64), ``-numa`` types other than ``node``, audio drivers
  that would play or record something.

Errors QEMU reports while it reads an option carry the option (``-rtc foo=bar:
Invalid parameter 'foo'``, an :class:`OptionError`); those it reports later,
building the machine, do not (``Invalid CPU topology: ...``, a
:class:`~qmpevents.sim.cmdline.CommandLineError` raised by the caller from
:class:`LateError`).
"""

from __future__ import annotations

import re
from typing import Any, Final

from qmpevents.errors import ConfigError
from qmpevents.sim.config import CpuTopology, MachineConfig, NumaNode
from qmpevents.sim.opts import OptionError, parse_bool, parse_opts, parse_tree
from qmpevents.sim.target import TARGETS

__all__ = ["HOST_OPTIONS", "HostOptions", "LateError", "compute_topology", "parse_mon"]

HOST_OPTIONS: Final = frozenset(
    {"-cpu", "-overcommit", "-numa", "-rtc", "-boot", "-audiodev", "-sandbox"}
)
"""Options with an argument that this module reads (``-name`` and ``-smp`` too)."""

# QAPI AudiodevDriver in QEMU 7.2: the names -audiodev knows, built in or not.
_AUDIO_DRIVERS: Final = (
    "none", "alsa", "coreaudio", "dbus", "dsound", "jack", "oss", "pa", "sdl", "spice", "wav",
)  # fmt: skip
_SANDBOX_KEYS: Final = {
    "obsolete": ("allow", "deny"),
    "elevateprivileges": ("allow", "deny", "children"),
    "spawn": ("allow", "deny"),
    "resourcecontrol": ("allow", "deny"),
}
_MAX_NODES: Final = 128  # MAX_NODES in include/sysemu/numa.h
_DATE: Final = re.compile(r"^\d{4}-\d{2}-\d{2}(T\d{2}:\d{2}:\d{2})?$")
_BOOT_DEVICES: Final = "abcdefghijklmnop"
_BOOT_KEYS: Final = {
    "order": "str", "once": "str", "menu": "bool", "splash": "str", "splash-time": "int",
    "reboot-timeout": "int", "strict": "bool",
}  # fmt: skip
_SMP_KEYS: Final = ("cpus", "sockets", "dies", "clusters", "cores", "threads", "maxcpus")
# Machine types whose CPU topology has dies (x86) and the most CPUs each takes.
_DIES: Final = frozenset({"pc", "q35"})


class LateError(ConfigError):
    """A check QEMU makes once the machine is built: its message has no option prefix."""


def _known_keys(opts: dict[str, str], allowed: tuple[str, ...] | frozenset[str]) -> None:
    for key in opts:
        if key not in allowed:
            raise OptionError(f"Invalid parameter '{key}'")


class HostOptions:
    """Readers of the host-side options for one command line, filling ``config``."""

    def __init__(self, config: MachineConfig) -> None:
        self.config = config
        self.smp: dict[str, str] = {}
        self.numa: list[tuple[str, str]] = []  # (option as given, value), read late

    def handlers(self) -> dict[str, Any]:
        """The option readers, by option name (for the command-line parser)."""
        return {
            "-name": self.name, "-cpu": self.cpu, "-smp": self.smp_option,
            "-overcommit": self.overcommit, "-rtc": self.rtc, "-boot": self.boot,
            "-audiodev": self.audiodev, "-sandbox": self.sandbox,
        }  # fmt: skip

    def name(self, value: str) -> None:
        opts = parse_opts(value, "guest")
        _known_keys(opts, ("guest", "process", "debug-threads"))
        if "debug-threads" in opts:
            self.config.debug_threads = parse_bool(opts["debug-threads"], "debug-threads")
        if "guest" in opts:  # QEMU merges -name options: a later one keeps earlier keys
            self.config.name = opts["guest"]
        if "process" in opts:
            self.config.process_name = opts["process"]

    def cpu(self, value: str) -> None:
        target = TARGETS[self.config.target]
        model, _, features = value.partition(",")
        known = " or ".join(sorted(set(target.cpu_models)))
        if model in ("help", "?"):
            raise OptionError(f"qmpevents-qemu lists no CPU models: it simulates only {known}")
        cpu = target.cpu_model(model)
        if cpu is None:
            raise OptionError(f"qmpevents-qemu simulates only the {known} CPU model, not '{model}'")
        if features:
            raise OptionError(
                f"qmpevents-qemu simulates the {cpu} CPU model as QEMU defines it: "
                "no CPU features can be changed"
            )
        self.config.cpu_model = cpu

    def smp_option(self, value: str) -> None:
        # Read as the machine's "smp" property once the machine exists (LateError).
        for key, item in parse_opts(value, "cpus").items():
            if key not in _SMP_KEYS:
                raise LateError(f"Parameter 'smp.{key}' is unexpected")
            if not item.isdigit():
                raise LateError(f"Parameter 'smp.{key}' expects integer")
            self.smp[key] = item

    def overcommit(self, value: str) -> None:
        opts = parse_opts(value)
        _known_keys(opts, ("mem-lock", "cpu-pm"))
        for key, flag in opts.items():
            enabled = parse_bool(flag, key)
            if key == "mem-lock":
                self.config.mem_lock = enabled

    def rtc(self, value: str) -> None:
        opts = parse_opts(value)
        _known_keys(opts, ("base", "clock", "driftfix"))
        base = opts.get("base", "utc")
        if base not in ("utc", "localtime") and not _DATE.match(base):
            raise LateError(
                "invalid datetime format\nvalid formats: '2006-06-17T16:01:21' or '2006-06-17'"
            )
        for key, allowed in (("clock", ("host", "rt", "vm")), ("driftfix", ("none", "slew"))):
            if key in opts and opts[key] not in allowed:
                raise LateError(f"invalid option value '{opts[key]}'")

    def boot(self, value: str) -> None:
        for key, item in parse_opts(value, "order").items():
            kind = _BOOT_KEYS.get(key)
            if kind is None:
                raise LateError(f"Parameter 'boot.{key}' is unexpected")
            if kind == "bool" and item not in ("on", "off", "yes", "no", "true", "false"):
                raise LateError(f"Parameter 'boot.{key}' expects 'on' or 'off'")
            if kind == "int" and not re.fullmatch(r"-?\d+", item):
                raise LateError(f"Parameter 'boot.{key}' expects integer")
            if key in ("order", "once"):
                seen: set[str] = set()
                for device in item:
                    if device not in _BOOT_DEVICES:
                        raise LateError(f"Invalid boot device '{device}'")
                    if device in seen:
                        raise LateError(f"Boot device '{device}' was given twice")
                    seen.add(device)

    def audiodev(self, value: str) -> None:
        tree = parse_tree(value, "driver")
        driver = tree.get("driver")
        if driver is None:
            raise OptionError("Parameter 'driver' is missing")
        if driver not in _AUDIO_DRIVERS:
            raise OptionError(f"Parameter 'driver' does not accept value '{driver}'")
        if "id" not in tree:
            raise OptionError("Parameter 'id' is missing")
        for key in tree:
            if key in ("in", "out"):
                raise OptionError(f"qmpevents-qemu has no audio: '{key}' options cannot apply")
            if key not in ("id", "driver", "timer-period"):
                raise OptionError(f"Parameter '{key}' is unexpected")
        if driver != "none":
            raise OptionError(f"qmpevents-qemu has no audio: use driver 'none', not '{driver}'")

    def sandbox(self, value: str) -> None:
        opts = parse_opts(value, "enable")
        _known_keys(opts, ("enable", *_SANDBOX_KEYS))
        if not parse_bool(opts.get("enable", "off"), "enable"):
            return
        # QEMU checks the values only when the sandbox is on.
        for key, allowed in _SANDBOX_KEYS.items():
            if key in opts and opts[key] not in allowed:
                raise OptionError(f"invalid argument for {key}")
        # On: QEMU's default set and the obsolete calls are denied, the rest allowed.
        self.config.sandbox = {
            key: opts.get(key, "deny" if key == "obsolete" else "allow") for key in _SANDBOX_KEYS
        }

    # --- read once the machine is known --------------------------------------------

    def finish_topology(self, cpu_max: int, machine_name: str) -> None:
        """``-smp`` against the machine type (LateError with QEMU's message)."""
        values = {key: int(item) for key, item in self.smp.items()}
        if any(value == 0 for value in values.values()):
            self.config.warnings.append(
                "Deprecated CPU topology (considered invalid): "
                "CPU topology parameters must be greater than zero"
            )
        if self.smp:
            topology = compute_topology(values, self.config.machine_type in _DIES)
            if topology.maxcpus > cpu_max:
                raise LateError(
                    f"Invalid SMP CPUs {topology.maxcpus}. The max CPUs supported by "
                    f"machine '{machine_name}' is {cpu_max}"
                )
            self.config.topology = topology
            self.config.cpus = topology.cpus

    def numa_option(self, value: str, memdevs: dict[str, int], busy: set[str]) -> None:
        """``-numa``, read once the memory backends exist (``memdevs``: their sizes).

        A backend a node takes joins ``busy``: no DIMM can take it too.
        """
        opts = parse_opts(value, "type")
        kind = opts.pop("type", "node")
        if kind not in ("node", "dist", "cpu", "hmat-lb", "hmat-cache"):
            raise OptionError(f"Parameter 'type' does not accept value '{kind}'")
        if kind != "node":
            raise OptionError(f"qmpevents-qemu simulates only -numa node, not -numa {kind}")
        _known_keys(opts, ("nodeid", "cpus", "mem", "memdev", "initiator"))
        if "initiator" in opts:
            raise OptionError("qmpevents-qemu does not simulate NUMA initiators")
        node = len(self.config.numa_nodes)
        if "nodeid" in opts:
            if not opts["nodeid"].isdigit():
                raise OptionError("Parameter 'nodeid' expects a uint64 value")
            node = int(opts["nodeid"])
        if node >= _MAX_NODES:
            raise OptionError(f"Max number of NUMA nodes reached: {node}")
        if any(existing.nodeid == node for existing in self.config.numa_nodes):
            raise OptionError(f"Duplicate NUMA nodeid: {node}")
        if "mem" in opts:
            raise OptionError(
                "Parameter -numa node,mem is not supported by this machine type\n"
                "Use -numa node,memdev instead"
            )
        cpus = _cpu_list(opts.get("cpus"))
        maxcpus = (self.config.topology or _default(self.config.cpus)).maxcpus
        for index in cpus:
            if index >= maxcpus:
                raise OptionError(f"CPU index ({index}) should be smaller than maxcpus ({maxcpus})")
        memdev, size = opts.get("memdev", ""), 0
        if memdev:
            if memdev not in memdevs:
                raise OptionError(f"memdev={memdev} is ambiguous")
            if memdev in busy:
                raise OptionError(f"can't use already busy memdev: {memdev}")
            busy.add(memdev)
            size = memdevs[memdev]
        self.config.numa_nodes.append(NumaNode(node, cpus, memdev, size))

    def finish_numa(self) -> None:
        """The nodes' memory against ``-m``, and CPUs no node names (LateError, warnings)."""
        nodes = self.config.numa_nodes
        if not nodes:
            return
        total = sum(node.size for node in nodes)
        if total != self.config.ram_size:
            raise LateError(
                f"total memory for NUMA nodes (0x{total:x}) should equal RAM size "
                f"(0x{self.config.ram_size:x})"
            )
        named = {cpu for node in nodes for cpu in node.cpus}
        if not named:
            return  # QEMU's default mapping (qmpevents.sim.cpus), silently
        topology = self.config.topology or _default(self.config.cpus)
        missing = [index for index in range(topology.maxcpus) if index not in named]
        if missing:
            from qmpevents.sim.cpus import slot_props, slot_text

            listed = ", ".join(f"CPU {i} [{slot_text(slot_props(topology, i))}]" for i in missing)
            self.config.warnings += [
                f"CPU(s) not present in any NUMA nodes: {listed}",
                "All CPU(s) up to maxcpus should be described in NUMA config, ability to "
                "start up with partial NUMA mappings is obsoleted and will be removed in future",
            ]


def _cpu_list(text: str | None) -> tuple[int, ...]:
    # QemuOpts keeps only the last cpus=; a value is N or N-M.
    if text is None:
        return ()
    match = re.fullmatch(r"(\d+)(?:-(\d+))?", text)
    if match is None or (match[2] is not None and int(match[2]) < int(match[1])):
        raise OptionError("Parameter 'cpus' expects a uint64 value or range")
    first = int(match[1])
    last = int(match[2]) if match[2] is not None else first
    return tuple(range(first, last + 1))


def _default(cpus: int) -> CpuTopology:
    return CpuTopology(cpus=cpus, cores=cpus, maxcpus=cpus)


def compute_topology(values: dict[str, int], dies_supported: bool) -> CpuTopology:
    """QEMU 7.2's ``machine_parse_smp_config()``: fill in what ``-smp`` left out.

    Raises :class:`LateError` with QEMU's message for a topology that does not
    add up. Cores are preferred over sockets (machine types since 6.2).
    """
    cpus, maxcpus = values.get("cpus", 0), values.get("maxcpus", 0)
    sockets, cores, threads = (
        values.get("sockets", 0),
        values.get("cores", 0),
        values.get("threads", 0),
    )
    dies, clusters = values.get("dies", 0), values.get("clusters", 0)
    if not dies_supported and dies > 1:
        raise LateError("dies not supported by this machine's CPU topology")
    if clusters > 1:
        raise LateError("clusters not supported by this machine's CPU topology")
    dies, clusters = max(dies, 1), max(clusters, 1)
    if cpus == 0 and maxcpus == 0:
        sockets, cores, threads = max(sockets, 1), max(cores, 1), max(threads, 1)
    else:
        maxcpus = maxcpus or cpus
        if cores == 0:
            sockets, threads = max(sockets, 1), max(threads, 1)
            cores = maxcpus // (sockets * dies * clusters * threads)
        elif sockets == 0:
            threads = max(threads, 1)
            sockets = maxcpus // (dies * clusters * cores * threads)
        if threads == 0:
            threads = maxcpus // (sockets * dies * clusters * cores)
    maxcpus = maxcpus or sockets * dies * clusters * cores * threads
    cpus = cpus or maxcpus
    hierarchy = f"sockets ({sockets})" + (f" * dies ({dies})" if dies_supported else "")
    hierarchy += f" * cores ({cores}) * threads ({threads})"
    if sockets * dies * clusters * cores * threads != maxcpus:
        raise LateError(
            "Invalid CPU topology: product of the hierarchy must match maxcpus: "
            f"{hierarchy} != maxcpus ({maxcpus})"
        )
    if maxcpus < cpus:
        raise LateError(
            "Invalid CPU topology: maxcpus must be equal to or greater than smp: "
            f"{hierarchy} == maxcpus ({maxcpus}) < smp_cpus ({cpus})"
        )
    return CpuTopology(cpus, sockets, dies, clusters, cores, threads, maxcpus)


def parse_mon(value: str) -> dict[str, str]:
    """``-mon``'s options checked as QemuOpts checks them (OptionError)."""
    opts = parse_opts(value, "chardev")
    for key in opts:
        if key not in ("chardev", "mode", "pretty", "id", "default"):
            raise OptionError(f"Invalid parameter '{key}'")
    mode = opts.get("mode", "readline")
    if mode not in ("readline", "control"):
        raise OptionError(f"Parameter 'mode' does not accept value '{mode}'")
    if mode != "control":
        raise OptionError("qmpevents-qemu has no HMP monitor: use mode=control")
    if parse_bool(opts.get("pretty", "off"), "pretty"):
        raise OptionError(
            "qmpevents-qemu does not simulate pretty=on: its QMP is QEMU's compact form"
        )
    return opts

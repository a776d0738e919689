"""The ``qmpevents-qemu`` command line: QEMU's options for what the simulator models.

:func:`parse_command_line` turns a QEMU argv (without the program name) into a
:class:`~qmpevents.sim.config.MachineConfig`. An option the simulator does not
model is refused the way QEMU refuses a bad option, never ignored: a
:class:`CommandLineError` whose message QEMU would print after its program name
(``-foo: invalid option``), and exit status 1. The help options (``-h``,
``-version``, ``-machine help``, ``-device help``, ``-accel help``) raise
:class:`~qmpevents.sim.help.HelpRequested`, in the order QEMU acts on them.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
import uuid
from collections.abc import Callable, Sequence
from typing import Final

from qmpevents.errors import ConfigError
from qmpevents.sim.cmdline_devices import DeviceOptions
from qmpevents.sim.cmdline_host import HOST_OPTIONS, HostOptions, LateError, parse_mon
from qmpevents.sim.cmdline_objects import ObjectOptions
from qmpevents.sim.config import ChardevConfig, DriveConfig, MachineConfig, MonitorEndpoint
from qmpevents.sim.help import MACHINE_TYPES, HelpRequested, machine_type_name
from qmpevents.sim.opts import OptionError, parse_bool, parse_opts, parse_size, parse_tree
from qmpevents.sim.target import CPU_FAMILY, X86_64, Target

__all__ = ["OPTIONS", "CommandLineError", "HelpRequested", "parse_command_line"]


class CommandLineError(ConfigError):
    """A command line QEMU would refuse; ``str()`` is QEMU's message after ``program:``."""


_FLAGS: Final = frozenset(
    {"-S", "-no-shutdown", "-no-reboot", "-nodefaults", "-daemonize", "-no-user-config",
     "-nographic", "-h", "-help", "-version"}
)  # fmt: skip
_WITH_ARGUMENT: Final = frozenset(
    {
        "-qmp", "-chardev", "-mon", "-machine", "-M", "-m", "-smp", "-name", "-uuid", "-action",
        "-device", "-object", "-drive", "-blockdev", "-display", "-accel", "-pidfile", "-msg",
        "-x-sim-scenario",
    } | HOST_OPTIONS
)  # fmt: skip
OPTIONS: Final = _FLAGS | _WITH_ARGUMENT
"""Every option the command line takes (``query-command-line-options`` reports their groups)."""
# A machine type is kept under its alias (pc) when it has one; its versioned name maps to it.
_MACHINE_ALIASES: Final = {m.name: m.alias for m in MACHINE_TYPES if m.alias}
_DISPLAYS: Final = frozenset({"none", "gtk", "sdl", "vnc", "curses", "egl-headless", "dbus"})
_PANIC_ACTIONS: Final = ("pause", "shutdown", "exit-failure", "none")
_SHUTDOWN_ACTIONS: Final = ("poweroff", "pause")
_ACTION_KEYS: Final = {
    "panic": _PANIC_ACTIONS,
    "shutdown": _SHUTDOWN_ACTIONS,
    "reboot": ("reset", "shutdown"),
    "watchdog": ("reset", "shutdown", "poweroff", "pause", "debug", "none", "inject-nmi"),
}
# QEMU sets these aside while it reads the command line and acts on them afterwards,
# after -device help, in this order: the machine (then -smp is checked against it),
# -numa (then the nodes' memory), -mon, -device key=value, JSON -device. The rest
# acts at once.
_DEFERRED: Final = ("-machine", "-M", "-numa", "-mon", "-device")
_PHASES: Final = 5
# Socket chardev options QEMU has that the simulator does not simulate.
_SOCKET_UNSIMULATED: Final = (
    "to", "ipv4", "ipv6", "nodelay", "telnet", "tn3270", "websocket", "reconnect", "tls-creds",
    "tls-authz", "abstract", "tight", "logfile", "logappend", "mux",
)  # fmt: skip
_SOCKET_KEYS: Final = ("id", "backend", "path", "host", "port", "fd", "server", "wait")
_HELP_WORDS: Final = ("help", "?")
_UUID: Final = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class _Parser:
    def __init__(self, target: Target) -> None:
        # Like QEMU, listen wherever -qmp says; the program warns about a public address.
        default = target.default_machine
        self.config = MachineConfig(
            _MACHINE_ALIASES.get(default, default), target=target.arch, tcp_public=True
        )
        self.machines = frozenset(m.alias or m.name for m in target.machine_types)
        self.chardevs: dict[str, MonitorEndpoint | None] = {}
        self.drive_count: dict[str, int] = {}  # the next index of each interface
        self.qmp_count = 0
        self.host = HostOptions(self.config)
        self.objects = ObjectOptions(self.config)
        self.devices = DeviceOptions(self.config, self.chardevs, self.objects)
        self.handlers: dict[str, Callable[[str], None]] = {
            "-qmp": self._qmp, "-chardev": self._chardev, "-mon": self._mon,
            "-machine": self._machine, "-M": self._machine, "-m": self._memory,
            "-uuid": self._uuid, "-action": self._action,
            "-device": self.devices.device, "-object": self.objects.object, "-drive": self._drive,
            "-blockdev": self._blockdev, "-display": self._display, "-accel": self._accel,
            "-pidfile": self._pidfile, "-msg": self._msg, "-numa": self._numa,
            "-x-sim-scenario": self._scenario,
            **self.host.handlers(),
        }  # fmt: skip

    def parse(self, argv: Sequence[str]) -> MachineConfig:
        # QEMU's order: every option name is checked first; then -h, -version and
        # -machine help act where they stand, the other options in turn; -device
        # help once all are read, before the machine and its devices are made.
        deferred: list[tuple[str, str, str]] = []
        device_help = False
        for arg, option, value in _split_options(argv):
            if value is None:
                self._flag(option)
            elif option in ("-machine", "-M") and value.split(",", 1)[0] in _HELP_WORDS:
                raise HelpRequested("machine")
            elif option == "-device" and _is_device_help(value):
                device_help = True
            elif option in _DEFERRED:
                deferred.append((arg, option, value))
            else:
                self._apply(arg, option, value)
        if device_help:
            raise HelpRequested("device")
        for phase in range(_PHASES):
            if phase == 1:
                self._late(self._machine_built)
            elif phase == 3:
                self._late(self.host.finish_numa)
            for arg, option, value in deferred:
                if _phase(option, value) == phase:
                    self._apply(arg, option, value)
        return self.config

    def _apply(self, arg: str, option: str, value: str) -> None:
        try:
            self.handlers[option](value)
        except OptionError as error:
            raise CommandLineError(f"{arg} {value}: {error}") from None
        except LateError as error:
            raise CommandLineError(str(error)) from None

    def _late(self, check: Callable[[], None]) -> None:
        try:
            check()
        except LateError as error:
            raise CommandLineError(str(error)) from None

    def _machine_built(self) -> None:
        from qmpevents.sim.capabilities import MACHINE_INFO

        name = machine_type_name(self.config.machine_type)
        default_cpu = MACHINE_INFO[name].default_cpu_type
        model = self.config.cpu_model
        if model is not None and default_cpu and not default_cpu.endswith(CPU_FAMILY[model]):
            # Only the x86_64 target has machines of two families (pseries for the demo).
            raise LateError(f"unable to find CPU model '{model}'")
        self.host.finish_topology(MACHINE_INFO[name].cpu_max, name)
        topology = self.config.topology
        if topology and topology.threads > 1 and self.config.machine_type in ("pc", "q35"):
            self.config.warnings.append(
                f"This family of AMD CPU doesn't support hyperthreading({topology.threads})\n"
                "Please configure -smp options properly or try enabling topoext feature."
            )

    def _numa(self, value: str) -> None:
        self.host.numa_option(value, self.objects.memdevs, self.objects.busy_memdevs)

    def _flag(self, option: str) -> None:
        if option in ("-h", "-help"):
            raise HelpRequested("help")
        if option == "-version":
            raise HelpRequested("version")
        if option == "-S":
            self.config.start_paused = True
        elif option == "-no-shutdown":
            self.config.shutdown_action = "pause"
        elif option == "-no-reboot":
            self.config.reboot_action = "shutdown"
        elif option == "-daemonize":
            self.config.daemonize = True
        elif option in ("-nodefaults", "-nographic"):
            setattr(self.config, option[1:], True)

    def _socket_endpoint(self, spec: str, opts: dict[str, str]) -> MonitorEndpoint:
        for key in opts:
            if key in _SOCKET_UNSIMULATED:
                raise OptionError(f"qmpevents-qemu does not simulate the socket option '{key}'")
            if key not in _SOCKET_KEYS:
                raise OptionError(f"Invalid parameter '{key}'")
        for key in ("server", "wait"):
            if key in opts:
                parse_bool(opts[key], key)
        if not parse_bool(opts.get("server", "off"), "server"):
            raise OptionError("qmpevents-qemu serves QMP only: use server=on")
        if sum(key in opts for key in ("path", "fd", "host")) > 1:
            raise OptionError("None or one of 'path', 'fd' or 'host' option required.")
        if "fd" in opts:
            return MonitorEndpoint("fd", fd=_inherited_socket(opts["fd"]))
        if "path" in opts:
            return MonitorEndpoint("unix", path=opts["path"])
        host = opts.get("host", "127.0.0.1") or "127.0.0.1"
        if "port" not in opts:
            raise OptionError(f"'{spec}' needs a path or a port")
        try:
            port = int(opts["port"])
        except ValueError:
            raise OptionError(f"Parameter 'port' expects a number: {opts['port']}") from None
        return MonitorEndpoint("tcp", host=host, port=port)

    def _qmp(self, value: str) -> None:
        head, _, rest = value.partition(",")
        opts = parse_opts(rest) if rest else {}
        if head.startswith("unix:"):
            opts["path"] = head[5:]
        elif head.startswith("tcp:"):
            host, _, port = head[4:].rpartition(":")
            opts["host"], opts["port"] = host, port
        else:
            raise OptionError(f"'{value}' is not a valid char driver")
        label = f"compat_monitor{self.qmp_count}"
        endpoint = dataclasses.replace(self._socket_endpoint(value, opts), chardev=label)
        self.qmp_count += 1
        self.config.chardevs.append(ChardevConfig(label, "socket", endpoint))
        self.config.monitors.append(endpoint)

    def _chardev(self, value: str) -> None:
        opts = parse_opts(value, "backend")
        backend, chardev_id = opts.get("backend", ""), opts.get("id")
        if not chardev_id:
            raise OptionError("Parameter 'id' is missing")
        if chardev_id in self.chardevs:
            raise OptionError(f"Duplicate ID '{chardev_id}' for chardev")
        if backend == "null":
            for key in opts:
                if key not in ("id", "backend"):
                    raise OptionError(f"Invalid parameter '{key}'")
            self.chardevs[chardev_id] = None
            self.config.chardevs.append(ChardevConfig(chardev_id, "null"))
        elif backend == "socket":
            endpoint = self._socket_endpoint(value, opts)
            endpoint = dataclasses.replace(endpoint, chardev=chardev_id)
            self.chardevs[chardev_id] = endpoint
            self.config.chardevs.append(ChardevConfig(chardev_id, "socket", endpoint))
        else:
            raise OptionError(f"'{backend}' is not a valid char driver name")

    def _mon(self, value: str) -> None:
        opts = parse_mon(value)
        name = opts.get("chardev", "")
        if name not in self.chardevs:
            raise OptionError(f'chardev "{name}" not found')
        if name in self.devices.busy_chardevs:
            raise OptionError(f"Device '{name}' is in use")
        endpoint = self.chardevs[name]
        if endpoint is None:
            raise OptionError(f'chardev "{name}" is a null chardev, not a socket')
        self.devices.busy_chardevs.add(name)
        self.config.monitors.append(endpoint)

    def _machine(self, value: str) -> None:
        opts = parse_opts(value, "type")
        machine_type = opts.pop("type", self.config.machine_type)
        machine_type = _MACHINE_ALIASES.get(machine_type, machine_type)
        if machine_type not in self.machines:
            raise OptionError(
                "unsupported machine type\nUse -machine help to list supported machines"
            )
        self.config.machine_type = machine_type
        for key in opts:
            if key not in ("accel", "usb", "dump-guest-core", "mem-merge"):
                raise OptionError(f"Invalid parameter '{key}'")
        if "accel" in opts:
            self.config.machine_accel = opts["accel"]

    def _memory(self, value: str) -> None:
        opts = parse_opts(value, "size")
        for key in opts:
            if key not in ("size", "slots", "maxmem"):
                raise OptionError(f"Invalid parameter '{key}'")
        if "size" in opts:
            self.config.ram_size = parse_size(opts["size"], "M")
        if "slots" in opts:
            if not opts["slots"].isdigit():
                raise OptionError("Parameter 'slots' expects a number")
            self.config.slots = int(opts["slots"])
        if "maxmem" in opts:
            self.config.maxmem = parse_size(opts["maxmem"], "M", name="maxmem")

    def _uuid(self, value: str) -> None:
        if not _UUID.match(value):
            raise OptionError("failed to parse UUID string: wrong format")
        self.config.uuid = str(uuid.UUID(value))

    def _action(self, value: str) -> None:
        for key, action in parse_opts(value).items():
            allowed = _ACTION_KEYS.get(key)
            if allowed is None:
                raise OptionError(f"Invalid parameter '{key}'")
            if action not in allowed:
                raise OptionError(f"Parameter '{key}' does not accept value '{action}'")
            if key == "panic":
                self.config.panic_action = action  # type: ignore[assignment]
            elif key == "shutdown":
                self.config.shutdown_action = action  # type: ignore[assignment]
            elif key == "reboot":
                self.config.reboot_action = action  # type: ignore[assignment]

    def _blockdev(self, value: str) -> None:
        from qmpevents.sim.block import BlockdevAddArguments
        from qmpevents.sim.opts import coerce

        tree = parse_tree(value)
        self.config.drives.append(DriveConfig(coerce(BlockdevAddArguments, tree)))

    def _drive(self, value: str) -> None:
        from qmpevents.sim.block import BlockdevAddArguments
        from qmpevents.sim.opts import coerce

        tree = parse_tree(value)
        interface = str(tree.pop("if", "ide"))
        index = int(str(tree.pop("index", self.drive_count.get(interface, 0))))
        self.drive_count[interface] = index + 1
        tree.pop("media", None)
        device = str(tree.pop("id", "")) or (
            f"ide{index // 2}-hd{index % 2}" if interface == "ide" else f"{interface}{index}"
        )
        fmt = tree.pop("format", None)
        filename = tree.pop("file", None)
        if "driver" not in tree:
            tree["driver"] = fmt or "raw"
        if filename is not None:
            tree["file"] = {"driver": "file", "filename": filename}
        options = coerce(BlockdevAddArguments, tree)
        self.config.drives.append(DriveConfig(options, device, interface))

    def _display(self, value: str) -> None:
        kind = parse_opts(value, "type").get("type", "")
        if kind not in _DISPLAYS:
            raise OptionError(f"Parameter 'type' does not accept value '{kind}'")
        if kind != "none":
            raise OptionError(f"qmpevents-qemu has no display: use -display none, not {kind}")

    def _accel(self, value: str) -> None:
        # Read now, tried at start (qmpevents.sim.accel); no name lists them, as in QEMU.
        if parse_opts(value, "accel").get("accel", "help") in _HELP_WORDS:
            raise HelpRequested("accel")
        self.config.accel_options.append(value)

    def _pidfile(self, value: str) -> None:
        self.config.pidfile = value

    def _scenario(self, value: str) -> None:
        from qmpevents.sim.bound_scenario import load_bound_scenario  # it needs the machine

        try:
            load_bound_scenario(value)  # checked now: a bad file is a bad command line
        except ConfigError as error:
            raise CommandLineError(f"-x-sim-scenario {value}: {error}") from None
        self.config.scenario = value

    def _msg(self, value: str) -> None:
        for key, flag in parse_opts(value).items():
            if key != "timestamp":
                raise OptionError(f"Invalid parameter '{key}'")
            self.config.msg_timestamp = parse_bool(flag, "timestamp")


def _split_options(argv: Sequence[str]) -> list[tuple[str, str, str | None]]:
    """``(arg, option, value)`` per option (value None for a flag), every name checked."""
    found: list[tuple[str, str, str | None]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        # QEMU accepts --option as -option.
        option = arg[1:] if arg.startswith("--") else arg
        if option in _FLAGS:
            found.append((arg, option, None))
            i += 1
            continue
        if option not in _WITH_ARGUMENT:
            raise CommandLineError(f"{arg}: invalid option")
        if i + 1 >= len(argv):
            raise CommandLineError(f"{arg}: requires an argument")
        found.append((arg, option, argv[i + 1]))
        i += 2
    return found


def _phase(option: str, value: str) -> int:
    """When a deferred option acts (see ``_DEFERRED``)."""
    if option == "-device":
        return 4 if value.lstrip().startswith("{") else 3
    return {"-numa": 1, "-mon": 2}.get(option, 0)


def _inherited_socket(text: str) -> int:
    """The descriptor ``fd=`` names, checked as QEMU checks it (OptionError)."""
    try:
        fd = int(text, 10)
    except ValueError:
        raise OptionError(f"Unable to parse FD number {text}") from None
    try:
        is_socket = stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        is_socket = False
    if not is_socket:
        raise OptionError(f"File descriptor '{text}' is not a socket")
    return fd


def _is_device_help(value: str) -> bool:
    # -device help, -device help,x=y and -device driver=help all list the drivers.
    return not value.lstrip().startswith("{") and (
        parse_opts(value, "driver").get("driver") in _HELP_WORDS
    )


def parse_command_line(argv: Sequence[str], target: Target = X86_64) -> MachineConfig:
    """The machine ``target``'s QEMU would build from ``argv`` (program name excluded).

    Raises :class:`CommandLineError` for an unknown or unsupported option or a bad value,
    and :class:`~qmpevents.sim.help.HelpRequested` for ``-h``, ``-version``,
    ``-machine help`` or ``-device help`` (where QEMU would print help and exit 0).
    """
    return _Parser(target).parse(list(argv))

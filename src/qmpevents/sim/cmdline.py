"""The ``qmpevents-qemu`` command line: QEMU's options for what the simulator models.

:func:`parse_command_line` turns a QEMU argv (without the program name) into a
:class:`~qmpevents.sim.config.MachineConfig`. An option the simulator does not
model is refused the way QEMU refuses a bad option, never ignored: a
:class:`CommandLineError` whose message QEMU would print after its program name
(``-foo: invalid option``), and exit status 1. The help options (``-h``,
``-version``, ``-machine help``, ``-device help``) raise
:class:`~qmpevents.sim.help.HelpRequested`, in the order QEMU acts on them.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from typing import Any, Final

from qmpevents.errors import ConfigError
from qmpevents.sim.config import (
    DimmConfig,
    DriveConfig,
    MachineConfig,
    MonitorEndpoint,
    VserportConfig,
)
from qmpevents.sim.help import DEVICE_MODELS, MACHINE_TYPES, HelpRequested
from qmpevents.sim.opts import OptionError, parse_bool, parse_opts, parse_size, parse_tree

__all__ = ["CommandLineError", "HelpRequested", "parse_command_line"]


class CommandLineError(ConfigError):
    """A command line QEMU would refuse; ``str()`` is QEMU's message after ``program:``."""


_FLAGS: Final = frozenset(
    {"-S", "-no-shutdown", "-nodefaults", "-daemonize", "-no-user-config", "-nographic",
     "-h", "-help", "-version"}
)  # fmt: skip
_WITH_ARGUMENT: Final = frozenset(
    {
        "-qmp", "-chardev", "-mon", "-machine", "-M", "-m", "-smp", "-name", "-uuid", "-action",
        "-device", "-object", "-drive", "-blockdev", "-display", "-accel", "-pidfile", "-msg",
    }
)  # fmt: skip
# A machine type is kept under its alias (pc) when it has one; its versioned name maps to it.
_MACHINES: Final = frozenset(machine.alias or machine.name for machine in MACHINE_TYPES)
_MACHINE_ALIASES: Final = {m.name: m.alias for m in MACHINE_TYPES if m.alias}
_ACCELS: Final = frozenset({"tcg", "kvm", "qtest", "xen", "hvf", "whpx"})
_DISPLAYS: Final = frozenset({"none", "gtk", "sdl", "vnc", "curses", "egl-headless", "dbus"})
_PANIC_ACTIONS: Final = ("pause", "shutdown", "exit-failure", "none")
_SHUTDOWN_ACTIONS: Final = ("poweroff", "pause")
_ACTION_KEYS: Final = {
    "panic": _PANIC_ACTIONS,
    "shutdown": _SHUTDOWN_ACTIONS,
    "reboot": ("reset", "shutdown"),
    "watchdog": ("reset", "shutdown", "poweroff", "pause", "debug", "none", "inject-nmi"),
}
_DEVICES: Final = frozenset(
    name for model in DEVICE_MODELS for name in (model.name, model.alias) if name
)
# QEMU sets these aside while it reads the command line and acts on them afterwards
# (machine first, then devices), after -device help; the rest acts at once.
_DEFERRED: Final = ("-machine", "-M", "-device")
_HELP_WORDS: Final = ("help", "?")
_UUID: Final = re.compile(r"^[0-9a-fA-F]{8}-([0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")


class _Parser:
    def __init__(self) -> None:
        # Like QEMU, listen wherever -qmp says; the program warns about a public address.
        self.config = MachineConfig(tcp_public=True)
        self.chardevs: dict[str, MonitorEndpoint | None] = {}
        self.memdevs: dict[str, int] = {}
        self.drive_count = 0
        self.handlers: dict[str, Callable[[str], None]] = {
            "-qmp": self._qmp, "-chardev": self._chardev, "-mon": self._mon,
            "-machine": self._machine, "-M": self._machine, "-m": self._memory,
            "-smp": self._smp, "-name": self._name, "-uuid": self._uuid, "-action": self._action,
            "-device": self._device, "-object": self._object, "-drive": self._drive,
            "-blockdev": self._blockdev, "-display": self._display, "-accel": self._accel,
            "-pidfile": self._pidfile, "-msg": self._msg,
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
        deferred.sort(key=lambda item: item[1] == "-device")
        for arg, option, value in deferred:
            self._apply(arg, option, value)
        return self.config

    def _apply(self, arg: str, option: str, value: str) -> None:
        try:
            self.handlers[option](value)
        except OptionError as error:
            raise CommandLineError(f"{arg} {value}: {error}") from None

    def _flag(self, option: str) -> None:
        if option in ("-h", "-help"):
            raise HelpRequested("help")
        if option == "-version":
            raise HelpRequested("version")
        if option == "-S":
            self.config.start_paused = True
        elif option == "-no-shutdown":
            self.config.shutdown_action = "pause"
        elif option == "-daemonize":
            self.config.daemonize = True

    def _socket_endpoint(self, spec: str, opts: dict[str, str]) -> MonitorEndpoint:
        for key in ("server", "wait"):
            if key in opts:
                parse_bool(opts[key], key)
        if not parse_bool(opts.get("server", "off"), "server"):
            raise OptionError("qmpevents-qemu serves QMP only: use server=on")
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
        self.config.monitors.append(self._socket_endpoint(value, opts))

    def _chardev(self, value: str) -> None:
        opts = parse_opts(value, "backend")
        backend, chardev_id = opts.get("backend", ""), opts.get("id")
        if not chardev_id:
            raise OptionError("Parameter 'id' is missing")
        if backend == "null":
            self.chardevs[chardev_id] = None
        elif backend == "socket":
            self.chardevs[chardev_id] = self._socket_endpoint(value, opts)
        else:
            raise OptionError(f"'{backend}' is not a valid char driver name")

    def _mon(self, value: str) -> None:
        opts = parse_opts(value, "chardev")
        name = opts.get("chardev", "")
        if name not in self.chardevs:
            raise OptionError(f'chardev "{name}" not found')
        if opts.get("mode", "readline") != "control":
            raise OptionError("qmpevents-qemu has no HMP monitor: use mode=control")
        endpoint = self.chardevs[name]
        if endpoint is None:
            raise OptionError(f'chardev "{name}" is a null chardev, not a socket')
        self.config.monitors.append(endpoint)

    def _machine(self, value: str) -> None:
        opts = parse_opts(value, "type")
        machine_type = opts.pop("type", "pc")
        machine_type = _MACHINE_ALIASES.get(machine_type, machine_type)
        if machine_type not in _MACHINES:
            raise OptionError(
                "unsupported machine type\nUse -machine help to list supported machines"
            )
        self.config.machine_type = machine_type
        for key in opts:
            if key not in ("accel", "usb", "dump-guest-core", "mem-merge"):
                raise OptionError(f"Invalid parameter '{key}'")
            if key == "accel" and opts[key] not in _ACCELS:
                raise OptionError(f"invalid accelerator {opts[key]}")

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

    def _smp(self, value: str) -> None:
        opts = parse_opts(value, "cpus")
        cpus = opts.get("cpus", "1")
        if not cpus.isdigit() or int(cpus) < 1:
            raise OptionError("Parameter 'smp.cpus' expects integer")
        self.config.cpus = int(cpus)

    def _name(self, value: str) -> None:
        self.config.name = parse_opts(value, "guest").get("guest", "")

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

    def _device(self, value: str) -> None:
        opts: dict[str, Any] = parse_tree(value, "driver")
        driver = str(opts.pop("driver", ""))
        if driver not in _DEVICES:
            raise OptionError(f"'{driver}' is not a valid device model name")
        device_id = str(opts.get("id", ""))
        allowed = {
            "pvpanic": {"id", "ioport", "events"},
            "virtio-serial-pci": {"id", "addr", "bus", "disable-modern", "vectors", "max_ports"},
            "virtio-serial": {"id", "addr", "bus", "disable-modern", "vectors", "max_ports"},
            "virtserialport": {"id", "bus", "nr", "chardev", "name"},
            "pc-dimm": {"id", "memdev", "node", "slot", "addr"},
        }[driver]
        for key in opts:
            if key not in allowed:
                raise OptionError(f"Property '{driver}.{key}' not found")
        if driver == "pvpanic":
            self.config.pvpanic = True
        elif driver.startswith("virtio-serial"):
            self.config.serial_buses.append(
                device_id or f"virtio-serial{len(self.config.serial_buses)}"
            )
        elif driver == "virtserialport":
            if not self.config.serial_buses:
                raise OptionError("No 'virtio-serial-bus' bus found for device 'virtserialport'")
            chardev = str(opts.get("chardev", ""))
            if chardev and chardev not in self.chardevs:
                raise OptionError(f"Property 'virtserialport.chardev' can't find value '{chardev}'")
            self.config.vserports.append(
                VserportConfig(device_id, str(opts.get("name", "")), str(opts.get("bus", "")))
            )
        else:
            self._dimm(device_id, str(opts.get("memdev", "")))

    def _dimm(self, device_id: str, memdev: str) -> None:
        if not self.config.slots:
            raise OptionError("no slots where allocated, please specify the 'slots' option")
        if len(self.config.dimms) >= self.config.slots:
            raise OptionError("no free slots left")
        if memdev not in self.memdevs:
            raise OptionError(f"Property 'pc-dimm.memdev' can't find value '{memdev}'")
        size = self.memdevs[memdev]
        used = self.config.ram_size + sum(dimm.size for dimm in self.config.dimms)
        if self.config.maxmem and used + size > self.config.maxmem:
            raise OptionError(
                f"not enough space, currently 0x{self.config.maxmem - used:x} in use of total "
                f"space for memory devices 0x{self.config.maxmem - self.config.ram_size:x}"
            )
        self.config.dimms.append(DimmConfig(device_id, memdev, size))

    def _object(self, value: str) -> None:
        opts = parse_opts(value, "qom-type")
        qom_type = opts.pop("qom-type", "")
        if qom_type != "memory-backend-ram":
            raise OptionError(f"invalid object type: {qom_type}")
        object_id = opts.get("id")
        if not object_id:
            raise OptionError("Parameter 'id' is missing")
        if "size" not in opts:
            raise OptionError("Parameter 'size' is missing")
        self.memdevs[object_id] = parse_size(opts["size"], "", name="size")

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
        index = int(str(tree.pop("index", self.drive_count)))
        self.drive_count += 1
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
        self.config.drives.append(DriveConfig(options, device))

    def _display(self, value: str) -> None:
        kind = parse_opts(value, "type").get("type", "")
        if kind not in _DISPLAYS:
            raise OptionError(f"Parameter 'type' does not accept value '{kind}'")
        if kind != "none":
            raise OptionError(f"qmpevents-qemu has no display: use -display none, not {kind}")

    def _accel(self, value: str) -> None:
        accel = parse_opts(value, "accel").get("accel", "")
        if accel not in _ACCELS:
            raise OptionError(f"invalid accelerator {accel}")

    def _pidfile(self, value: str) -> None:
        self.config.pidfile = value

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


def _is_device_help(value: str) -> bool:
    # -device help, -device help,x=y and -device driver=help all list the drivers.
    return not value.lstrip().startswith("{") and (
        parse_opts(value, "driver").get("driver") in _HELP_WORDS
    )


def parse_command_line(argv: Sequence[str]) -> MachineConfig:
    """The machine QEMU would build from ``argv`` (program name excluded).

    Raises :class:`CommandLineError` for an unknown or unsupported option or a bad value,
    and :class:`~qmpevents.sim.help.HelpRequested` for ``-h``, ``-version``,
    ``-machine help`` or ``-device help`` (where QEMU would print help and exit 0).
    """
    return _Parser().parse(list(argv))

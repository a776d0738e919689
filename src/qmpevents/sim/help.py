"""What ``qmpevents-qemu`` models, and its help in QEMU 7.2's formats.

The device models and machine types here are the only ones the command line
accepts (:mod:`qmpevents.sim.cmdline` reads its lists from this module), each
described as ``qemu-system-x86_64 -device help`` / ``-machine help`` describe
it. ``-h``, ``-version``, ``-device help`` and ``-machine help`` print on stdout
and exit with status 0, as QEMU does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from qmpevents.server.server import default_greeting

if TYPE_CHECKING:
    from qmpevents.sim.target import Target

__all__ = [
    "ACCELERATORS",
    "DEVICE_MODELS",
    "MACHINE_TYPES",
    "DeviceModel",
    "HelpRequested",
    "HelpTopic",
    "MachineType",
    "help_text",
    "machine_type_name",
]

HelpTopic = Literal["help", "version", "machine", "device", "accel"]


class HelpRequested(Exception):
    """The command line asks for help on ``topic`` instead of a machine (exit status 0)."""

    def __init__(self, topic: HelpTopic) -> None:
        super().__init__(topic)
        self.topic: HelpTopic = topic


@dataclass(frozen=True, slots=True)
class DeviceModel:
    """One ``-device`` driver as QEMU's ``-device help`` lists it (hw/core/qdev-monitor.c)."""

    name: str
    category: str
    bus: str = ""
    alias: str = ""
    desc: str = ""

    def line(self) -> str:
        """``qdev_print_devinfo()``'s line."""
        text = f'name "{self.name}"'
        if self.bus:
            text += f", bus {self.bus}"
        if self.alias:
            text += f', alias "{self.alias}"'
        if self.desc:
            text += f', desc "{self.desc}"'
        return text


@dataclass(frozen=True, slots=True)
class MachineType:
    """One machine type as QEMU's ``-machine help`` lists it (softmmu/vl.c)."""

    name: str
    desc: str
    alias: str = ""

    def lines(self, default: bool = False) -> list[str]:
        """``machine_help_func()``'s lines: the alias first, then the versioned name."""
        lines = [f"{self.alias:<20} {self.desc} (alias of {self.name})"] if self.alias else []
        lines.append(f"{self.name:<20} {self.desc}{' (default)' if default else ''}")
        return lines


# In QEMU's category order (DEVICE_CATEGORY_*), then by name, as -device help sorts them.
DEVICE_MODELS: Final = (
    DeviceModel("piix3-usb-uhci", "USB", bus="PCI"),
    DeviceModel("qemu-xhci", "USB", bus="PCI"),
    DeviceModel("ide-hd", "Storage", bus="IDE", desc="virtual IDE disk"),
    DeviceModel("virtio-blk-pci", "Storage", bus="PCI", alias="virtio-blk"),
    DeviceModel("virtio-serial-pci", "Input", bus="PCI", alias="virtio-serial"),
    DeviceModel("virtserialport", "Input", bus="virtio-serial-bus"),
    DeviceModel("pvpanic", "Misc", bus="ISA"),
    DeviceModel("pvpanic-pci", "Misc", bus="PCI"),
    DeviceModel("virtio-balloon-pci", "Misc", bus="PCI", alias="virtio-balloon"),
    DeviceModel("pc-dimm", "Uncategorized", desc="DIMM memory module"),
)

# pseries is qemu-system-ppc64's (spapr, where MEM_UNPLUG_ERROR comes from); its
# description is hw/ppc/spapr.c's.
MACHINE_TYPES: Final = (
    MachineType("pc-i440fx-7.2", "Standard PC (i440FX + PIIX, 1996)", alias="pc"),
    MachineType("pc-q35-7.2", "Standard PC (Q35 + ICH9, 2009)", alias="q35"),
    MachineType("pseries-7.2", "pSeries Logical Partition (PAPR compliant)", alias="pseries"),
    MachineType("none", "empty machine"),
)


def machine_type_name(name: str) -> str:
    """The versioned name of machine type ``name`` (``pc`` -> ``pc-i440fx-7.2``)."""
    for machine in MACHINE_TYPES:
        if name in (machine.alias, machine.name):
            return machine.name
    return name


# What Debian's qemu-system-x86_64 7.2 is built with, in -accel help order; the
# simulator has no KVM (qmpevents.sim.accel).
ACCELERATORS: Final = ("tcg", "kvm")

_COPYRIGHT: Final = "Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers"

# QEMU's own -h text, cut down to the options and values the simulator accepts.
_OPTIONS: Final = """\
Standard options:
-h or -help     display this help and exit
-version        display version information and exit
-machine [type=]name[,prop[=value][,...]]
                selects emulated machine ('-machine help' for list)
                property accel=kvm|xen|hvf|whpx|qtest|tcg selects accelerator
                dump-guest-core=on|off include guest memory in a core dump (default=on)
                mem-merge=on|off controls memory merge support (default: on)
                usb=on|off controls USB emulation
-cpu cpu        select CPU (qemu64 only)
-accel [accel=]accelerator
                select accelerator (kvm, xen, hvf, whpx, qtest or tcg)
-smp [[cpus=]n][,maxcpus=maxcpus][,sockets=sockets][,dies=dies][,cores=cores]
      [,threads=threads]
                set the number of initial CPUs to 'n' [default=1]
-numa node[,memdev=id][,cpus=firstcpu[-lastcpu]][,nodeid=node]
-boot [order=drives][,once=drives][,menu=on|off]
      [,splash=sp_name][,splash-time=sp_time][,reboot-timeout=rb_time][,strict=on|off]
                accepted; the simulated guest boots from no device in particular
-m [size=]megs[,slots=n,maxmem=size]
                configure guest RAM
                size: initial amount of guest memory
                slots: number of hotplug slots (default: none)
                maxmem: maximum amount of guest memory (default: none)
-device driver[,prop[=value][,...]]
                add device (based on driver)
                prop=value,... sets driver properties
                use '-device help' to print all possible drivers
-audiodev none,id=id
                dummy driver that discards all output
-name string1[,process=string2][,debug-threads=on|off]
                set the name of the guest
                string1 sets the window title and string2 the process name
                When debug-threads is enabled, individual threads are given a separate name
-uuid %08x-%04x-%04x-%04x-%012x
                specify machine UUID

Block device options:
-blockdev [driver=]driver[,node-name=N][,driver specific parameters...]
                configure a block backend
-drive [file=file][,if=type][,index=i][,media=d][,format=f][,id=name]
                use 'file' as a drive image

Display options:
-display none
                select display backend type
-nographic      disable graphical output

Character device options:
-chardev null,id=id
-chardev socket,id=id[,host=host],port=port,server=on[,wait=on|off] (tcp)
-chardev socket,id=id,path=path,server=on[,wait=on|off] (unix)
-chardev socket,id=id,fd=fd,server=on[,wait=on|off] (an inherited listening socket)

Debug/Expert options:
-qmp dev        like -monitor but opens in 'control' mode
-mon [chardev=]name,mode=control
-overcommit [mem-lock=on|off][cpu-pm=on|off]
                run qemu with overcommit hints
                mem-lock=on|off controls memory lock support (default: off)
                cpu-pm=on|off controls cpu power management (default: off)
-rtc [base=utc|localtime|<datetime>][,clock=host|rt|vm][,driftfix=none|slew]
                set the RTC base and clock, enable drift fix for clock ticks (x86 only)
-sandbox on[,obsolete=allow|deny][,elevateprivileges=allow|deny|children]
          [,spawn=allow|deny][,resourcecontrol=allow|deny]
                Enable seccomp mode 2 system call filter (default 'off').
-pidfile file   write PID to 'file'
-S              freeze CPU at startup (use 'c' to start execution)
-no-reboot      exit instead of rebooting
-no-shutdown    stop before shutdown
-action reboot=reset|shutdown
                   action when guest reboots [default=reset]
-action shutdown=poweroff|pause
                   action when guest shuts down [default=poweroff]
-action panic=pause|shutdown|exit-failure|none
                   action when guest panics [default=shutdown]
-action watchdog=reset|shutdown|poweroff|inject-nmi|pause|debug|none
                   action when watchdog fires [default=reset]
-daemonize      daemonize QEMU after initializing
-nodefaults     don't create default devices
-no-user-config
                do not load default user-provided config files at startup
-msg [timestamp[=on|off]]
                control error message format
                timestamp=on enables timestamps (default: off)

Simulator (not in QEMU):
-x-sim-scenario file
                play the timeline of a scenario file once the guest first runs

Generic object creation:
-object memory-backend-ram,id=id,size=size
-object secret,id=id,data=string,format=raw|base64
-object secret,id=id,file=filename,format=raw|base64
                create a new object of type TYPENAME setting properties
                in the order they are specified.  Note that the 'id'
                property must be set.  These objects are placed in the
                '/objects' path.
"""


def _version() -> str:
    greeting = default_greeting()
    number = f"{greeting.major}.{greeting.minor}.{greeting.micro}"
    return f"QEMU emulator version {number} ({greeting.package})\n{_COPYRIGHT}\n"


def _usage(program: str) -> str:
    return (
        f"{_version()}usage: {program} [options]\n\n"
        f"{program} simulates QEMU for QMP clients: these are the options it models.\n\n"
        f"{_OPTIONS}"
    )


def _device_list(target: Target) -> str:
    blocks: dict[str, list[str]] = {}
    for model in target.device_models:
        blocks.setdefault(model.category, []).append(model.line())
    return "\n".join(
        f"{category} devices:\n" + "".join(f"{line}\n" for line in lines)
        for category, lines in blocks.items()
    )


def _machine_list(target: Target) -> str:
    lines = [
        line
        for machine in target.machine_types
        for line in machine.lines(machine.name == target.default_machine)
    ]
    return "Supported machines are:\n" + "".join(f"{line}\n" for line in lines)


def help_text(topic: HelpTopic, program: str, target: Target | None = None) -> str:
    """What ``program`` (standing in for ``target``'s QEMU, default x86_64) prints on
    stdout for ``topic``, as QEMU 7.2 prints it."""
    from qmpevents.sim.target import X86_64  # it is built from this module's lists

    target = target or X86_64
    if topic == "version":
        return _version()
    if topic == "device":
        return _device_list(target)
    if topic == "machine":
        return _machine_list(target)
    if topic == "accel":
        accelerators = target.accelerators
        return "Accelerators supported in QEMU binary:\n" + "".join(f"{a}\n" for a in accelerators)
    return _usage(program)

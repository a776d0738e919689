"""What the command line asks of the process itself: ``-sandbox``, ``mem-lock``, ``-name process=``.

``-sandbox on`` installs a real seccomp filter, as QEMU 7.2 does
(softmmu/qemu-seccomp.c), through libseccomp (the library QEMU uses; loaded
with ctypes). A process that makes a denied system call is killed (SIGSYS), as
QEMU is: with ``spawn=deny``, ``migrate`` to ``exec:`` kills it (measured on
QEMU; the simulator, which runs no command, makes the call QEMU makes there,
:func:`spawn_attempt`). The sets, as QEMU documents them:

* always: calls no emulator needs (``reboot``, ``mount``, ``swapon``, ``kexec_load``, ...);
* ``obsolete=deny`` (the default): obsolete calls (``_sysctl``, ``ustat``, ``uselib``, ...);
* ``elevateprivileges=deny``: the ``set*uid``/``set*gid`` family and ``setsid``;
  ``children`` also sets no_new_privs, so children cannot gain privileges;
* ``spawn=deny``: ``fork``, ``vfork``, ``execve``, ``execveat``, ``clone`` of a process
  (``clone`` of a thread stays allowed; ``clone3`` fails with ENOSYS so that the C
  library falls back to ``clone``);
* ``resourcecontrol=deny``: scheduler priority, policy and affinity calls.

libseccomp sets no_new_privs when it loads a filter, and the filter covers
every thread of the process. Without libseccomp the option fails as in a QEMU
built without seccomp support.

``-overcommit mem-lock=on`` locks the process's memory (``mlockall``; QEMU:
"locking memory failed"), and ``-name process=NAME`` names the process.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import Final

from qmpevents.errors import ConfigError
from qmpevents.sim.config import MachineConfig

__all__ = ["SandboxError", "apply_process_options", "apply_sandbox", "spawn_attempt"]

_ALWAYS: Final = (
    "reboot", "swapon", "swapoff", "syslog", "mount", "umount", "umount2", "kexec_load",
    "afs_syscall", "break", "ftime", "getpmsg", "gtty", "lock", "mpx", "prof", "profil",
    "putpmsg", "security", "stty", "tuxcall", "ulimit", "vserver",
)  # fmt: skip
_SETS: Final = {
    "obsolete": (
        "readdir", "_sysctl", "bdflush", "create_module", "get_kernel_syms", "query_module",
        "sgetmask", "ssetmask", "sysfs", "uselib", "ustat",
    ),
    "elevateprivileges": (
        "setuid", "setgid", "setpgid", "setsid", "setreuid", "setregid", "setresuid",
        "setresgid", "setfsuid", "setfsgid",
    ),
    "spawn": ("fork", "vfork", "execve", "execveat"),
    "resourcecontrol": (
        "getpriority", "setpriority", "sched_setparam", "sched_getparam", "sched_setscheduler",
        "sched_getscheduler", "sched_setaffinity", "sched_getaffinity",
        "sched_get_priority_max", "sched_get_priority_min",
    ),
}  # fmt: skip
_ACT_ALLOW: Final = 0x7FFF0000
_ACT_TRAP: Final = 0x00030000
_ACT_KILL_PROCESS: Final = 0x80000000
_ACT_ERRNO: Final = 0x00050000
_ATTR_CTL_TSYNC: Final = 4
_CMP_MASKED_EQ: Final = 7
_CLONE_THREAD: Final = 0x00010000
_PR_SET_NO_NEW_PRIVS: Final = 38
_MCL_CURRENT, _MCL_FUTURE = 1, 2


# The options of the filter this process installed (None: no sandbox).
_installed: dict[str, str] | None = None


class SandboxError(ConfigError):
    """The process cannot be set up as asked; ``str()`` is QEMU's message."""


class _ArgCmp(ctypes.Structure):
    _fields_ = [
        ("arg", ctypes.c_uint),
        ("op", ctypes.c_int),
        ("datum_a", ctypes.c_uint64),
        ("datum_b", ctypes.c_uint64),
    ]


def _libseccomp() -> ctypes.CDLL:
    try:
        lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    except OSError:
        raise SandboxError("-sandbox: seccomp support is disabled") from None
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_attr_set.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add_array.argtypes = [
        ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint, ctypes.POINTER(_ArgCmp),
    ]  # fmt: skip
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_release.argtypes = [ctypes.c_void_p]
    lib.seccomp_api_get.restype = ctypes.c_uint
    return lib


def apply_sandbox(options: dict[str, str]) -> None:
    """Install the seccomp filter that ``-sandbox on`` with ``options`` describes."""
    lib = _libseccomp()
    kill = _ACT_KILL_PROCESS if lib.seccomp_api_get() >= 3 else _ACT_TRAP
    denied = list(_ALWAYS)
    for name, calls in _SETS.items():
        if options.get(name, "allow") != "allow":
            denied += calls
    if options.get("elevateprivileges") == "children":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise SandboxError("failed to set no_new_privs aborting")
    ctx = lib.seccomp_init(_ACT_ALLOW)
    if not ctx:
        raise SandboxError("failed to initialize seccomp context")
    try:
        ok = lib.seccomp_attr_set(ctx, _ATTR_CTL_TSYNC, 1) == 0
        for name in denied:
            ok = ok and _deny(lib, ctx, name, kill)
        if options.get("spawn") == "deny":
            thread = (_ArgCmp * 1)(_ArgCmp(0, _CMP_MASKED_EQ, _CLONE_THREAD, 0))
            number = lib.seccomp_syscall_resolve_name(b"clone")
            ok = ok and lib.seccomp_rule_add_array(ctx, kill, number, 1, thread) == 0
            ok = ok and _deny(lib, ctx, "clone3", _ACT_ERRNO | errno.ENOSYS)
        if not ok:
            raise SandboxError("failed to add seccomp filter rule")
        if lib.seccomp_load(ctx) != 0:
            raise SandboxError("failed to install seccomp syscall filter in the kernel")
    finally:
        lib.seccomp_release(ctx)
    global _installed
    _installed = dict(options)


def spawn_attempt() -> None:
    """Where QEMU starts a process (``migrate`` to ``exec:``): the simulator runs none,
    but under ``spawn=deny`` it makes the call QEMU makes, and the kernel kills it."""
    denied = _installed is not None and _installed.get("spawn") == "deny"
    if denied and os.fork() == 0:  # the filter kills the process in fork()
        os._exit(0)


def _deny(lib: ctypes.CDLL, ctx: int, name: str, action: int) -> bool:
    number = lib.seccomp_syscall_resolve_name(name.encode())
    if number < 0:
        return True  # not a system call of this architecture
    return bool(lib.seccomp_rule_add_array(ctx, action, number, 0, None) == 0)


def apply_process_options(config: MachineConfig) -> None:
    """Name, lock and sandbox this process as the command line says (SandboxError)."""
    if config.process_name:
        # What prctl(PR_SET_NAME) sets, for the main thread: the name ps shows.
        with open("/proc/self/comm", "w") as comm:
            comm.write(config.process_name[:15])
    if config.mem_lock:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.mlockall(_MCL_CURRENT | _MCL_FUTURE) != 0:
            raise SandboxError("locking memory failed")
    if config.sandbox is not None:
        apply_sandbox(config.sandbox)

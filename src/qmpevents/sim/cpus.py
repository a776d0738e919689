"""The guest's CPUs: their topology, NUMA nodes, vCPU threads and the QMP queries about them.

libvirt reads ``query-hotpluggable-cpus`` and ``query-cpus-fast`` when a domain
starts, and then moves each ``thread-id`` into the domain's cgroup and pins it.
So the ids must be real threads of this process: each present vCPU is an idle
thread, named ``CPU N/TCG`` under ``-name debug-threads=on`` as QEMU names its
TCG vCPU threads (until the machine starts they all read as the main thread).

The answers are QEMU 7.2's for x86 (hw/i386/x86.c, measured): the possible CPUs
of the ``-smp`` topology, listed highest first by ``query-hotpluggable-cpus``
with a ``qom-path`` only for those present; CPU 0 is
``/machine/unattached/device[0]`` and CPU i>0 is ``device[i+1]`` (the board
adds one device after the first CPU); ``node-id`` appears with NUMA, from
``-numa node,cpus=`` or, when no node names CPUs, socket modulo node count
(CPUs left out of a partial mapping go to node 0, with QEMU's warnings, see
:mod:`qmpevents.sim.cmdline_host`). ``-machine none`` has no CPUs.

pseries (measured on qemu-system-ppc64 7.2) hot-plugs cores: ``query-hotpluggable-cpus``
lists ``power9_v2.0-spapr-cpu-core`` entries whose props are ``core-id`` (the
core's first CPU index) and ``node-id``, 0 even without NUMA. Core c is
``/machine/unattached/device[c+1]`` (device[0] is the interrupt controller,
spapr-xive) and ``query-cpus-fast`` names its threads ``.../thread[t]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgspec

from qmpevents.server.commands import CommandContext
from qmpevents.sim.capabilities import MACHINE_INFO
from qmpevents.sim.config import CpuTopology, MachineConfig
from qmpevents.sim.errors import fail
from qmpevents.sim.help import machine_type_name
from qmpevents.sim.target import CPU_FAMILY

if TYPE_CHECKING:
    from qmpevents.sim.machine import Machine

__all__ = ["Cpus", "slot_props", "slot_text", "topology_of"]


class CpuProps(msgspec.Struct, omit_defaults=True, rename="kebab"):
    """QAPI CpuInstanceProperties, members in schema order."""

    node_id: int | None = None
    socket_id: int | None = None
    die_id: int | None = None
    cluster_id: int | None = None
    core_id: int | None = None
    thread_id: int | None = None


class HotpluggableCpu(msgspec.Struct, omit_defaults=True, rename="kebab"):
    """QAPI HotpluggableCPU."""

    type: str
    vcpus_count: int
    props: CpuProps
    qom_path: str | None = None


class CpuInfoFast(msgspec.Struct, rename="kebab"):
    """QAPI CpuInfoFast (QEMU 7.2, without the deprecated members)."""

    cpu_index: int
    qom_path: str
    thread_id: int
    props: CpuProps
    target: str


class IOThreadInfo(msgspec.Struct, rename="kebab"):
    """QAPI IOThreadInfo (there are none: -object iothread is not simulated)."""

    id: str
    thread_id: int


def topology_of(config: MachineConfig) -> CpuTopology:
    """The machine's CPU topology: ``-smp`` as computed, or one socket of ``cpus`` cores."""
    if config.topology is not None:
        return config.topology
    return CpuTopology(cpus=config.cpus, cores=config.cpus, maxcpus=config.cpus)


def slot_props(topology: CpuTopology, index: int) -> CpuProps:
    """The socket/die/core/thread ids of possible CPU ``index`` (x86_topo_ids_from_idx)."""
    threads, cores, dies = topology.threads, topology.cores, topology.dies
    return CpuProps(
        socket_id=index // (threads * cores * dies),
        die_id=(index // (threads * cores)) % dies if dies > 1 else None,
        core_id=(index // threads) % cores,
        thread_id=index % threads,
    )


def slot_text(props: CpuProps) -> str:
    """QEMU's ``cpu_slot_to_string()`` of ``props`` (warnings name CPUs so)."""
    parts = [
        f"{name}: {value}"
        for name, value in (
            ("socket-id", props.socket_id),
            ("die-id", props.die_id),
            ("cluster-id", props.cluster_id),
            ("core-id", props.core_id),
            ("thread-id", props.thread_id),
        )
        if value is not None
    ]
    return ", ".join(parts)


def cpu_model(config: MachineConfig) -> str:
    """The guest's CPU model: ``-cpu``'s, or the machine type's default (qemu64 for none)."""
    if config.cpu_model is not None:
        return config.cpu_model
    default = MACHINE_INFO[machine_type_name(config.machine_type)].default_cpu_type
    return default.split("-", 1)[0] if default else "qemu64"


class Cpus:
    """The vCPUs of one machine and ``query-hotpluggable-cpus``/``-cpus-fast``/``-iothreads``."""

    def __init__(self, machine: Machine) -> None:
        self._machine = machine
        config = machine.config
        self.topology = topology_of(config)
        self.present = 0 if config.machine_type == "none" else self.topology.cpus
        self._ppc = config.machine_type == "pseries"
        self._nodes = self._node_ids(config)
        self._thread_ids: list[int] = []
        self._stop = threading.Event()

    def _node_ids(self, config: MachineConfig) -> list[int | None]:
        nodes = config.numa_nodes
        count = self.topology.maxcpus
        if not nodes:
            return [None] * count
        named = {cpu: node.nodeid for node in nodes for cpu in node.cpus}
        if named:
            return [named.get(index, 0) for index in range(count)]
        node_ids = [node.nodeid for node in nodes]
        return [
            node_ids[(slot_props(self.topology, index).socket_id or 0) % len(node_ids)]
            for index in range(count)
        ]

    def install(self) -> None:
        """Register the three CPU queries."""
        server = self._machine.server
        server.register(
            "query-hotpluggable-cpus", self._hotpluggable, returns=list[HotpluggableCpu]
        )
        server.register("query-cpus-fast", self._cpus_fast, returns=list[CpuInfoFast])
        server.register("query-iothreads", self._iothreads, returns=list[IOThreadInfo])

    def start(self) -> None:
        """Start one idle thread per present vCPU; they end when the server closes."""
        if not self.present:
            return
        named = self._machine.config.debug_threads
        ids = [0] * self.present
        started = threading.Barrier(self.present + 1)

        def run(index: int) -> None:
            ids[index] = threading.get_native_id()
            if named:
                _name_thread(f"CPU {index}/TCG")
            started.wait()
            self._stop.wait()

        for index in range(self.present):
            threading.Thread(
                target=run, args=(index,), name=f"CPU {index}/TCG", daemon=True
            ).start()
        started.wait()
        self._thread_ids = ids
        self._machine.server.spawn(self._hold(), "vcpus")

    async def _hold(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            self._stop.set()

    @property
    def cpu_type(self) -> str:
        """The QOM type of each vCPU."""
        model = cpu_model(self._machine.config)
        return f"{model}-{CPU_FAMILY[model]}"

    def qom_path(self, index: int) -> str:
        """The QOM path of present CPU ``index``."""
        if self._ppc:
            threads = self.topology.threads
            return f"{self._core_path(index // threads)}/thread[{index % threads}]"
        return f"/machine/unattached/device[{index if index == 0 else index + 1}]"

    @staticmethod
    def _core_path(core: int) -> str:
        return f"/machine/unattached/device[{core + 1}]"

    def props(self, index: int) -> CpuProps:
        """The instance properties of possible CPU ``index`` (on pseries: of core ``index``)."""
        node = self._nodes[index]
        if self._ppc:
            return CpuProps(node_id=node or 0, core_id=index * self.topology.threads)
        slot = slot_props(self.topology, index)
        slot.node_id = node
        return slot

    def _hotpluggable(self, _: object, ctx: CommandContext) -> list[HotpluggableCpu]:
        config = self._machine.config
        if config.machine_type == "none":
            fail("The feature 'query-hotpluggable-cpus' is not enabled")
        if self._ppc:
            cores = self.topology.maxcpus // self.topology.threads
            kind = f"{cpu_model(config)}-spapr-cpu-core"
            slots = [(i, self.topology.threads) for i in range(cores)]
            present = self.present // self.topology.threads
            path: Callable[[int], str] = self._core_path
        else:
            kind = self.cpu_type
            slots = [(i, 1) for i in range(self.topology.maxcpus)]
            present = self.present
            path = self.qom_path
        return [
            HotpluggableCpu(
                kind, count, self.props(index), path(index) if index < present else None
            )
            for index, count in reversed(slots)
        ]

    def _cpus_fast(self, _: object, ctx: CommandContext) -> list[CpuInfoFast]:
        target = "ppc64" if self._ppc else "x86_64"
        return [
            CpuInfoFast(
                index,
                self.qom_path(index),
                self._thread_ids[index] if index < len(self._thread_ids) else _main_thread(),
                self.props(index // self.topology.threads if self._ppc else index),
                target,
            )
            for index in range(self.present)
        ]

    def _iothreads(self, _: object, ctx: CommandContext) -> list[IOThreadInfo]:
        return []


def _main_thread() -> int:
    native = threading.main_thread().native_id
    return native if native is not None else threading.get_native_id()


def _name_thread(name: str) -> None:
    # Linux names a thread by its comm file (what prctl(PR_SET_NAME) sets), 15 bytes.
    with (
        contextlib.suppress(OSError),
        open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm,
    ):
        comm.write(name[:15])

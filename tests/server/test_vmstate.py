"""The run state and QEMU's rules for STOP and RESUME."""

from __future__ import annotations

import asyncio

from qmpevents.server.vmstate import VMState


def test_stop_and_start_send_events_only_on_a_change() -> None:
    sent: list[str] = []
    vm = VMState(sent.append)
    assert vm.running and vm.status == "running"
    assert vm.stop() and vm.status == "paused"
    assert not vm.stop()
    assert vm.start() and not vm.start()
    assert sent == ["STOP", "RESUME"]


def test_prelaunch_stays_prelaunch_on_stop_and_reset_returns_there() -> None:
    sent: list[str] = []
    vm = VMState(sent.append, start_paused=True)
    assert vm.status == "prelaunch" and not vm.stop() and vm.status == "prelaunch"
    vm.start()
    vm.stop("guest-panicked")
    vm.reset()
    assert vm.status == "prelaunch"
    vm.start()
    vm.reset()  # a running VM keeps running through a reset
    assert vm.status == "running"
    assert sent == ["RESUME", "STOP", "RESUME"]


async def test_first_run_waits_for_the_vm_to_run_once() -> None:
    vm = VMState(lambda _: None, start_paused=True)
    waiting = asyncio.create_task(vm.first_run())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    vm.start()
    await asyncio.wait_for(waiting, 5)
    vm.stop()
    await asyncio.wait_for(vm.first_run(), 5)  # it ran once: no more waiting


async def test_first_run_of_a_vm_that_runs_from_the_start() -> None:
    await asyncio.wait_for(VMState(lambda _: None).first_run(), 5)

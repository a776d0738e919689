"""The run state and QEMU's rules for STOP and RESUME."""

from __future__ import annotations

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

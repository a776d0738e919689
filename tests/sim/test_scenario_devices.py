"""Devices added from outside a scenario (serve's --pvpanic, --vserport, --dimm)."""

from __future__ import annotations

import pytest

from qmpevents.sim.config import MIB, DimmConfig, MachineConfig, VserportConfig
from qmpevents.sim.scenario import bundled_scenario
from qmpevents.sim.scenario_devices import (
    DeviceOptionError,
    add_devices,
    describe_devices,
    parse_dimm,
)


def test_parse_dimm() -> None:
    assert parse_dimm("dimm1:128M") == DimmConfig("dimm1", "mem-dimm1", 128 * MIB)
    assert parse_dimm("d-2:1G").size == 1 << 30
    assert parse_dimm("d3:64").size == 64 * MIB  # a bare size is MiB


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("dimm1", "'dimm1': expected ID:SIZE (dimm1:128M)"),
        (":1G", "':1G': expected ID:SIZE"),
        ("1dimm:1G", "'1dimm': a device id is a letter, then letters"),
        ("d:lots", "'d:lots': Parameter 'size' expects a non-negative number below 2^64 ("),
        ("d:0", "'d:0': a DIMM needs a size above 0"),
    ],
)
def test_bad_dimm(spec: str, message: str) -> None:
    with pytest.raises(DeviceOptionError) as error:
        parse_dimm(spec)
    assert error.value.option == "--dimm"
    assert error.value.message.startswith(message)
    assert "\n" not in error.value.message


def test_add_devices_to_a_plain_machine() -> None:
    config = MachineConfig(ram_size=64 * MIB)
    add_devices(config, vserports=["vs0", "vs1"], dimms=["d1:128M", "d2:256M"], pvpanic=True)
    assert config.pvpanic
    assert config.serial_buses == ["virtio-serial0"]
    assert config.vserports == [
        VserportConfig("vs0", bus="virtio-serial0"),
        VserportConfig("vs1", bus="virtio-serial0"),
    ]
    assert [d.id for d in config.dimms] == ["d1", "d2"]
    # -m 64M,slots=2,maxmem=448M: just enough for RAM and the DIMMs.
    assert (config.slots, config.maxmem) == (2, 448 * MIB)


def test_add_devices_to_a_scenario_machine_keeps_what_it_has() -> None:
    config = bundled_scenario("unplug").machine_config()  # slots 2, maxmem 2G, dimm1
    add_devices(config, vserports=["vs0"], dimms=["dimm2:128M"], pvpanic=False)
    assert not config.pvpanic
    assert [d.id for d in config.dimms] == ["dimm1", "dimm2"]
    assert (config.slots, config.maxmem) == (2, 2 << 30)  # enough already: kept
    add_devices(config, dimms=["dimm3:1G"])
    # A third DIMM: a third slot, and maxmem grows to RAM + DIMMs (1G + 256M + 128M + 1G).
    assert (config.slots, config.maxmem) == (3, (2 << 30) + 384 * MIB)


@pytest.mark.parametrize(
    ("kwargs", "option"),
    [
        ({"vserports": ["vs0", "vs0"]}, "--vserport"),
        ({"vserports": ["vs0"], "dimms": ["vs0:1G"]}, "--dimm"),
        ({"vserports": ["virtio-serial0"]}, "--vserport"),
        ({"vserports": ["0vs"]}, "--vserport"),
    ],
)
def test_duplicate_or_bad_ids(kwargs: dict[str, list[str]], option: str) -> None:
    config = MachineConfig()
    with pytest.raises(DeviceOptionError) as error:
        add_devices(config, **kwargs)
    assert error.value.option == option


def test_describe_devices() -> None:
    config = MachineConfig(ram_size=64 * MIB, pvpanic=True)
    add_devices(config, vserports=["vs0"], dimms=["dimm1:128M"])
    config.serial_buses.append("virtio-serial1")  # a second bus the first port is not on
    assert describe_devices(config) == [
        "machine pc, 64M RAM (-m 64M,slots=1,maxmem=192M)",
        "device pvpanic (guest action x-sim-pvpanic)",
        "device virtserialport vs0 on virtio-serial0 (guest action x-sim-vserport)",
        "device pc-dimm dimm1, 128M "
        "(device_del, then guest action x-sim-unplug-reject or x-sim-unplug-policy)",
    ]
    assert describe_devices(MachineConfig()) == [
        "machine pc, 128M RAM",
        "no pvpanic, virtserialport, pc-dimm (add with --pvpanic, --vserport ID, --dimm ID:SIZE)",
    ]

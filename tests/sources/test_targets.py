"""parse_target: the one reading of a command-line target."""

from __future__ import annotations

import pytest

from qmpevents.addresses import Address
from qmpevents.errors import ConfigError
from qmpevents.sources import QMPSource, parse_target


@pytest.mark.parametrize(
    ("text", "name", "address"),
    [
        ("/run/qemu/web1.qmp", "web1", Address(path="/run/qemu/web1.qmp")),
        ("vm.sock", "vm", Address(path="vm.sock")),
        ("db=/run/x.sock", "db", Address(path="/run/x.sock")),
        ("/run/a=b/vm.sock", "vm", Address(path="/run/a=b/vm.sock")),
        ("db=127.0.0.1:4444", "db", Address(host="127.0.0.1", port=4444)),
        ("localhost:4444", "localhost:4444", Address(host="localhost", port=4444)),
        ("v6=[::1]:4444", "v6", Address(host="::1", port=4444)),
    ],
)
def test_forms(text: str, name: str, address: Address) -> None:
    target = parse_target(text)
    assert (target.name, target.address) == (name, address)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "an empty target"),
        ("vm=", "expected NAME=TARGET"),
        ("=/x.sock", "expected NAME=TARGET"),
        ("vm=host:0", "TCP port must be 1-65535"),
        ("host:65536", "TCP port must be 1-65535"),
    ],
)
def test_malformed_targets_name_the_problem(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_target(text)


def test_a_target_makes_its_source() -> None:
    source = parse_target("web=/run/web.sock").source(reconnect=False, names=("STOP",))
    assert isinstance(source, QMPSource)
    assert (source.name, source.address, source.names) == (
        "web",
        Address(path="/run/web.sock"),
        ("STOP",),
    )
    assert parse_target("x.sock", name="other").name == "other"

"""tools/record_libvirt.py turns a proxy record and libvirtd's log into the data file.

Recording needs root and libvirtd (``make libvirt-recording``); the parsing,
normalizing and de-duplicating here need neither.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import REPO


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "record_libvirt", REPO / "tools/record_libvirt.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _tool()


def _line(direction: str, client: str, message: dict[str, object]) -> str:
    data = json.dumps(message) + "\r\n"
    return json.dumps({"time": 0.0, "dir": direction, "client": client, "data": data})


def test_proxy_records_pair_each_client_request_with_its_reply() -> None:
    lines = [
        _line("down->proxy", "a", {"execute": "query-kvm", "id": "libvirt-1"}),
        _line("proxy->up", "a", {"execute": "query-kvm", "id": 1}),
        _line("down->proxy", "b", {"execute": "query-target", "id": "libvirt-1"}),
        _line("proxy->down", "b", {"return": {"arch": "x86_64"}, "id": "libvirt-1"}),
        _line("proxy->down", "a", {"return": {"enabled": False}, "id": "libvirt-1"}),
    ]
    assert tool.pair_proxy_record(lines) == [
        ("query-target", {}, {"return": {"arch": "x86_64"}, "id": "libvirt-1"}),
        ("query-kvm", {}, {"return": {"enabled": False}, "id": "libvirt-1"}),
    ]


LOG = """\
2026-12-01 07:00:43.760+0000: 6652: debug : qemuProcessStart:7834 : conn=0x1 driver=0x2 vm=0x7f01 name=dom id=-1 asyncJob=start
2026-12-01 07:00:43.789+0000: 6652: debug : qemuMonitorSetCapabilities:1409 : mon:0xaa vm:0x7f01 fd:34
2026-12-01 07:00:43.800+0000: 9022: info : qemuMonitorIOWrite:366 : QEMU_MONITOR_IO_WRITE: mon=0xbb buf={"execute":"qom-get","arguments":{"path":"/x","property":"y"},"id":"libvirt-9"}
2026-12-01 07:00:43.814+0000: 9022: info : qemuMonitorIOWrite:366 : QEMU_MONITOR_IO_WRITE: mon=0xaa buf={"execute":"qom-get","arguments":{"path":"/machine/unattached/device[0]","property":"sse2"},"id":"libvirt-7"}
2026-12-01 07:00:43.828+0000: 9022: info : qemuMonitorJSONIOProcessLine:208 : QEMU_MONITOR_RECV_REPLY: mon=0xbb reply={"return": false, "id": "libvirt-9"}
2026-12-01 07:00:43.828+0000: 9022: info : qemuMonitorJSONIOProcessLine:208 : QEMU_MONITOR_RECV_REPLY: mon=0xaa reply={"return": true, "id": "libvirt-7"}
"""  # noqa: E501


def test_the_domain_log_gives_that_domains_exchanges_only() -> None:
    mon = tool.domain_monitor(LOG, "dom")
    assert mon == "0xaa"
    assert tool.pair_monitor_log(LOG, mon) == [
        ("qom-get", {"path": "/machine/unattached/device[0]", "property": "sse2"},
         {"return": True, "id": "libvirt-7"}),
    ]  # fmt: skip
    with pytest.raises(tool.RecordingError, match="does not show domain other starting"):
        tool.domain_monitor(LOG, "other")


def test_entries_are_normalized_deduplicated_and_sorted() -> None:
    replacements = [(re.compile(r"/var/lib/libvirt/qemu/qmp-[A-Za-z0-9]{6}"), "qmp-X")]
    found = tool.entries(
        [
            ("qmp_capabilities", {}, {"return": {}}),
            ("query-target", {}, {"return": {"arch": "x86_64"}}),
            (
                "x",
                {"p": "/var/lib/libvirt/qemu/qmp-AB12CD/a"},
                {"error": {"class": "C", "desc": "d"}},
            ),
            ("query-target", {}, {"return": {"arch": "x86_64"}}),
        ],
        replacements,
    )
    assert found == [
        {"execute": "query-target", "arguments": {}, "return": {"arch": "x86_64"}},
        {"execute": "x", "arguments": {"p": "qmp-X/a"}, "error": {"class": "C", "desc": "d"}},
    ]


def test_one_question_answered_two_ways_fails_the_recording() -> None:
    exchanges = [("query-kvm", {}, {"return": {"enabled": b}}) for b in (True, False)]
    with pytest.raises(tool.RecordingError, match=r"query-kvm \{\} was answered differently"):
        tool.entries(exchanges, [])


def test_the_data_file_is_one_entry_per_line(tmp_path: Path) -> None:
    out = tmp_path / "data.json"
    entries = [
        {"execute": "a", "arguments": {}, "return": 1},
        {"execute": "b", "arguments": {}, "return": 2},
    ]
    tool.write_entries(out, entries)
    assert json.loads(out.read_text()) == entries
    assert len(out.read_text().splitlines()) == 4

"""The shipped Prometheus rules and Grafana dashboard use only metrics the collector exports,
and promtool accepts the rules (required in CI, where QMPEVENTS_REQUIRE_PROMTOOL=1)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest
from prometheus_client.metrics_core import Metric

from qmpevents.collect.metrics import CollectorMetrics
from tests.helpers import REPO

RULES = REPO / "deploy" / "prometheus" / "qmpevents-alerts.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "qmpevents-alerts.test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "qmpevents-dashboard.json"
_NAME = re.compile(r"\bqmpevents_[a-z_]+\b")
_SUFFIXES = {"counter": ("_total", "_created"), "gauge": ("",), "histogram": ("_bucket", "_sum")}


def exported() -> set[str]:
    """Every sample name the collector's registry can expose."""
    names: set[str] = set()
    families: list[Metric] = list(CollectorMetrics().registry.collect())
    for family in families:
        for suffix in _SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def used(text: str) -> set[str]:
    return set(_NAME.findall(text))


def test_the_rules_use_only_exported_metrics() -> None:
    names = used(RULES.read_text())
    assert names, "no metric in the rules"
    assert names <= exported(), names - exported()


def test_the_dashboard_uses_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
    names = set().union(*(used(expr) for expr in exprs))
    assert len(dashboard["panels"]) >= 8 and names
    assert names <= exported(), names - exported()


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is not installed (Debian package prometheus)"
        if os.environ.get("QMPEVENTS_REQUIRE_PROMTOOL") == "1":
            pytest.fail(f"{message}, and QMPEVENTS_REQUIRE_PROMTOOL=1 requires it")
        pytest.skip(message)
    return path


def test_promtool_accepts_the_rules() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alerts_fire_on_the_series_they_watch() -> None:
    """promtool's unit tests: a panic fires QMPGuestPanicked with the VM's name, a VM
    disconnected for 5 minutes fires QMPVMDisconnected and not before, a reject fires."""
    result = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout

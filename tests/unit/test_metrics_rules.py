"""deploy/prometheus/: the scrape config and the alerting rules, checked by promtool.

``promtool`` comes with the Debian package ``prometheus`` (scripts/test-deps).
Besides promtool's own checks, every metric the rules use must be one the
worker exports, and every alert must have a unit test in which it fires.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from driftline.core.config import load_config
from driftline.core.join import JoinBuffer
from driftline.core.monitor import MonitorSet
from driftline.streaming.app import WorkerState
from driftline.streaming.metrics import FaustCollector, WorkerCollector

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = DEPLOY / "rules.yml"
RULES_TEST = DEPLOY / "rules_test.yml"
CONFIG = DEPLOY / "prometheus.yml"


def promtool(*args: str) -> str:
    exe = shutil.which("promtool")
    assert exe, "promtool not found: install prometheus (scripts/test-deps)"
    proc = subprocess.run(
        [exe, *args], capture_output=True, text=True, timeout=120, check=False, cwd=DEPLOY
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{out}"
    return out


def test_promtool_checks_the_rules():
    assert "SUCCESS" in promtool("check", "rules", str(RULES))


def test_promtool_unit_tests_of_the_rules_pass():
    assert "SUCCESS" in promtool("test", "rules", str(RULES_TEST))


def test_promtool_checks_the_config():
    out = promtool("check", "config", str(CONFIG))
    assert "is valid prometheus config file syntax" in out
    assert "1 rule files found" in out


def exported_names() -> set[str]:
    """Every sample name the worker's collectors can export (their families, described)."""
    config = load_config(env={})
    state = WorkerState(join=JoinBuffer(60.0), store={}, monitors=MonitorSet(config))  # type: ignore[arg-type]
    registry = CollectorRegistry()
    names: set[str] = set()
    for collector in (WorkerCollector(state, config.metrics), FaustCollector(None, [])):  # type: ignore[arg-type]
        registry.register(collector)
        for fam in collector.describe():
            if fam.type == "counter":
                names.add(f"{fam.name}_total")
            elif fam.type == "histogram":
                names.update(f"{fam.name}_{s}" for s in ("bucket", "sum", "count"))
            else:
                names.add(fam.name)
    return names


def test_rules_use_only_metrics_the_worker_exports():
    used = set(re.findall(r"\b(driftline_[a-z0-9_]+)", RULES.read_text()))
    assert used, "no driftline_ metric in the rules?"
    assert used <= exported_names(), sorted(used - exported_names())


def test_every_alert_has_a_test_where_it_fires():
    alerts = re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.M)
    assert len(alerts) == len(set(alerts)) >= 5
    firing = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:\n", RULES_TEST.read_text()))
    quiet = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts: \[\]", RULES_TEST.read_text()))
    assert set(alerts) == firing == quiet


@pytest.mark.parametrize("path", [CONFIG, RULES, RULES_TEST])
def test_no_machine_paths(path):
    assert not re.search(r"(/home/|/root/|/tmp/|/work/)", path.read_text())

"""Smoke test of scripts/eval_detection.py: its core finds a drift it was shown, and only then."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "eval_detection.py"


@pytest.fixture(scope="module")
def ev():
    spec = importlib.util.spec_from_file_location("eval_detection", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


@pytest.mark.parametrize("stream", ["agrawal", "stagger"])
def test_abrupt_drift_is_found_soon_after_the_change(ev, stream):
    case = ev.Case("abrupt", stream, seed=0, events=4_000)
    (run,) = ev.evaluate(case, ("ADWIN",))
    assert run.case.change == 2_000
    delay = run.delay()
    assert delay is not None, f"no concept_drift firing after the change: {run.alerts}"
    # Confirmation needs 100 outcomes after the detection; 600 is generous.
    assert 0 <= delay <= 600, run.alerts
    assert run.false_alarms() == 0, run.alerts


def test_stable_stream_stays_silent(ev):
    (run,) = ev.evaluate(ev.Case("stable", "agrawal", seed=0, events=4_000), ("ADWIN",))
    assert run.case.change is None and run.case.onset == 4_000
    assert run.alerts == ()
    assert run.delay() is None and run.false_alarms() == 0


def test_metrics_count_from_the_truth(ev):
    case = ev.Case("recurring", "sea", seed=0, events=10_000)
    assert (case.change, case.end, case.window, case.onset) == (5_000, 7_500, 2_500, 5_000)
    alerts = (
        ("concept_drift", "firing", 1_200),  # before the change: a false alarm
        ("concept_drift", "resolved", 1_900),
        ("prediction_drift", "firing", 5_100),  # another monitor
        ("concept_drift", "firing", 5_340),
        ("concept_drift", "resolved", 7_980),
    )
    run = ev.Run(case, "ADWIN", alerts)
    assert run.delay() == 340 and run.false_alarms() == 1
    assert run.resolved_after() == 480
    assert run.delay("prediction_drift") == 100 and run.false_alarms("data_drift") == 0
    late = ev.Run(case, "ADWIN", (("concept_drift", "firing", 7_500),))
    assert late.delay() is None  # outside the detection window: missed
    gradual = ev.Case("gradual", "sea", seed=0, events=10_000)
    assert gradual.onset == 4_000  # the slide starts a width before its centre
    early = ev.Run(gradual, "ADWIN", (("concept_drift", "firing", 4_500),))
    assert early.delay() == -500 and early.false_alarms() == 0
    assert ev.p90([5, 1, 4, 2, 3]) == 5 and ev.p90(list(range(1, 21))) == 18

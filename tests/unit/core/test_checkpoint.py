"""Monitor checkpoints: what a restarted worker resumes from, and what it refuses."""

from __future__ import annotations

import pytest

from driftline.core import checkpoint
from driftline.core.config import load_config
from driftline.core.events import Joined, Outcome, Prediction, PredictionSeen
from driftline.core.monitor import MonitorSet


def warm(config_text: str = "") -> MonitorSet:
    ms = MonitorSet(load_config(text=config_text, env={}))
    for i in range(500):
        p = Prediction(f"r{i}", "fraud", i % 2 == 0, float(i), "v2", score=0.7)
        ms.handle(PredictionSeen(p))
        ms.handle(Joined(p, Outcome(f"r{i}", True, float(i) + 1)))
    return ms


def test_a_restored_monitor_goes_on_exactly_where_it_was():
    ms = warm()
    raw = checkpoint.dump("fraud", ms.of_model("fraud"), {"p0": [7, 0], "x0": [3.5, "r1"]}, 42)
    cp = checkpoint.load(raw)
    assert (cp.model_id, cp.offset) == ("fraud", 42)
    assert cp.high_water == {"p0": [7, 0], "x0": [3.5, "r1"]}
    keep, why = checkpoint.restorable(cp, ms.config)
    assert why == []
    restored = MonitorSet(ms.config)
    restored.adopt(keep)
    assert restored.status() == ms.status()
    assert restored.versions == {"fraud": 1}
    # Both go on identically: same counts, same metrics, same alerts.
    for i in range(500, 700):
        p = Prediction(f"r{i}", "fraud", True, float(i), "v2", score=0.2)
        j = Joined(p, Outcome(f"r{i}", False, float(i) + 1))
        assert restored.handle(j) == ms.handle(j)
    assert restored.status() == ms.status()


def test_a_monitor_whose_configuration_changed_starts_afresh():
    ms = warm()
    cp = checkpoint.load(checkpoint.dump("fraud", ms.of_model("fraud"), {}, 1))
    changed = load_config(text="[monitors.performance]\nwindow = 123", env={})
    keep, why = checkpoint.restorable(cp, changed)
    assert keep == []
    assert "fraud v2: its configuration changed" in why[0]


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        (b"", "not a driftline checkpoint"),
        (b"{}", "not a driftline checkpoint"),
        (b"driftline-checkpoint:9\n...", "checkpoint format '9', this driftline reads 1"),
        (b"driftline-checkpoint:1\nnot zlib", "checkpoint does not load"),
    ],
)
def test_a_checkpoint_that_is_not_usable_says_why(raw: bytes, says: str):
    with pytest.raises(checkpoint.CheckpointError, match=says):
        checkpoint.load(raw)


def test_high_water_marks_drop_what_was_applied_per_source():
    hw: checkpoint.HighWater = {}
    assert checkpoint.admit(hw, ["p0", 10, 0])
    assert checkpoint.admit(hw, ["p0", 10, 1])  # a second event of the same record
    assert not checkpoint.admit(hw, ["p0", 10, 1])
    assert not checkpoint.admit(hw, ["p0", 9, 5])
    assert checkpoint.admit(hw, ["o0", 1, 0])  # another source has its own mark
    assert checkpoint.admit(hw, ["x0", 12.5, "b"])
    assert not checkpoint.admit(hw, ["x0", 12.5, "a"])
    assert checkpoint.admit(hw, ["x0", 12.5, "c"])

"""The report's recorder: bounded, faithful to the monitors, and invisible to them."""

import itertools
from pathlib import Path

import pytest

from driftline.core.config import Config
from driftline.core.events import Expired, Joined, Outcome, Prediction, PredictionSeen
from driftline.core.replay import encode_alert, replay
from driftline.report import Sampler, Timeline

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "covid.jsonl.gz"


@pytest.fixture(scope="module")
def covid():
    """One replay of the bundled example with a timeline, shared by the tests below."""
    config = Config()
    timeline = Timeline(config)
    result = replay([EXAMPLE], config, on_event=timeline)
    return result, timeline


def feed(timeline, n, *, model="m", outcomes=True, score=True, start=0.0):
    for i in range(n):
        t = start + i
        p = Prediction(
            f"{model}-{i}",
            model,
            i % 3 == 0,
            t,
            score=((i * 7) % 10) / 10 if score else None,
        )
        timeline(PredictionSeen(p), [])
        if outcomes:
            timeline(Joined(p, Outcome(f"{model}-{i}", i % 2 == 0, t + 0.5)), [])


@pytest.mark.parametrize("max_points", [2, 3, 10, 11, 1000])
@pytest.mark.parametrize("n", [0, 1, 7, 100, 5000])
def test_sampler_is_bounded_and_evenly_spaced(max_points, n):
    s = Sampler(max_points=max_points)
    for i in range(1, n + 1):
        if s.due():
            s.add(i)
    assert len(s.points) <= max_points
    gaps = {b - a for a, b in zip(s.points, s.points[1:], strict=False)}
    assert gaps <= {s.every}
    if s.points:
        assert n - s.points[-1] < s.every  # the newest sample is recent


def test_series_stay_bounded_on_a_long_history():
    timeline = Timeline(Config(), max_points=50)
    feed(timeline, 30_000)
    (series,) = timeline.snapshot()
    assert 25 <= len(series.metrics) <= 50
    assert 25 <= len(series.scores) <= 50
    times = [t for t, _ in series.metrics]
    assert times == sorted(times)
    assert times[-1] == 29_999.5  # the chart reaches the last outcome
    steps = {b - a for a, b in itertools.pairwise(times[:-1])}
    assert len(steps) == 1  # evenly spaced in events (one outcome per second here)


def test_last_metrics_are_the_monitors_rolling_metrics(covid):
    result, timeline = covid
    by_key = {(s.model_id, s.model_version): s for s in timeline.snapshot()}
    assert sorted(by_key) == [(m["model_id"], m["model_version"]) for m in result.models]
    for status in result.models:
        series = by_key[status["model_id"], status["model_version"]]
        assert series.task == status["task"]
        _, last = series.metrics[-1]
        assert last == pytest.approx(status["rolling_metrics"], rel=1e-9)
        assert series.first_time == status["first_event_time"]
        assert series.last_time == status["last_event_time"]


def test_recording_does_not_change_a_single_alert_byte(covid):
    result, timeline = covid
    plain = replay([EXAMPLE], Config())
    assert [encode_alert(a) for a in result.alerts] == [encode_alert(a) for a in plain.alerts]
    assert timeline.alerts == result.alerts
    assert plain.models == result.models


def test_score_percentiles_follow_a_shift():
    timeline = Timeline(Config(), score_window=100)
    for i in range(2000):
        score = 0.2 if i < 1000 else 0.8
        p = Prediction(f"r{i}", "m", score > 0.5, float(i), score=score)
        timeline(PredictionSeen(p), [])
    (series,) = timeline.snapshot()
    assert series.metrics == [] and series.shares == []
    early = [s for s in series.scores if s[0] < 900]
    late = [s for s in series.scores if s[0] > 1200]
    assert early and late
    assert all(s[1:] == pytest.approx((0.2,) * 6) for s in early)
    assert all(s[1:] == pytest.approx((0.8,) * 6) for s in late)


def test_classifier_scores_get_a_histogram_and_regression_does_not(covid):
    _, timeline = covid
    for series in timeline.snapshot():
        if series.task == "regression":
            assert series.histograms == [] and series.scores
            continue
        assert [t for t, _ in series.histograms] == [s[0] for s in series.scores]
        for _, shares in series.histograms:
            assert len(shares) == 20 and sum(shares) == pytest.approx(1.0)


def test_reference_end_is_when_the_drift_reference_fills():
    timeline = Timeline(Config())
    feed(timeline, 2500, outcomes=False)
    (series,) = timeline.snapshot()
    assert series.reference_end == 1999.0  # the 2000th prediction (reference_size)


def test_label_free_model_has_scores_and_no_metrics():
    timeline = Timeline(Config())
    feed(timeline, 300, outcomes=False)
    p = Prediction("x", "m", True, 400.0, score=0.9)
    timeline(Expired(p, 500.0), [])  # expiries are counted by the monitors, not charted
    (series,) = timeline.snapshot()
    assert series.metrics == []
    assert series.scores and series.scores[-1][0] == 299.0


def test_labels_without_scores_are_recorded_as_shares():
    timeline = Timeline(Config(), score_window=200)
    for i in range(600):
        label = ("cat", "dog", "bird")[i % 3] if i < 300 else "cat"
        p = Prediction(f"r{i}", "m", label, float(i), task="multiclass")
        timeline(PredictionSeen(p), [])
        timeline(Joined(p, Outcome(f"r{i}", "cat", i + 1.0)), [])
    (series,) = timeline.snapshot()
    assert series.scores == [] and series.score_name == "predicted label"
    for _, shares in series.shares:
        assert sum(shares.values()) == pytest.approx(1.0)
    assert series.shares[-1][1] == {"cat": 1.0}
    assert series.metrics[-1][1]["accuracy"] == pytest.approx(400 / 600)


def test_regression_skips_unscorable_pairs():
    timeline = Timeline(Config())
    for i in range(300):
        p = Prediction(f"r{i}", "ltv", float(i % 10), float(i), task="regression")
        timeline(PredictionSeen(p), [])
        outcome = "n/a" if i % 2 else float(i % 10) + 1.0
        timeline(Joined(p, Outcome(f"r{i}", outcome, i + 0.5)), [])
    (series,) = timeline.snapshot()
    assert series.score_name == "prediction"
    _, last = series.metrics[-1]
    assert last["n"] == 150 and last["mae"] == pytest.approx(1.0)

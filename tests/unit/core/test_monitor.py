import pickle

import pytest

from driftline.core.codec import decode_line
from driftline.core.config import load_config
from driftline.core.events import Expired, Joined, Outcome, Prediction, PredictionSeen
from driftline.core.monitor import ModelMonitor, MonitorSet, infer_task
from driftline.core.pipeline import Pipeline
from driftline.scenarios import generate


def records(scenario, **kw):
    cfg = load_config(env={})
    return [decode_line(r, cfg.limits) for r in generate(scenario, **kw)]


def feed(pipe, recs):
    out = []
    for r in recs:
        out.extend(pipe.prediction(r) if isinstance(r, Prediction) else pipe.outcome(r))
    return out


def test_monitor_state_pickles_mid_stream_and_continues_identically():
    recs = records("abrupt", models=2, events=5000, change_at=2500, seed=4)
    cfg = load_config(env={})
    a = Pipeline(cfg)
    cut = len(recs) // 2
    feed(a, recs[:cut])
    b = pickle.loads(pickle.dumps(a))
    rest_a = feed(a, recs[cut:])
    rest_b = feed(b, recs[cut:])
    assert rest_a and rest_a == rest_b
    assert a.status() == b.status()


def test_threshold_rule_pages_when_rolling_accuracy_stays_low():
    cfg = load_config(
        text="""
[monitors.concept_drift]
enabled = false
[monitors.performance]
window = 200
thresholds = [{metric = "accuracy", below = 0.8, for_events = 100, severity = "critical"}]
""",
        env={},
    )
    recs = records("abrupt", models=1, events=6000, change_at=3000, seed=2)
    alerts = feed(Pipeline(cfg), recs)
    (alert,) = [a for a in alerts if a["kind"] == "performance"]
    assert alert["monitor"] == "threshold:accuracy:below"
    assert alert["severity"] == "critical"
    assert alert["value"] < 0.8 and alert["threshold"] == 0.8
    assert alert["window"]["start"] < alert["window"]["end"]


def test_warmup_holds_pages_for_a_new_version():
    cfg = load_config(text="[alerts]\nwarmup_predictions = 100000", env={})
    recs = records("abrupt", models=1, events=6000, change_at=3000, seed=3)
    pipe = Pipeline(cfg)
    assert feed(pipe, recs) == []
    (status,) = pipe.status()
    assert status["suppressed_alerts"] >= 1


def test_every_monitor_can_be_switched_off():
    text = "\n".join(
        f"[monitors.{m}]\nenabled = false"
        for m in ("concept_drift", "prediction_drift", "data_drift", "label_coverage")
    )
    cfg = load_config(text=text, env={})
    recs = records("covid", models=2, events=6000, change_at=3000, seed=1)
    assert feed(Pipeline(cfg), recs) == []


def test_new_version_gets_its_own_state():
    cfg = load_config(env={})
    ms = MonitorSet(cfg)
    ms.handle(PredictionSeen(Prediction("a", "m", True, 1.0, model_version="v1")))
    ms.handle(PredictionSeen(Prediction("b", "m", True, 2.0, model_version="v2")))
    assert sorted(ms.monitors) == [("m", "v1"), ("m", "v2")]
    assert [s["predictions"] for s in ms.status()] == [1, 1]


def test_status_counts_everything_a_user_reads_on_models():
    cfg = load_config(env={})
    mon = ModelMonitor("m", "v", cfg.model("m"), 60)
    p = Prediction("a", "m", 1, 1.0, model_version="v", score=0.9)
    mon.handle(PredictionSeen(p))
    mon.handle(Joined(p, Outcome("a", 0, 2.0)))
    q = Prediction("b", "m", 0, 3.0, model_version="v", score=0.1)
    mon.handle(PredictionSeen(q))
    mon.handle(Expired(q, 63.0))
    st = mon.status()
    assert (st["predictions"], st["joined"], st["expired"], st["outcomes"]) == (2, 1, 1, 1)
    assert st["metrics"]["accuracy"] == 0.0
    assert st["mean_outcome_delay"] == 1.0
    assert st["last_event_time"] == 63.0


def test_regression_outcome_that_is_not_a_number_is_counted_not_scored():
    cfg = load_config(env={})
    mon = ModelMonitor("m", "v", cfg.model("m"), 60)
    p = Prediction("a", "m", 2.5, 1.0, model_version="v")
    mon.handle(PredictionSeen(p))
    mon.handle(Joined(p, Outcome("a", "n/a", 2.0)))
    assert mon.status()["unscorable"] == 1
    assert mon.status()["metrics"].get("n", 0) == 0


@pytest.mark.parametrize(
    ("pred", "task"),
    [
        (Prediction("r", "m", 1, 0.0), "binary"),
        (Prediction("r", "m", 3, 0.0), "multiclass"),
        (Prediction("r", "m", 2.5, 0.0), "regression"),
        (Prediction("r", "m", "a", 0.0, probabilities={"a": 0.7, "b": 0.3}), "multiclass"),
        (Prediction("r", "m", 2.5, 0.0, task="multiclass"), "multiclass"),
    ],
)
def test_task_inference(pred, task):
    assert infer_task(pred) == task

"""Replay end to end: the alerts a user would see for each kind of model trouble."""

import json
import random
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from driftline.core.config import load_config
from driftline.core.replay import replay
from driftline.scenarios import generate, write_jsonl

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
ALERT_SCHEMA = json.loads((SCHEMAS / "alert.v1.json").read_text())
CFG = load_config(env={})


def run_scenario(tmp_path, scenario, name="in.jsonl", config=CFG, **kw):
    path = tmp_path / name
    write_jsonl(path, generate(scenario, **kw))
    return replay([path], config)


def firing(result, kind=None):
    return [
        a for a in result.alerts if a["status"] == "firing" and (kind is None or a["kind"] == kind)
    ]


def test_abrupt_accuracy_drop_pages_soon_after_the_change(tmp_path):
    r = run_scenario(tmp_path, "abrupt", models=1, events=6000, change_at=3000, seed=3)
    (alert,) = firing(r, "concept_drift")
    jsonschema.validate(alert, ALERT_SCHEMA)
    change_time = 1_700_000_000.0 + 3000 / 10.0
    assert change_time < alert["event_time"] < change_time + 120  # ~1000 outcomes at 10/s
    assert alert["value"] > alert["baseline"]
    assert "error rate rose from" in alert["summary"]


def test_gradual_drop_pages(tmp_path):
    r = run_scenario(tmp_path, "gradual", models=2, events=8000, change_at=4000, seed=5)
    models = {a["model_id"] for a in firing(r, "concept_drift")}
    assert len(models) == 2


def test_mae_increase_pages_for_regression(tmp_path):
    r = run_scenario(tmp_path, "regression_mae", models=1, events=6000, change_at=3000, seed=1)
    (alert,) = firing(r, "concept_drift")
    assert "mean absolute error rose" in alert["summary"]
    assert r.models[0]["task"] == "regression"


def test_score_shift_pages_without_any_outcome(tmp_path):
    r = run_scenario(tmp_path, "score_shift", models=1, events=8000, change_at=4000, seed=2)
    assert r.models[0]["joined"] == 0
    kinds = {a["kind"] for a in firing(r)}
    assert "prediction_drift" in kinds
    assert "concept_drift" not in kinds


def test_stable_models_stay_silent(tmp_path):
    r = run_scenario(tmp_path, "stable", models=4, events=10000, seed=7)
    assert r.alerts == []
    assert sum(m["joined"] for m in r.models) > 39000


def test_improving_model_never_pages(tmp_path):
    r = run_scenario(tmp_path, "improving", models=3, events=8000, change_at=4000, seed=4)
    assert firing(r, "concept_drift") == []
    assert any(m["concept_drift"]["improvements"] >= 1 for m in r.models)


def test_recurring_drift_fires_then_resolves(tmp_path):
    r = run_scenario(tmp_path, "recurring", models=1, events=9000, change_at=3000, seed=1)
    statuses = [a["status"] for a in r.alerts if a["kind"] == "concept_drift"]
    assert statuses[:2] == ["firing", "resolved"]


def test_covid_example_pages_only_for_the_shifted_model():
    example = Path(__file__).resolve().parents[3] / "examples" / "covid.jsonl.gz"
    r = replay([example], CFG)
    assert {a["model_id"] for a in r.alerts} == {"pricing"}
    assert "concept_drift" in {a["kind"] for a in r.alerts}
    for a in r.alerts:
        jsonschema.validate(a, ALERT_SCHEMA)


def test_missing_labels_raise_a_label_coverage_alert(tmp_path):
    cfg = load_config(text="label_ttl = '10m'", env={})
    r = run_scenario(
        tmp_path, "stable", models=1, events=6000, missing_labels=0.7, seed=1, config=cfg
    )
    (alert,) = firing(r, "label_coverage")
    assert alert["value"] < 0.5
    assert r.models[0]["expired"] > 3000


def test_malformed_lines_are_reported_and_the_rest_processed(tmp_path):
    path = tmp_path / "mixed.jsonl"
    good = list(generate("stable", models=1, events=50, seed=1))
    lines = [orjson.dumps(r) for r in good]
    lines[3:3] = [
        b"{not json",
        b'{"prediction": 1}',
        b"[1,2]",
        b'{"request_id":"x","outcome":1,"prediction":2}',
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    r = replay([path], CFG)
    assert r.error_count == 4
    assert [e.line for e in r.errors] == [4, 5, 6, 7]
    assert "not valid JSON" in r.errors[0].reason
    assert r.records == len(good)
    assert r.models[0]["predictions"] == 50


def test_duplicates_count_once(tmp_path):
    r = run_scenario(tmp_path, "stable", models=1, events=2000, duplicates=0.05, seed=2)
    (m,) = r.models
    assert m["predictions"] == 2000
    assert m["duplicates"] > 100
    assert m["joined"] + m["pending"] + m["expired"] == 2000


def test_files_merge_in_event_time_order(tmp_path):
    records = list(generate("abrupt", models=1, events=5000, change_at=2500, seed=3))
    whole = tmp_path / "whole.jsonl"
    write_jsonl(whole, records)
    preds, outs = tmp_path / "p.jsonl.gz", tmp_path / "o.jsonl"
    write_jsonl(preds, [r for r in records if "prediction" in r])
    write_jsonl(outs, [r for r in records if "outcome" in r])
    a = replay([whole], CFG)
    b = replay([outs, preds], CFG)
    assert a.alerts == b.alerts
    assert a.models == b.models


@settings(
    max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.integers(0, 2**32), st.floats(0, 0.2))
def test_any_order_and_duplication_of_lines_gives_the_same_result(
    tmp_path_factory, seed, dup_share
):
    """Replay orders by event time: file order and retries change nothing but duplicate counts."""
    rnd = random.Random(seed)
    tmp = tmp_path_factory.mktemp("perm")
    records = list(generate("abrupt", models=2, events=2500, change_at=1200, seed=9))
    base = replay([_write(tmp / "a.jsonl", records)], CFG)
    shuffled = records + [r for r in records if rnd.random() < dup_share]
    rnd.shuffle(shuffled)
    other = replay([_write(tmp / "b.jsonl", shuffled)], CFG)
    assert [(a["dedup_key"], a["status"]) for a in other.alerts] == [
        (a["dedup_key"], a["status"]) for a in base.alerts
    ]
    for m1, m2 in zip(base.models, other.models, strict=True):
        for k in ("predictions", "joined", "expired", "late", "pending", "metrics"):
            assert m1[k] == m2[k], k
        assert m2["duplicates"] >= m1["duplicates"]


def _write(path, records):
    write_jsonl(path, records)
    return path


def test_replay_is_deterministic_to_the_byte(tmp_path):
    path = tmp_path / "x.jsonl"
    write_jsonl(path, generate("covid", models=3, events=4000, change_at=2000, seed=1))
    one = [orjson.dumps(a) for a in replay([path], CFG).alerts]
    two = [orjson.dumps(a) for a in replay([path], CFG).alerts]
    assert one and one == two


@pytest.mark.parametrize("detector", ["DDM", "PageHinkley", "HDDM_W"])
def test_detector_is_selectable_by_config(tmp_path, detector):
    cfg = load_config(text=f"[monitors.concept_drift]\ndetector = '{detector}'", env={})
    r = run_scenario(tmp_path, "abrupt", models=1, events=6000, change_at=3000, seed=3, config=cfg)
    (alert,) = firing(r, "concept_drift")
    assert alert["evidence"]["detector"] == detector


@pytest.mark.parametrize("jobs", [2, 3])
def test_several_processes_give_exactly_the_single_process_result(tmp_path, jobs):
    # Several models drifting at different times, malformed lines, missing
    # labels: the merged alerts must be the single process's, in its order.
    path = tmp_path / "x.jsonl"
    records = generate("covid", models=5, events=4000, change_at=1500, seed=2, missing_labels=0.6)
    write_jsonl(path, records)
    with path.open("a") as fh:
        fh.write('{"request_id": "bad"\n')
    seen_alerts: list[bytes] = []
    errors: list[str] = []
    cfg = load_config(text="label_ttl = '10m'", env={})  # labels missing: coverage pages
    one = replay([path], cfg, jobs=1)
    many = replay(
        [path],
        cfg,
        jobs=jobs,
        on_alert=lambda a: seen_alerts.append(orjson.dumps(a)),
        on_error=lambda e: errors.append(str(e)),
    )
    expected = [orjson.dumps(a) for a in one.alerts]
    assert len({a["model_id"] for a in one.alerts}) >= 2, "alerts from several models"
    assert [orjson.dumps(a) for a in many.alerts] == expected
    assert seen_alerts == expected
    assert orjson.dumps(many.models) == orjson.dumps(one.models)
    assert (many.records, many.error_count, many.orphan_outcomes) == (
        one.records,
        one.error_count,
        one.orphan_outcomes,
    )
    assert len(errors) == 1  # reported once, not once per process


def test_a_failing_replay_process_is_an_error_not_a_silent_loss(tmp_path, monkeypatch):
    from driftline.core import replay as replay_module

    path = tmp_path / "x.jsonl"
    write_jsonl(path, generate("stable", models=2, events=500, seed=1))
    real_run = replay_module.run

    def run_failing_in_the_child(records, config, *args, shard=None, **kw):
        if shard is not None and shard[0] != 0:
            raise MemoryError("simulated")
        return real_run(records, config, *args, shard=shard, **kw)

    monkeypatch.setattr(replay_module, "run", run_failing_in_the_child)
    with pytest.raises(RuntimeError, match="MemoryError: simulated"):
        replay([path], CFG, jobs=2)

"""The scenario generator: wire format, ordering, determinism and the drift it promises."""

from __future__ import annotations

import gzip
import itertools
import json
from collections import defaultdict
from functools import cache
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from river.datasets import synth

from driftline import scenarios
from driftline.scenarios import SCENARIOS, describe, generate, write_jsonl

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
EVENTS = 4_000
CHANGE = 2_000


@cache
def traffic(scenario: str, **kwargs: object) -> tuple[dict, ...]:
    """Records of one scenario, generated once per test session."""
    kwargs = {"events": EVENTS, "change_at": CHANGE, **kwargs}
    return tuple(generate(scenario, **kwargs))


def index_of(request_id: str) -> int:
    return int(request_id.rsplit("-", 1)[1])


def losses(records: tuple[dict, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per model: (prediction index, loss) of every joined pair.

    The loss is the 0/1 error for classification, the absolute error for
    regression, as a monitor would compute it.
    """
    predictions = {}
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in records:
        if "prediction" in r:
            predictions[r["request_id"]] = r
            continue
        p = predictions[r["request_id"]]
        if p.get("task") == "regression":
            loss = abs(p["prediction"] - r["outcome"])
        else:
            loss = float(p["prediction"] != r["outcome"])
        out[p["model_id"]].append((index_of(r["request_id"]), loss))
    return {m: (np.array([i for i, _ in v]), np.array([x for _, x in v])) for m, v in out.items()}


def accuracy(records: tuple[dict, ...], model: str, lo: int, hi: int) -> float:
    index, loss = losses(records)[model]
    return 1.0 - float(loss[(index >= lo) & (index < hi)].mean())


def mae(records: tuple[dict, ...], model: str, lo: int, hi: int) -> float:
    index, loss = losses(records)[model]
    return float(loss[(index >= lo) & (index < hi)].mean())


# ---------------------------------------------------------------- wire format


def test_every_scenario_is_described():
    for name, text in SCENARIOS.items():
        assert text
        info = describe(name, events=EVENTS, change_at=CHANGE)
        assert info.scenario == name and len(info.models) == 4
        assert len({m.model_id for m in info.models}) == 4


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kwargs = {"events": 600, "models": 3, "missing_labels": 0.1, "duplicates": 0.05}
    a, b, c = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz", tmp_path / "c.jsonl.gz"
    write_jsonl(a, generate("covid", seed=7, **kwargs))
    write_jsonl(b, generate("covid", seed=7, **kwargs))
    write_jsonl(c, generate("covid", seed=8, **kwargs))
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()
    plain = tmp_path / "a.jsonl"
    n = write_jsonl(plain, generate("covid", seed=7, **kwargs))
    assert gzip.decompress(a.read_bytes()) == plain.read_bytes()
    assert n == len(plain.read_bytes().splitlines())
    assert [orjson.loads(line) for line in plain.read_bytes().splitlines()] == list(
        generate("covid", seed=7, **kwargs)
    )


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_event_time_order_and_join_integrity(scenario):
    records = traffic(scenario)
    times = [r["timestamp"] for r in records]
    assert times == sorted(times)
    predicted: dict[str, float] = {}
    outcomes = 0
    for r in records:
        if "prediction" in r:
            assert r["request_id"] not in predicted, "a request id is predicted once"
            predicted[r["request_id"]] = r["timestamp"]
        else:
            outcomes += 1
            assert r["timestamp"] > predicted[r["request_id"]], r
    assert len(predicted) == 4 * EVENTS
    assert outcomes == (0 if scenario == "score_shift" else 4 * EVENTS)


def test_records_have_the_documented_fields():
    records = traffic("covid")
    first = {}
    for r in records:
        if "prediction" in r:
            first.setdefault(r["model_id"], r)
    assert set(first) == {"pricing", "fraud", "churn", "ltv"}
    pricing = first["pricing"]
    assert pricing["request_id"] == "pricing-00000000"
    assert pricing["model_version"] == "v3"
    assert 0.0 <= pricing["score"] <= 1.0
    assert pricing["prediction"] == int(pricing["score"] >= 0.5)
    assert {"salary", "age", "loan"} <= set(pricing["features"])
    assert isinstance(pricing["features"]["age"], int)
    assert set(pricing["segments"]) == {"region", "channel"}
    ltv = first["ltv"]
    assert ltv["task"] == "regression" and "score" not in ltv
    assert isinstance(ltv["prediction"], float)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_records_validate_against_the_schemas(scenario):
    jsonschema = pytest.importorskip("jsonschema")
    paths = SCHEMAS / "prediction.v1.json", SCHEMAS / "outcome.v1.json"
    if not all(p.exists() for p in paths):
        pytest.skip("schemas/*.v1.json not written yet")
    prediction, outcome = (
        jsonschema.Draft202012Validator(json.loads(p.read_text())) for p in paths
    )
    records = traffic(scenario)
    # Every model's first records and a sample of the rest: validation is slow.
    for r in itertools.chain(records[:200], records[::97]):
        validator = prediction if "prediction" in r else outcome
        validator.validate(orjson.loads(orjson.dumps(r)))


def test_missing_labels_fraction_is_respected():
    records = traffic("stable", missing_labels=0.3)
    n_pred = sum("prediction" in r for r in records)
    n_out = len(records) - n_pred
    assert 1.0 - n_out / n_pred == pytest.approx(0.3, abs=0.02)


def test_duplicates_follow_their_original():
    records = traffic("stable", duplicates=0.1)
    repeats = [b for a, b in itertools.pairwise(records) if a == b]
    assert len(repeats) / len(records) == pytest.approx(0.1 / 1.1, abs=0.01)
    assert all(a is not b for a, b in itertools.pairwise(records))


def test_fixed_and_custom_label_delays():
    records = list(generate("stable", models=1, events=300, label_delay=("fixed", 42.0)))
    sent = {r["request_id"]: r["timestamp"] for r in records if "prediction" in r}
    delays = {round(r["timestamp"] - sent[r["request_id"]], 3) for r in records if "outcome" in r}
    assert delays == {42.0}

    def five_seconds(rng: np.random.Generator, n: int) -> np.ndarray:
        return np.full(n, 5.0)

    records = list(generate("stable", models=1, events=300, label_delay=five_seconds))
    sent = {r["request_id"]: r["timestamp"] for r in records if "prediction" in r}
    assert {
        round(r["timestamp"] - sent[r["request_id"]], 3) for r in records if "outcome" in r
    } == {5.0}
    for bad in (("gamma", 1.0), ("uniform", 1.0), ("fixed", -1.0), "soon"):
        with pytest.raises(ValueError, match="label_delay"):
            generate("stable", label_delay=bad)


def test_feature_padding():
    records = list(generate("stable", models=2, events=50, n_features=40))
    for r in records:
        if "prediction" in r:
            assert len(r["features"]) == 40 and "feat_000" in r["features"]
    with pytest.raises(ValueError, match="n_features"):
        generate("stable", n_features=3)


def test_bad_arguments_say_what_is_wrong():
    with pytest.raises(ValueError, match=r"unknown scenario 'nope'.*stable"):
        generate("nope")
    with pytest.raises(ValueError, match="change_at"):
        generate("abrupt", events=100, change_at=100)
    with pytest.raises(ValueError, match="recurring needs change_at"):
        generate("recurring", events=2)
    with pytest.raises(ValueError, match="missing_labels"):
        generate("stable", missing_labels=1.5)
    with pytest.raises(ValueError, match="stream"):
        describe("abrupt", stream="led")
    with pytest.raises(TypeError, match="rate_limit"):
        describe("abrupt", rate_limit=3)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    scenario=st.sampled_from(list(SCENARIOS)),
    seed=st.integers(0, 3),
    models=st.integers(1, 3),
    events=st.integers(3, 120),
    missing=st.floats(0.0, 1.0),
    duplicates=st.floats(0.0, 0.5),
    delay=st.floats(0.0, 30.0),
)
def test_ordering_and_joins_hold_for_any_arguments(
    scenario, seed, models, events, missing, duplicates, delay
):
    records = list(
        generate(
            scenario,
            seed=seed,
            models=models,
            events=events,
            missing_labels=missing,
            duplicates=duplicates,
            label_delay=("exponential", delay),
        )
    )
    times = [r["timestamp"] for r in records]
    assert times == sorted(times)
    sent: dict[str, float] = {}
    for r in records:
        if "prediction" in r:
            sent.setdefault(r["request_id"], r["timestamp"])
        else:
            assert r["timestamp"] > sent[r["request_id"]]
    assert len(sent) == models * events


# ---------------------------------------------------------------- ground truth


def test_truth_matches_the_traffic():
    info = describe("covid", events=EVENTS, change_at=CHANGE)
    (pricing,) = info.drifting
    assert pricing.model_id == "pricing" and pricing.kind == "abrupt" and pricing.degrades
    assert pricing.change_index == CHANGE and pricing.feature in pricing_features()
    sent = {r["request_id"]: r["timestamp"] for r in traffic("covid") if "prediction" in r}
    assert pricing.change_time == sent[f"pricing-{CHANGE:08d}"]
    assert info.to_dict()["models"][0]["model_id"] == "pricing"
    with pytest.raises(KeyError, match="nope"):
        info.model("nope")


def pricing_features() -> set[str]:
    return set(scenarios._FAMILIES["agrawal"].names)


def test_recurring_truth_has_an_end():
    info = describe("recurring", events=EVENTS, change_at=CHANGE)
    for m in info.models:
        assert m.end_index == CHANGE + (EVENTS - CHANGE) // 2
        assert m.end_time is not None and m.change_time is not None
        assert m.end_time > m.change_time


# ---------------------------------------------------------------- the drift itself


def test_stable_models_hold_their_accuracy():
    for m in describe("stable").models:
        before = accuracy(traffic("stable"), m.model_id, 0, CHANGE)
        after = accuracy(traffic("stable"), m.model_id, CHANGE, EVENTS)
        assert 0.85 <= before <= 0.97, (m.model_id, before)
        assert abs(after - before) < 0.04, (m.model_id, before, after)


def test_abrupt_drift_drops_accuracy_at_the_change():
    records = traffic("abrupt")
    for m in describe("abrupt").models:
        before = accuracy(records, m.model_id, 0, CHANGE)
        after = accuracy(records, m.model_id, CHANGE + 5, EVENTS)
        assert before >= 0.8, (m.model_id, before)
        assert after <= before - 0.1, (m.model_id, before, after)


def test_gradual_drift_is_spread_out():
    records = traffic("gradual")
    w = describe("gradual", events=EVENTS, change_at=CHANGE).models[0].width
    for m in describe("gradual").models:
        early = accuracy(records, m.model_id, 0, CHANGE - w)
        middle = accuracy(records, m.model_id, CHANGE - w // 4, CHANGE + w // 4)
        late = accuracy(records, m.model_id, CHANGE + w, EVENTS)
        assert early > middle > late, (m.model_id, early, middle, late)


def test_recurring_drift_goes_away_again():
    records = traffic("recurring")
    end = CHANGE + (EVENTS - CHANGE) // 2
    for m in describe("recurring").models:
        before = accuracy(records, m.model_id, 0, CHANGE)
        during = accuracy(records, m.model_id, CHANGE + 5, end)
        after = accuracy(records, m.model_id, end + 5, EVENTS)
        assert during <= before - 0.1 and during <= after - 0.1, (m.model_id, before, during)
        assert abs(after - before) < 0.05, (m.model_id, before, after)


def test_covid_hits_pricing_only():
    records = traffic("covid")
    before = accuracy(records, "pricing", 0, CHANGE)
    after = accuracy(records, "pricing", CHANGE + 5, EVENTS)
    assert before >= 0.8 and after <= before - 0.2, (before, after)
    for model in ("fraud", "churn"):
        assert (
            abs(accuracy(records, model, 0, CHANGE) - accuracy(records, model, CHANGE, EVENTS))
            < 0.04
        )
    assert mae(records, "ltv", CHANGE, EVENTS) < 1.15 * mae(records, "ltv", 0, CHANGE)
    # The pandemic also moved pricing's most important input: label-free monitors can see it.
    feature = describe("covid").model("pricing").feature
    values = defaultdict(list)
    for r in records:
        if r.get("model_id") == "pricing":
            values[index_of(r["request_id"]) >= CHANGE].append(r["features"][feature])
    assert abs(np.mean(values[True]) - np.mean(values[False])) > 0.5 * np.std(values[False])


def test_improving_raises_accuracy_and_pages_no_one():
    records = traffic("improving")
    for m in describe("improving").models:
        assert m.kind == "improvement" and not m.degrades and m.alert_kinds == ()
        before = accuracy(records, m.model_id, 0, CHANGE)
        after = accuracy(records, m.model_id, CHANGE, EVENTS)
        assert after >= before + 0.1, (m.model_id, before, after)


def test_regression_mae_rises():
    records = traffic("regression_mae")
    for m in describe("regression_mae").models:
        assert m.task == "regression" and m.stream == "friedman"
        before = mae(records, m.model_id, 0, CHANGE)
        after = mae(records, m.model_id, CHANGE, EVENTS)
        assert after >= 1.4 * before, (m.model_id, before, after)


def test_score_shift_moves_scores_without_any_outcome():
    records = traffic("score_shift")
    assert not any("outcome" in r for r in records)
    assert not describe("score_shift").has_outcomes
    for m in describe("score_shift").models:
        scores = defaultdict(list)
        for r in records:
            if r["model_id"] == m.model_id:
                scores[index_of(r["request_id"]) >= CHANGE].append(r["score"])
        assert np.mean(scores[True]) - np.mean(scores[False]) > 0.1, m.model_id


@pytest.mark.parametrize("mode", ["null", "constant"])
def test_feature_break(mode):
    records = traffic("feature_break", feature_break_mode=mode)
    broken = None if mode == "null" else 0.0
    for m in describe("feature_break").models:
        assert m.feature is not None
        intact = []
        for r in records:
            if r.get("model_id") == m.model_id:
                value = r["features"][m.feature]
                if index_of(r["request_id"]) >= CHANGE:
                    assert value == broken and (value is None) == (broken is None)
                else:
                    assert value is not None
                    intact.append(value)
        # Agrawal clamps perturbed loans at 0, so a few zeros are natural.
        assert np.mean(np.array(intact) == 0.0) < 0.05, "0 is the break, not the norm"
        before = accuracy(records, m.model_id, 0, CHANGE)
        after = accuracy(records, m.model_id, CHANGE, EVENTS)
        assert after <= before - 0.1, (m.model_id, before, after)


@pytest.mark.parametrize("stream", scenarios.STREAMS)
def test_every_stream_family_drifts(stream):
    records = traffic("abrupt", models=2, stream=stream)
    for m in describe("abrupt", models=2, stream=stream).models:
        assert m.stream == stream
        before = accuracy(records, m.model_id, 0, CHANGE)
        after = accuracy(records, m.model_id, CHANGE + 5, EVENTS)
        assert before >= 0.8 and after <= before - 0.1, (m.model_id, before, after)


# ---------------------------------------------------------------- fidelity to river


def test_frozen_model_scores_like_river():
    for family, concept in (("agrawal", 6), ("hyperplane", 0), ("sea", 2), ("friedman", 0)):
        model = scenarios._train(family, concept, 11, 2_000)
        fam = scenarios._FAMILIES[family]
        xs = [
            scenarios._rounded(fam, x)
            for x, _ in itertools.islice(iter(fam.make(concept, 99)), 300)
        ]
        X = np.array([list(x.values()) for x in xs], dtype=float)
        if model.task == "regression":
            expected = [model.pipeline.predict_one(x) for x in xs]
        else:
            expected = [model.pipeline.predict_proba_one(x)[True] for x in xs]
        np.testing.assert_allclose(model.score(X), expected, rtol=1e-9, atol=1e-12)


def test_fast_agrawal_is_rivers_agrawal():
    for fn in range(10):
        for kwargs in ({}, {"perturbation": 0.1}, {"balance_classes": True, "perturbation": 0.2}):
            river_samples = itertools.islice(synth.Agrawal(fn, seed=fn, **kwargs), 300)
            ours = itertools.islice(scenarios._FastAgrawal(fn, seed=fn, **kwargs), 300)
            assert list(ours) == list(river_samples), (fn, kwargs)


def test_safe_concept_drift_stream_is_rivers_where_river_works():
    def streams(cls: type) -> list:
        stream = cls(
            stream=synth.SEA(variant=0, seed=1),
            drift_stream=synth.SEA(variant=3, seed=2),
            position=150,
            width=5,
            seed=3,
        )
        return list(itertools.islice(stream, 400))

    assert streams(scenarios._SafeConceptDriftStream) == streams(synth.ConceptDriftStream)
    # ... and keeps working where river overflows (width 1, position far away).
    far = scenarios._SafeConceptDriftStream(
        stream=synth.SEA(seed=1), drift_stream=synth.SEA(seed=2), position=10_000, width=1
    )
    assert len(list(itertools.islice(far, 20))) == 20

"""Bounds that keep hostile input from growing state or stalling the worker.

- :class:`MonitorSet` refuses new model versions past ``limits.max_models``
  and ``limits.max_versions_per_model``, counts them, and keeps refused
  predictions for the dead letter only when asked to;
- the codec refuses records stamped far ahead of their Kafka message
  (``limits.max_time_ahead``), and names a model only when it is well formed;
- :class:`DistributionTracker` bounds the columns a flood of invented
  feature names can create.
"""

from __future__ import annotations

import math
import time

import orjson
import pytest

from driftline.core.codec import decode_message, named_model
from driftline.core.config import ConfigError, DistributionDriftConfig, LimitsConfig, load_config
from driftline.core.distribution import DistributionTracker
from driftline.core.events import (
    Duplicate,
    Expired,
    Joined,
    Outcome,
    Prediction,
    PredictionSeen,
    Rejected,
)
from driftline.core.monitor import MonitorSet

NOW = 1_714_564_800.0


def monitors(text: str, **kwargs) -> MonitorSet:
    return MonitorSet(load_config(text=text, env={}), **kwargs)


def seen(model: str, version: str = "v1", rid: str | None = None) -> PredictionSeen:
    return PredictionSeen(Prediction(rid or f"r-{model}-{version}", model, 1, NOW, version))


# --------------------------------------------------------------------------- MonitorSet caps


def test_limits_have_safe_defaults_and_are_validated():
    limits = LimitsConfig()
    assert limits.max_models == 1_000 and limits.max_versions_per_model == 100
    assert limits.max_time_ahead == 3_600.0
    for bad in ("max_models = 0", "max_versions_per_model = 0", "max_time_ahead = 0"):
        with pytest.raises(ConfigError, match=bad.split(" ")[0]):
            load_config(text=f"[limits]\n{bad}", env={})


def test_new_models_past_the_cap_are_refused_and_counted():
    ms = monitors("[limits]\nmax_models = 3", keep_refused=True)
    for i in range(10):
        assert ms.handle(seen(f"m{i}")) == []
    assert sorted(ms.monitors) == [("m0", "v1"), ("m1", "v1"), ("m2", "v1")]
    assert ms.refused_predictions == ms.refused_events == 7
    assert [p.model_id for p, _ in ms.refused] == [f"m{i}" for i in range(3, 10)]
    reason = ms.refused[0][1]
    assert reason.startswith("model limit reached: 3 model versions are monitored")
    assert "limits.max_models = 3" in reason and 'name the model in a [models."m3"]' in reason


def test_every_event_of_a_refused_version_is_dropped_not_just_predictions():
    ms = monitors("[limits]\nmax_models = 1", keep_refused=True)
    ms.handle(seen("a"))
    p = Prediction("r-b", "b", 1, NOW, "v1")
    events = [
        PredictionSeen(p),
        Joined(p, Outcome("r-b", 1, NOW + 1)),
        Expired(p, NOW + 10),
        Duplicate("b", "v1", "prediction", NOW),
        Rejected("b", "v1", NOW),
    ]
    for ev in events:
        assert ms.handle(ev) == []
    assert list(ms.monitors) == [("a", "v1")]
    assert ms.refused_events == 5 and ms.refused_predictions == 1
    assert len(ms.refused) == 1  # only predictions go to the dead letter


def test_versions_per_model_are_capped_separately():
    ms = monitors("[limits]\nmax_versions_per_model = 2", keep_refused=True)
    for v in ("v1", "v2", "v3", "v4"):
        ms.handle(seen("m", v))
    ms.handle(seen("other", "v9"))
    assert sorted(ms.monitors) == [("m", "v1"), ("m", "v2"), ("other", "v9")]
    assert ms.versions == {"m": 2, "other": 1}
    assert [r.split(":")[0] for _, r in ms.refused] == ["version limit reached"] * 2
    assert "model m has 2 versions monitored" in ms.refused[0][1]


def test_models_named_in_the_configuration_are_never_refused_by_the_model_cap():
    ms = monitors('[limits]\nmax_models = 1\n[models."vip"]\ntask = "binary"')
    ms.handle(seen("flood-1"))
    ms.handle(seen("flood-2"))
    ms.handle(seen("vip"))
    assert sorted(ms.monitors) == [("flood-1", "v1"), ("vip", "v1")]
    assert ms.refused_predictions == 1
    assert ms.refused is None  # not asked to keep them: replay never drains a list


def test_existing_monitors_keep_working_once_the_cap_is_reached():
    ms = monitors("[limits]\nmax_models = 1")
    p = Prediction("r1", "a", 1, NOW, "v1", score=0.9)
    ms.handle(PredictionSeen(p))
    ms.handle(seen("b"))
    ms.handle(Joined(p, Outcome("r1", 1, NOW + 1)))
    status = {s["model_id"]: s for s in ms.status()}
    assert list(status) == ["a"] and status["a"]["joined"] == 1


def test_a_flood_of_100k_models_stays_bounded_and_fast():
    ms = monitors("[limits]\nmax_models = 100", keep_refused=True)
    started = time.perf_counter()
    for i in range(100_000):
        ms.handle(seen(f"m{i}", rid="r"))
        if ms.refused and len(ms.refused) >= 1_000:
            ms.refused.clear()  # what the worker does after every message
    assert len(ms.monitors) == 100 and ms.refused_predictions == 99_900
    assert time.perf_counter() - started < 10.0


# --------------------------------------------------------------------------- codec


def message(**fields) -> bytes:
    record = {"request_id": "r1", "model_id": "m", "prediction": 1, **fields}
    return orjson.dumps(record)


@pytest.mark.parametrize(
    ("timestamp", "refused"),
    [
        (NOW, False),
        (NOW + 3_599, False),
        (NOW + 3_601, True),
        ("9999-12-31T23:59:59Z", True),
        (99_999_999_999.5, True),
        (NOW - 10 * 365 * 86_400, False),  # the past is fine: replays, late data
    ],
)
def test_records_far_ahead_of_their_kafka_message_are_refused(timestamp, refused):
    for kind, raw in (
        ("prediction", message(timestamp=timestamp)),
        ("outcome", orjson.dumps({"request_id": "r", "outcome": 1, "timestamp": timestamp})),
        ("prediction", orjson.dumps([orjson.loads(message(timestamp=timestamp))] * 2)),
    ):
        _, errors = decode_message(raw, kind, LimitsConfig(), default_time=NOW)
        assert bool(errors) == refused
        if refused:
            assert all(e.field == "timestamp" for e in errors)
            assert "ahead of the message's Kafka timestamp" in errors[0].reason
            assert "limits.max_time_ahead (3600 s)" in errors[0].reason


def test_the_time_ahead_bound_needs_a_kafka_timestamp_and_is_configurable():
    far = message(timestamp="9999-12-31T23:59:59Z")
    for default_time in (None, 0.0, -0.001):  # -1 ms is Kafka's "no timestamp"
        assert not decode_message(far, "prediction", LimitsConfig(), default_time)[1]
    limits = LimitsConfig(max_time_ahead=math.inf)
    assert not decode_message(far, "prediction", limits, NOW)[1]
    (err,) = decode_message(message(timestamp=NOW + 11), "prediction",
                            LimitsConfig(max_time_ahead=10), NOW)[1]  # fmt: skip
    assert "is 11 s ahead" in err.reason


def test_a_batch_refuses_only_its_far_future_records():
    raw = orjson.dumps(
        [
            orjson.loads(message(request_id="a")),
            orjson.loads(message(request_id="b", timestamp=NOW + 86_400)),
            orjson.loads(message(request_id="c")),
        ]
    )
    records, errors = decode_message(raw, "prediction", LimitsConfig(), NOW)
    assert [r.request_id for r in records] == ["a", "c"]
    assert [e.index for e in errors] == [1]


@pytest.mark.parametrize(
    ("record", "expected"),
    [
        ({"model_id": "fraud"}, ("fraud", "unversioned")),
        ({"model_id": "fraud", "model_version": "2024-05"}, ("fraud", "2024-05")),
        ({"model_id": "fraud", "model_version": None}, ("fraud", "unversioned")),
        ({"model_id": "fraud\x00"}, None),
        ({"model_id": "m" * 129}, None),
        ({"model_id": "fraud", "model_version": "v1\nforged"}, None),
        ({"model_id": "fraud", "model_version": 7}, None),
        ({"model_id": 7}, None),
        ({}, None),
        ("fraud", None),
    ],
)
def test_named_model_only_names_well_formed_models(record, expected):
    assert named_model(record) == expected


# --------------------------------------------------------------------------- distribution


def flood_records(n: int, keys: int) -> list[dict[str, float]]:
    return [
        {f"k-{i}-{j}": float(j) for j in range(keys)} | {"real": float(i % 7)} for i in range(n)
    ]


def test_a_feature_name_flood_cannot_turn_every_key_into_a_column():
    cfg = DistributionDriftConfig(reference_size=500, window=200, every=100)
    tracker = DistributionTracker(cfg, max_columns=50)
    started = time.perf_counter()
    for t, record in enumerate(flood_records(1_500, 20)):
        tracker.update(record, float(t))
    assert time.perf_counter() - started < 5.0
    assert len(tracker.columns) == 50
    assert "real" in tracker.columns  # present in every record: kept over one-off keys
    assert len(tracker.new_columns) == 50


def test_below_the_bound_columns_are_discovered_as_before():
    cfg = DistributionDriftConfig(reference_size=100, window=100, every=50)
    tracker = DistributionTracker(cfg)
    for t in range(300):
        tracker.update({"a": float(t), "b": "x", **({"c": 1.0} if t >= 150 else {})}, float(t))
    assert tracker.columns == ("a", "b")
    assert tracker.new_columns == {"c"}

"""The worker's ``/metrics``: families built from the worker's state at scrape time.

No broker here: a :class:`~driftline.core.join.JoinBuffer` and a
:class:`~driftline.core.monitor.MonitorSet` are fed the way the agents feed
them, and each test reads the samples off a registry of its own.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.process_collector import ProcessCollector

from driftline.core.codec import decode_message
from driftline.core.config import Config, LimitsConfig, load_config
from driftline.core.events import Outcome, Prediction
from driftline.core.join import JoinBuffer
from driftline.core.monitor import OUTCOME_DELAY_BUCKETS, MonitorSet
from driftline.core.wire import WireError
from driftline.streaming.app import WorkerState
from driftline.streaming.deadletter import dead_letter, reason_code
from driftline.streaming.joinstore import ChangelogDict
from driftline.streaming.metrics import (
    INPUT_TIME_HEADER,
    MODEL_STATES,
    OVERFLOW,
    PROCESSING_LATENCY_BUCKETS,
    FaustCollector,
    Telemetry,
    WorkerCollector,
    input_time_headers,
)

REPO = Path(__file__).resolve().parents[2]
T0 = 1_700_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Worker:
    """A worker's state without the worker: records go through the join and the monitors."""

    def __init__(self, config: Config, clock: Clock | None = None) -> None:
        self.config = config
        self.clock = clock or Clock()
        store = ChangelogDict(SimpleNamespace(data={}))
        self.state = WorkerState(
            join=JoinBuffer(config.label_ttl, store=store),
            store=store,
            monitors=MonitorSet(config),
            telemetry=Telemetry(clock=self.clock),
        )
        self.registry = CollectorRegistry()
        self.registry.register(WorkerCollector(self.state, config.metrics))
        self.alerts: list[dict[str, Any]] = []

    def _handle(self, events: list[Any]) -> None:
        for ev in events:
            self.alerts.extend(self.state.monitors.handle(ev))
        models = {getattr(ev, "prediction", ev).model_id for ev in events}
        for model in models:  # one model-events message per model, as the join sends them
            self.state.telemetry.monitored((model or "").encode(), None, 1)

    def predict(self, rid: str, model: str, label: Any, t: float, **kw: Any) -> None:
        p = Prediction(rid, model, label, t, **kw)
        self._handle(self.state.join.add_prediction(p))

    def outcome(self, rid: str, label: Any, t: float) -> None:
        self._handle(self.state.join.add_outcome(Outcome(rid, label, t)))

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def samples(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        return {
            tuple(sorted(s.labels.items())): s.value
            for fam in self.registry.collect()
            for s in fam.samples
            if s.name == name
        }


def config(text: str = "") -> Config:
    return load_config(text=text, env={})


# -- counts -------------------------------------------------------------------


def test_counts_match_the_models_page():
    w = Worker(config('label_ttl = "1h"'))
    for i in range(10):
        w.predict(f"r{i}", "fraud", i % 2 == 0, T0 + i, model_version="v2", score=0.8)
    w.predict("r0", "fraud", True, T0 + 20, model_version="v2", score=0.8)  # duplicate
    for i in range(6):
        w.outcome(f"r{i}", True, T0 + 30 + i)
    w.outcome("r1", True, T0 + 40)  # duplicate outcome
    w.predict("clock", "other", 1.0, T0 + 3700)  # r6..r9 expire
    w.outcome("r7", True, T0 + 3800)  # late
    w.outcome("nobody", 1, T0 + 3800)

    (status,) = [m for m in w.state.monitors.status() if m["model_id"] == "fraud"]
    labels = {"model": "fraud", "version": "v2"}
    for name, key in [
        ("driftline_predictions_total", "predictions"),
        ("driftline_outcomes_total", "outcomes"),
        ("driftline_joined_total", "joined"),
        ("driftline_expired_total", "expired"),
        ("driftline_late_outcomes_total", "late"),
        ("driftline_duplicates_total", "duplicates"),
    ]:
        assert w.value(name, **labels) == status[key], name
    assert (status["predictions"], status["joined"], status["expired"]) == (10, 6, 4)
    assert (status["late"], status["duplicates"]) == (1, 2)
    assert w.value("driftline_predictions_total", model="other", version="unversioned") == 1
    # Counted once the outcome's prediction window has closed on it.
    assert w.value("driftline_orphan_outcomes_total") == 0
    w.predict("clock2", "other", 1.0, T0 + 3800 + 7300)
    assert w.value("driftline_orphan_outcomes_total") == 1


def test_join_memory_is_reported_by_kind():
    w = Worker(config('label_ttl = "1h"'))
    for i in range(5):
        w.predict(f"r{i}", "fraud", True, T0 + i)
    w.outcome("r0", True, T0 + 9)  # joined: a tombstone, and a second index item
    assert w.value("driftline_join_store_entries") == 5
    assert w.value("driftline_join_in_memory", kind="entries") == 5
    assert w.value("driftline_join_in_memory", kind="index") == 6


def test_dead_letters_by_topic_and_reason_code():
    w = Worker(config())
    limits = LimitsConfig()
    tel = w.state.telemetry
    for raw in (b"{not json", b'{"request_id": "x", "prediction": 1}', b"{oops"):
        _, errors = decode_message(raw, "prediction", limits)
        dl = dead_letter(value=raw, key=None, topic="preds", partition=0, offset=1, errors=errors)
        tel.dead_letter("preds", dl.code)
    dl = dead_letter(
        value=b"x", key=None, topic="ev", partition=0, offset=0, errors=[WireError("bad")]
    )
    tel.dead_letter("ev", dl.code)
    assert w.samples("driftline_dead_letters_total") == {
        (("reason", "invalid_json"), ("topic", "preds")): 2,
        (("reason", "missing_model_id"), ("topic", "preds")): 1,
        (("reason", "bad_model_event"), ("topic", "ev")): 1,
    }


def test_every_refusal_of_the_contract_corpus_has_a_reason_code():
    corpus = json.loads((REPO / "tests" / "data" / "contract_corpus.json").read_text())
    limits = LimitsConfig()
    codes = set()
    raws: list[tuple[str, bytes | None]] = [
        (c["kind"], json.dumps(c["record"]).encode()) for c in corpus if not c["valid"]
    ]
    raws += [
        ("outcome", None),
        ("outcome", b""),
        ("outcome", b"[]"),
        ("outcome", b"\xff\xfe"),
        ("outcome", b"[" + b"{}," * 10_000 + b"{}]"),
        ("outcome", b" " * (limits.max_message_bytes + 1)),
    ]
    for kind, raw in raws:
        _, errors = decode_message(raw, kind, limits, default_time=T0)  # type: ignore[call-overload]
        for err in errors:
            code = reason_code(err)
            assert code != "other", err
            assert re.fullmatch(r"[a-z0-9_]{1,40}", code)
            codes.add(code)
    assert {"invalid_json", "invalid_utf8", "tombstone", "empty_message", "empty_array"} <= codes
    assert {"too_many_records", "message_too_large", "invalid_score", "missing_request_id"} <= codes
    assert len(codes) < 40  # a bounded label


# -- model metrics, coverage, states and alerts -----------------------------------

ALERTING = """
label_ttl = "1h"
[alerts]
warmup_predictions = 20
resolve_after = 1
cooldown = 0
[monitors.label_coverage]
window = 50
[monitors.performance]
window = 50
thresholds = [{metric = "accuracy", below = 0.5, for_events = 50, severity = "critical"}]
"""


def test_model_metrics_are_the_rolling_window_and_since_start():
    w = Worker(config(ALERTING))
    for i in range(100):
        w.predict(f"r{i}", "acc", 1, T0 + i, score=0.9)
        w.outcome(f"r{i}", 1 if i < 50 else 0, T0 + i + 1)
    mon = w.state.monitors.get("acc", "unversioned")
    rolling, total = mon.rolling.get(), mon.metrics.get()
    assert rolling["accuracy"] == 0.0 and total["accuracy"] == 0.5
    for name in ("accuracy", "precision", "recall", "f1", "log_loss"):
        labels = {"model": "acc", "version": "unversioned", "metric": name}
        assert w.value("driftline_model_metric", **labels) == rolling[name]
        assert w.value("driftline_model_metric_since_start", **labels) == total[name]
    assert w.value("driftline_model_metric", model="acc", version="unversioned", metric="n") is None


def test_regression_metrics():
    w = Worker(config())
    for i in range(10):
        w.predict(f"r{i}", "ltv", float(i), T0 + i, task="regression")
        w.outcome(f"r{i}", float(i) + 2.0, T0 + i + 1)
    got = {dict(k)["metric"]: v for k, v in w.samples("driftline_model_metric").items()}
    assert got == {"mae": 2.0, "rmse": 2.0, "mean_error": -2.0}


def test_alert_firing_then_resolved_and_the_model_state():
    w = Worker(config(ALERTING))
    labels = {"model": "acc", "version": "unversioned"}

    def state() -> str:
        on = [s for s in MODEL_STATES if w.value("driftline_model_state", **labels, state=s) == 1]
        assert len(on) == 1 and all(
            w.value("driftline_model_state", **labels, state=s) == 0
            for s in MODEL_STATES
            if s not in on
        )
        return on[0]

    w.predict("r0", "acc", 1, T0, score=0.9)
    assert state() == "warming_up"
    assert w.samples("driftline_alerts_firing") == {}
    for i in range(1, 100):  # every prediction wrong: the threshold pages
        w.predict(f"r{i}", "acc", 1, T0 + i, score=0.9)
    for i in range(100):
        w.outcome(f"r{i}", 0, T0 + i + 1)
    assert [(a["status"], a["monitor"]) for a in w.alerts] == [
        ("firing", "threshold:accuracy:below")
    ]
    firing = {**labels, "monitor": "threshold:accuracy:below", "severity": "critical"}
    assert w.value("driftline_alerts_firing", **firing) == 1
    assert state() == "critical"
    for i in range(100, 200):  # right again: it resolves, and the series stays at 0
        w.predict(f"r{i}", "acc", 1, T0 + i, score=0.9)
        w.outcome(f"r{i}", 1, T0 + i + 1)
    assert [a["status"] for a in w.alerts] == ["firing", "resolved"]
    assert w.value("driftline_alerts_firing", **firing) == 0
    assert state() == "ok"
    assert w.value("driftline_label_coverage_ratio", **labels) == 1.0


def test_label_coverage_ratio_counts_expired_predictions():
    w = Worker(config(ALERTING))
    for i in range(40):
        w.predict(f"r{i}", "cov", 1, T0 + i)
    for i in range(10):
        w.outcome(f"r{i}", 1, T0 + i + 1)
    w.predict("clock", "other", 1, T0 + 4000)  # the other 30 expire
    assert w.value("driftline_label_coverage_ratio", model="cov", version="unversioned") == 0.25


def test_drift_detections_count_every_detection_whether_or_not_it_paged():
    text = """
    [alerts]
    warmup_predictions = 1000000
    [monitors.prediction_drift]
    reference_size = 200
    window = 200
    every = 100
    """
    w = Worker(config(text))
    for i in range(600):  # the score jumps after the reference
        score = 0.1 + 0.001 * (i % 100) if i < 300 else 0.8 + 0.001 * (i % 100)
        w.predict(f"r{i}", "shift", 1, T0 + i, score=score)
    mon = w.state.monitors.get("shift", "unversioned")
    assert mon.score_drift is not None and mon.score_drift.detections >= 1
    assert w.alerts == []  # still warming up: nothing paged
    labels = {"model": "shift", "version": "unversioned"}
    assert (
        w.value("driftline_drift_detections_total", **labels, monitor="prediction_drift")
        == mon.score_drift.detections
    )
    # Enabled monitors start at 0, so that increase() sees their first detection.
    assert w.value("driftline_drift_detections_total", **labels, monitor="data_drift") == 0
    assert w.value("driftline_drift_detections_total", **labels, monitor="concept_drift") == 0


def test_concept_drift_detections_are_the_detectors():
    w = Worker(config())
    for i in range(3000):  # right, then wrong half the time
        w.predict(f"r{i}", "cd", 1, T0 + i, score=0.9)
        w.outcome(f"r{i}", 1 if i < 1500 or i % 2 else 0, T0 + i + 1)
    mon = w.state.monitors.get("cd", "unversioned")
    assert mon.loss is not None and mon.loss.detections >= 1
    value = w.value(
        "driftline_drift_detections_total", model="cd", version="unversioned",
        monitor="concept_drift",
    )  # fmt: skip
    assert value == mon.loss.detections


# -- histograms -----------------------------------------------------------------


def test_outcome_delay_histogram_counts_joined_and_late_outcomes():
    w = Worker(config('label_ttl = "1d"'))
    delays = [0.5, 1.0, 3.0, 7200.0, 50_000.0]
    for i, d in enumerate(delays):
        w.predict(f"r{i}", "m", 1, T0)
        w.outcome(f"r{i}", 1, T0 + d)
    w.predict("early", "m", 1, T0 + 10)
    w.outcome("early", 1, T0 + 5)  # before its prediction: a delay of 0
    w.predict("late", "m", 1, T0 + 20)
    w.predict("clock", "m", 1, T0 + 90_000)  # "late" expires
    w.outcome("late", 1, T0 + 20 + 10 * 86_400)  # beyond the last bucket
    labels = {"model": "m", "version": "unversioned"}
    observed = [*delays, 0.0, 10 * 86_400.0]
    for bound in OUTCOME_DELAY_BUCKETS:
        got = w.value("driftline_outcome_delay_seconds_bucket", **labels, le=str(bound))
        assert got == sum(d <= bound for d in observed), bound
    assert w.value("driftline_outcome_delay_seconds_bucket", **labels, le="+Inf") == 7
    assert w.value("driftline_outcome_delay_seconds_count", **labels) == 7
    assert w.value("driftline_outcome_delay_seconds_sum", **labels) == pytest.approx(sum(observed))


def test_processing_latency_from_the_input_time_header():
    clock = Clock(T0)
    w = Worker(config(), clock)
    tel = w.state.telemetry

    class Msg:
        def __init__(self, ts: float) -> None:
            self.timestamp = ts

    class Ev:
        def __init__(self, ts: float) -> None:
            self.message = Msg(ts)

    headers = input_time_headers([Ev(T0 - 0.3), Ev(T0 - 2.0), Ev(T0 - 0.1)])
    assert headers == [(INPUT_TIME_HEADER, b"%d" % ((T0 - 2.0) * 1000))]
    assert input_time_headers([Ev(-0.001)]) is None
    tel.monitored(b"m", headers, 10)  # 10 events, 2 s after their oldest input
    tel.monitored(b"m", [(INPUT_TIME_HEADER, b"%d" % (T0 * 1000 - 20))], 1)
    tel.monitored(b"m", None, 5)  # from the expiry timer: no input message
    tel.monitored(b"m", [(INPUT_TIME_HEADER, b"junk")], 5)
    name = "driftline_processing_latency_seconds"
    assert w.value(f"{name}_count") == 11
    assert w.value(f"{name}_sum") == pytest.approx(20.02)
    assert w.value(f"{name}_bucket", le="0.025") == 1
    assert w.value(f"{name}_bucket", le="1.0") == 1
    assert w.value(f"{name}_bucket", le="2.5") == 11
    assert len(PROCESSING_LATENCY_BUCKETS) + 1 == len([s for s in w.samples(f"{name}_bucket")])


# -- wall clock --------------------------------------------------------------------


def test_last_event_age_is_wall_clock_since_the_models_last_batch():
    clock = Clock(T0)
    w = Worker(config(), clock)
    labels = {"model": "m", "version": "v1"}
    assert w.value("driftline_last_event_age_seconds", **labels) is None
    w.predict("r1", "m", 1, 5.0, model_version="v1")  # event time is irrelevant
    clock.now += 4
    assert w.value("driftline_last_event_age_seconds", **labels) == 4
    clock.now += 6
    assert w.value("driftline_last_event_age_seconds", **labels) == 10
    w.predict("r2", "m", 1, 6.0, model_version="v2")  # a new version: v1 goes quiet
    clock.now += 1
    assert w.value("driftline_last_event_age_seconds", **labels) == 11
    assert w.value("driftline_last_event_age_seconds", model="m", version="v2") == 1
    w.predict("r3", "m", 1, 7.0, model_version="v1")
    assert w.value("driftline_last_event_age_seconds", **labels) == 0


def test_last_seen_keeps_only_models_with_a_monitor():
    w = Worker(config())
    tel = w.state.telemetry
    tel.max_seen = 3
    w.predict("r1", "m", 1, 5.0)
    for i in range(10):  # model events of versions the core refused: no monitor
        tel.monitored(f"junk-{i}".encode(), None, 1)
    assert len(tel.last_seen) == 3
    w.value("driftline_last_event_age_seconds", model="m", version="unversioned")  # a scrape
    assert list(tel.last_seen) == [b"m"]


# -- cardinality ------------------------------------------------------------------


def test_series_beyond_the_caps_fold_into_overflow():
    text = "[metrics]\nmax_model_versions = 3\nmax_versions_per_model = 2"
    w = Worker(config(text))
    n = 0

    def traffic(model: str, version: str, k: int) -> None:
        nonlocal n
        for _ in range(k):
            w.predict(f"r{n}", model, 1, T0 + n, model_version=version, score=0.9)
            w.outcome(f"r{n}", 1, T0 + n + 1)
            n += 1

    traffic("a", "1", 1)
    traffic("a", "2", 2)
    traffic("b", "1", 3)
    w.value("driftline_predictions_total", model="a", version="1")  # a scrape
    traffic("c", "1", 4)  # every place taken
    traffic("d", "1", 5)
    traffic("a", "3", 6)  # a's newest takes the place of its oldest
    preds = w.samples("driftline_predictions_total")
    assert {dict(k)["model"] + "/" + dict(k)["version"]: v for k, v in preds.items()} == {
        f"a/{OVERFLOW}": 1,
        "a/2": 2,
        "b/1": 3,
        "a/3": 6,
        f"{OVERFLOW}/{OVERFLOW}": 4 + 5,
    }
    assert w.value("driftline_series_overflow_total", label="model") == 2
    assert w.value("driftline_series_overflow_total", label="version") == 1
    # Gauges of a single model have no meaning summed: none for folded series,
    # except the state (how many folded versions are in each) and the age.
    metric_models = {dict(k)["model"] for k in w.samples("driftline_model_metric")}
    assert metric_models == {"a", "b"}
    assert w.value("driftline_model_state", model=OVERFLOW, version=OVERFLOW, state="ok") == 0
    assert (
        w.value("driftline_model_state", model=OVERFLOW, version=OVERFLOW, state="warming_up") == 2
    )
    assert w.value("driftline_last_event_age_seconds", model=OVERFLOW, version=OVERFLOW) == 0
    assert w.value("driftline_outcome_delay_seconds_count", model=OVERFLOW, version=OVERFLOW) == 9


# -- exposition ---------------------------------------------------------------------


def _fake_faust_app() -> Any:
    from faust.sensors import Monitor
    from faust.types import TP

    class Consumer:
        def __init__(self) -> None:
            self._committed_offset = {TP("preds", 1): 40}

        def highwater(self, tp: Any) -> int:
            if tp == TP("preds", 2):
                raise AssertionError("not assigned")
            return {TP("preds", 0): 100, TP("preds", 1): 50, TP("events", 0): 7}[tp]

    class Assignor:
        def assigned_actives(self) -> set[Any]:
            return {TP("preds", 0), TP("preds", 1), TP("preds", 2), TP("events", 0)}

    class App:
        monitor = Monitor()
        consumer = Consumer()
        assignor = Assignor()

    mon = App.monitor
    mon.messages_received_by_topic.update({"preds": 150, "events": 3})
    mon.messages_sent_by_topic.update({"events": 3})
    mon.tp_end_offsets[TP("preds", 0)] = 90  # older than the consumer's
    mon.tp_committed_offsets[TP("preds", 0)] = 80
    mon.tp_read_offsets[TP("preds", 1)] = 44
    mon.tp_read_offsets[TP("events", 0)] = 6
    return App()


def test_faust_collector_reads_the_sensor_and_derives_lag():
    registry = CollectorRegistry()
    registry.register(FaustCollector(_fake_faust_app(), ["preds", "events"]))

    def lag(topic: str, partition: int) -> float | None:
        labels = {"topic": topic, "partition": str(partition)}
        return registry.get_sample_value("driftline_consumer_lag", labels)

    assert lag("preds", 0) == 100 - 80
    assert lag("preds", 1) == 50 - 40  # committed before this worker's first commit
    assert lag("preds", 2) is None  # no high-water mark known
    assert lag("events", 0) == 7 - (6 + 1)  # nothing committed yet: from the read offset
    got = registry.get_sample_value("driftline_faust_messages_received_total", {"topic": "preds"})
    assert got == 150


def _rich_registry() -> CollectorRegistry:
    w = Worker(config(ALERTING + "\n[metrics]\nmax_model_versions = 2"))
    for i in range(120):
        w.predict(f"a{i}", "acc", 1, T0 + i, score=0.9, model_version='v"1\\')
        w.outcome(f"a{i}", 0, T0 + i + 1)
        w.predict(f"r{i}", "ltv", 1.5 * i, T0 + i, task="regression")
        w.outcome(f"r{i}", 1.5 * i + 1, T0 + i + 30)
        w.predict(f"x{i}", "extra", "cat", T0 + i)
    w.state.telemetry.dead_letter("preds", "invalid_json")
    w.state.telemetry.monitored(b"acc", [(INPUT_TIME_HEADER, b"%d" % (T0 * 1000 - 300))], 3)
    assert w.alerts
    registry = w.registry
    registry.register(FaustCollector(_fake_faust_app(), ["preds", "events"]))
    ProcessCollector(registry=registry)
    return registry


def test_collectors_share_a_registry_without_clashing_names():
    registry = _rich_registry()  # register() refuses duplicate names (describe())
    names = [fam.name for fam in registry.collect()]
    assert len(names) == len(set(names))
    ours = [n for n in names if not n.startswith("process_")]
    assert all(n.startswith("driftline_") for n in ours)


def test_promtool_finds_no_problem_in_the_exposition(tmp_path):
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: install prometheus (scripts/test-deps)"
    body = generate_latest(_rich_registry())
    (tmp_path / "metrics.txt").write_bytes(body)
    proc = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == 0 and not proc.stdout and not proc.stderr, (
        proc.stdout.decode() + proc.stderr.decode()
    )
    assert b'version="v\\"1\\\\"' in body  # label values escaped


def test_docs_list_every_metric():
    docs = (REPO / "docs" / "metrics.md").read_text()
    registry = _rich_registry()
    for fam in registry.collect():
        if fam.name.startswith("driftline_"):
            name = fam.name + ("_total" if fam.type == "counter" else "")
            assert f"`{name}`" in docs, name

"""Everything driftline watches about one model version, and its alerts.

A :class:`ModelMonitor` owns the state of one (model, version): counts,
cumulative and rolling metrics, the direction-aware concept-drift watcher,
threshold rules, label-free drift trackers for the score and the features,
label coverage, and the alert policy that turns their findings into alert
messages. It consumes model events (see :mod:`driftline.core.events`) and
returns the alert messages they cause, so the live worker and ``replay``
share it unchanged.

:class:`MonitorSet` routes model events to the monitor of their version,
creating it on first sight.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from typing import Any

from driftline.core.alerts import AlertPolicy, Condition, Finding
from driftline.core.config import Config, ModelConfig, Threshold
from driftline.core.detectors import LossDriftMonitor
from driftline.core.distribution import DistributionTracker, DriftCheck
from driftline.core.events import (
    Duplicate,
    Expired,
    Joined,
    LateOutcome,
    ModelEvent,
    OrphanOutcome,
    Prediction,
    PredictionSeen,
    Rejected,
)
from driftline.core.metrics import RollingMean, make_metrics

_TICK = 50  # outcomes between two evaluations of threshold and coverage rules
_NONE: list[Any] = []  # shared "no alerts" result: callers never mutate it

Alert = dict[str, Any]

OUTCOME_DELAY_BUCKETS: tuple[float, ...] = (
    1.0, 5.0, 15.0, 30.0, 60.0, 300.0, 900.0, 1800.0,  # 1 s .. 30 min
    3600.0, 10800.0, 21600.0, 43200.0, 86400.0, 172800.0, 345600.0, 604800.0,  # 1 h .. 7 d
)  # fmt: skip
"""Upper bounds (seconds) of the outcome-delay buckets (``+Inf`` follows)."""


class OutcomeDelays:
    """Outcome delays (outcome minus prediction event time) counted per bucket.

    Counted here, in the core, one ``bisect`` per outcome, so the worker's
    ``/metrics`` can show a histogram without a per-record call into a
    metrics library. ``counts[i]`` holds delays of at most
    ``OUTCOME_DELAY_BUCKETS[i]`` (above the bound before), the last slot
    ``+Inf``. The sum of the joined outcomes' delays is the monitor's
    ``delay_sum``; ``late_sum`` adds the late outcomes'.
    """

    __slots__ = ("counts", "late_sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(OUTCOME_DELAY_BUCKETS) + 1)
        self.late_sum = 0.0

    def late(self, delay: float) -> None:
        """Count the delay of an outcome that came after its prediction expired."""
        delay = max(delay, 0.0)
        self.late_sum += delay
        self.counts[bisect_left(OUTCOME_DELAY_BUCKETS, delay)] += 1


def infer_task(p: Prediction) -> str:
    """Guess the task from the first prediction when neither config nor record says.

    >>> from driftline.core.events import Prediction
    >>> infer_task(Prediction("r", "m", 0.7, 0.0, score=None))
    'regression'
    >>> infer_task(Prediction("r", "m", True, 0.0)), infer_task(Prediction("r", "m", "cat", 0.0))
    ('binary', 'multiclass')
    """
    if p.task:
        return p.task
    if p.probabilities:
        return "multiclass"
    if p.score is not None or isinstance(p.prediction, bool):
        return "binary"
    if isinstance(p.prediction, int) and p.prediction in (0, 1):
        return "binary"
    if isinstance(p.prediction, float):
        return "regression"
    return "multiclass"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


class ModelMonitor:
    """Counts, metrics, detectors and alert lifecycle of one model version."""

    def __init__(self, model_id: str, model_version: str, cfg: ModelConfig, label_ttl: float):
        self.model_id = model_id
        self.model_version = model_version
        self.cfg = cfg
        self.label_ttl = label_ttl
        self.policy = AlertPolicy(model_id, model_version, cfg.alerts)
        self.task: str | None = cfg.task
        self.predictions = 0
        self.joined = 0
        self.expired = 0
        self.late = 0
        self.duplicates = 0
        self.dead_letters = 0  # malformed records naming this model (streaming decoder)
        self.unscorable = 0  # joined pairs whose labels cannot be compared
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.delay_sum = 0.0
        # One attribute for the delay histogram: at 30 instance attributes CPython
        # 3.11 stops sharing dict keys and every attribute read gets slower.
        self.delays = OutcomeDelays()
        m = cfg.monitors
        self.metrics: Any = None
        self.rolling: Any = None
        self.loss: LossDriftMonitor | None = None
        self.score_drift = (
            DistributionTracker(m.prediction_drift) if m.prediction_drift.enabled else None
        )
        self.feature_drift = DistributionTracker(m.data_drift) if m.data_drift.enabled else None
        self.coverage = RollingMean(m.label_coverage.window)
        # Event times of the events in each rolling window, for the alert's window.start.
        self.coverage_times: deque[float] = deque(maxlen=m.label_coverage.window)
        self.joined_times: deque[float] = deque(
            maxlen=max(m.performance.window, m.concept_drift.recent_window)
        )
        self.resolutions = 0
        self.breach_runs: dict[Threshold, int] = {}
        self.last_checks: dict[str, DriftCheck] = {}

    # -- lifecycle ---------------------------------------------------------

    def _start(self, p: Prediction) -> None:
        task = self.task or infer_task(p)
        self.task = task
        m = self.cfg.monitors
        self.metrics = make_metrics(task, None, self.cfg.positive_label)
        self.rolling = make_metrics(task, m.performance.window, self.cfg.positive_label)
        if m.concept_drift.enabled:
            self.loss = LossDriftMonitor(m.concept_drift, binary_loss=task != "regression")

    @property
    def outcomes(self) -> int:
        return self.joined + self.late

    def may_page(self) -> bool:
        return self.predictions >= self.cfg.alerts.warmup_predictions

    # -- events ------------------------------------------------------------

    def handle(self, ev: ModelEvent) -> list[Alert]:
        """Apply one model event; return the alert messages it causes."""
        t = type(ev)
        if t is PredictionSeen:
            return self._on_prediction(ev.prediction)  # type: ignore[union-attr]
        if t is Joined:
            return self._on_joined(ev)  # type: ignore[arg-type]
        if t is Expired:
            return self._on_expired(ev)  # type: ignore[arg-type]
        if t is Duplicate:
            self.duplicates += 1
        elif t is LateOutcome:
            self.late += 1
            self.delays.late(ev.delay)  # type: ignore[union-attr]
        elif t is Rejected:
            self.dead_letters += 1
        return []

    def _seen(self, t: float) -> None:
        if self.first_time is None:
            self.first_time = t
        if self.last_time is None or t > self.last_time:
            self.last_time = t

    def _on_prediction(self, p: Prediction) -> list[Alert]:
        if self.metrics is None:
            self._start(p)
        self.predictions += 1
        t = p.event_time
        if self.last_time is None or t > self.last_time:
            self._seen(t)
        out: list[Alert] = _NONE
        if self.score_drift is not None:
            if p.score is not None:
                check = self.score_drift.update({"score": p.score}, t)
            else:
                check = self.score_drift.update({"prediction": p.prediction}, t)
            if check is not None:
                out = self._drift_alert("prediction_drift", check, t)
        if self.feature_drift is not None:
            check = self.feature_drift.update(p.features, t)
            if check is not None:
                out = out + self._drift_alert("data_drift", check, t)
        return out

    def _on_joined(self, ev: Joined) -> list[Alert]:
        p, o = ev.prediction, ev.outcome
        if self.metrics is None:
            self._start(p)
        self.joined += 1
        pt, t = p.event_time, o.event_time
        if t > pt:
            self.delay_sum += t - pt
        else:
            t = pt
        self.delays.counts[bisect_left(OUTCOME_DELAY_BUCKETS, t - pt)] += 1
        if self.last_time is None or t > self.last_time:
            self._seen(t)
        self.joined_times.append(t)
        task = self.task
        if task == "binary":
            loss = self.metrics.update(o.outcome, p.prediction, p.score)
            self.rolling.push(o.outcome, p.prediction, p.score)
        elif task == "regression":
            if not _is_number(o.outcome) or not _is_number(p.prediction):
                self.unscorable += 1  # e.g. a string outcome for a regression model
                return _NONE
            loss = self.metrics.update(float(o.outcome), float(p.prediction))
            self.rolling.push(float(o.outcome), float(p.prediction))
        else:
            loss = self.metrics.update(o.outcome, p.prediction, p.probabilities)
            self.rolling.push(o.outcome, p.prediction, p.probabilities)
        out: list[Alert] = _NONE
        if self.loss is not None:
            verdict = self.loss.update(loss, t)
            if verdict is not None:
                out = self._concept_alert(verdict, t)
        covered = self._resolved_one(1.0, t)
        if covered:
            out = out + covered
        if self.joined % _TICK == 0:
            out = out + self._check_thresholds(t)
        return out

    def _on_expired(self, ev: Expired) -> list[Alert]:
        self.expired += 1
        self._seen(ev.event_time)
        return self._resolved_one(0.0, ev.event_time)

    # -- monitors ----------------------------------------------------------

    def _resolved_one(self, got_label: float, t: float) -> list[Alert]:
        self.coverage.update(got_label)
        self.coverage_times.append(t)
        self.resolutions += 1
        if self.resolutions % _TICK:
            return _NONE
        return self._check_coverage(t)

    def _check_coverage(self, t: float) -> list[Alert]:
        cov = self.cfg.monitors.label_coverage
        if not cov.enabled or not self.coverage.full:
            return _NONE
        share = self.coverage.mean
        active = share < cov.min_coverage
        finding = Finding(
            f"{self.model_id} {self.model_version}: only {_pct(share)} of the last "
            f"{cov.window} predictions got an outcome within the {_duration(self.label_ttl)}"
            f" label TTL (expected at least {_pct(cov.min_coverage)})"
            if active
            else f"{self.model_id} {self.model_version}: {_pct(share)} of the last {cov.window}"
            f" predictions got an outcome within the label TTL",
            value=share,
            threshold=cov.min_coverage,
            window_events=cov.window,
            window_start=self.coverage_times[0],
            window_end=t,
            evidence={"joined": self.joined, "expired": self.expired, "late": self.late},
        )
        cond = Condition("label_coverage", "label_coverage", cov.severity)
        alert = self.policy.observe(cond, active, t, finding, may_page=self.may_page())
        return [alert] if alert else []

    def _loss_name(self) -> str:
        return "mean absolute error" if self.task == "regression" else "error rate"

    def _fmt_loss(self, x: float) -> str:
        return f"{x:.4g}" if self.task == "regression" else _pct(x)

    def _concept_alert(self, verdict: str, t: float) -> list[Alert]:
        assert self.loss is not None
        cd = self.cfg.monitors.concept_drift
        base, now = self.loss.last_baseline, self.loss.last_recent
        evidence = {
            "detector": self.loss.detector_name,
            "params": dict(cd.params),
            "loss": "absolute_error" if self.task == "regression" else "zero_one",
            "mean_before": base,
            "mean_after": now,
            "samples_before": self.loss.base_n,
            "samples_after": self.loss.since_n,
            "detections": self.loss.detections,
            "improvements": self.loss.improvements,
            "metrics": self.rolling.get(),
        }
        cond = Condition("concept_drift", "concept_drift", cd.severity)
        name = self._loss_name()
        if verdict == "improved":
            return []  # recorded in the counts and evidence; an improvement never pages
        if verdict == "degraded":
            finding = Finding(
                f"{self.model_id} {self.model_version}: {name} rose from {self._fmt_loss(base)}"
                f" to {self._fmt_loss(now)} over the {self.loss.since_n} outcomes since"
                f" {self.loss.detector_name} detected a change",
                value=now,
                baseline=base,
                threshold=base + self.loss.margin(base),
                window_events=self.loss.since_n,
                window_start=self.loss.detected_time,
                window_end=t,
                evidence=evidence,
            )
            may = self.may_page() and not self.policy.is_firing("label_coverage")
            alert = self.policy.observe(cond, True, t, finding, may_page=may)
            return [alert] if alert else []
        finding = Finding(
            f"{self.model_id} {self.model_version}: {name} back to {self._fmt_loss(now)}"
            f" (baseline {self._fmt_loss(base)})",
            value=now,
            baseline=base,
            window_events=len(self.loss.recent),
            window_start=self._joined_since(len(self.loss.recent)),
            window_end=t,
            evidence=evidence,
        )
        out = []
        for _ in range(self.cfg.alerts.resolve_after):  # recovery is already hysteretic
            alert = self.policy.observe(cond, False, t, finding)
            if alert:
                out.append(alert)
        return out

    def _joined_since(self, n: int) -> float:
        """Event time of the n-th newest joined outcome (the start of a window of n)."""
        times = self.joined_times
        return times[-min(n, len(times))]

    def _check_thresholds(self, t: float) -> list[Alert]:
        perf = self.cfg.monitors.performance
        if not perf.thresholds or self.rolling.n < min(perf.window, self.joined):
            return []
        values = self.rolling.get()
        out = []
        for th in perf.thresholds:
            value = values.get(th.metric)
            if value is None:
                continue
            breached = (th.below is not None and value < th.below) or (
                th.above is not None and value > th.above
            )
            run = self.breach_runs.get(th, 0) + _TICK if breached else 0
            self.breach_runs[th] = run
            bound = th.below if th.below is not None else th.above
            side = "below" if th.below is not None else "above"
            finding = Finding(
                f"{self.model_id} {self.model_version}: rolling {th.metric} {value:.4g} is {side}"
                f" {bound:g} over the last {self.rolling.n} outcomes (for {run} outcomes)",
                value=value,
                threshold=bound,
                window_events=self.rolling.n,
                window_start=self._joined_since(self.rolling.n),
                window_end=t,
                evidence={"metric": th.metric, "metrics": values, "for_events": th.for_events},
            )
            cond = Condition(f"threshold:{th.metric}:{side}", "performance", th.severity)
            may = self.may_page() and not self.policy.is_firing("label_coverage")
            alert = self.policy.observe(cond, run >= th.for_events, t, finding, may_page=may)
            if alert:
                out.append(alert)
        return out

    def _drift_alert(self, monitor: str, check: DriftCheck, t: float) -> list[Alert]:
        self.last_checks[monitor] = check
        cfg = getattr(self.cfg.monitors, monitor)
        active = bool(check.drifted)
        tested = len(check.results)
        drifted = [r for r in check.results if r.drifted]
        drifted.sort(key=lambda r: -r.psi)
        what = "score" if monitor == "prediction_drift" else "feature"
        if active:
            names = ", ".join(f"{r.name} (PSI {r.psi:.2f})" for r in drifted[:5])
            more = f" and {len(drifted) - 5} more" if len(drifted) > 5 else ""
            span = (
                f"over the last {check.window_events} predictions vs the first"
                f" {check.reference_events}"
            )
            if monitor == "prediction_drift":
                summary = (
                    f"{self.model_id} {self.model_version}: {drifted[0].name} distribution"
                    f" shifted {span} (PSI {check.max_psi:.2f}, threshold {cfg.psi_threshold:g})"
                )
            else:
                summary = (
                    f"{self.model_id} {self.model_version}: {len(drifted)} of {tested} {what}s"
                    f" drifted {span}: {names}{more}; PSI threshold {cfg.psi_threshold:g}"
                )
        else:
            summary = (
                f"{self.model_id} {self.model_version}: {what} distributions match the"
                f" reference (max PSI {check.max_psi:.2f})"
            )
        finding = Finding(
            summary,
            value=check.max_psi,
            threshold=cfg.psi_threshold,
            window_events=check.window_events,
            window_start=check.window_start,
            window_end=check.window_end,
            evidence={
                "test": "chi-square on reference-quantile bins, Benjamini-Hochberg across columns",
                "p_value_level": cfg.p_value,
                "psi_threshold": cfg.psi_threshold,
                "reference_events": check.reference_events,
                "columns_tested": tested,
                "drifted": [
                    {
                        "name": r.name,
                        "kind": r.kind,
                        "psi": r.psi,
                        "p_value": r.p_value,
                        "reference_mean": r.reference_mean,
                        "window_mean": r.window_mean,
                        "missing_rate_reference": r.missing_rate_reference,
                        "missing_rate_window": r.missing_rate_window,
                    }
                    for r in drifted[:20]
                ],
            },
        )
        kind = monitor
        cond = Condition(monitor, kind, cfg.severity)
        alert = self.policy.observe(cond, active, t, finding, may_page=self.may_page())
        return [alert] if alert else []

    # -- status ------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot for ``/models`` and the replay summary."""
        metrics = self.metrics.get() if self.metrics is not None else {}
        rolling = self.rolling.get() if self.rolling is not None else {}
        return {
            "model_id": self.model_id,
            "model_version": self.model_version,
            "task": self.task,
            "predictions": self.predictions,
            "outcomes": self.outcomes,
            "joined": self.joined,
            "expired": self.expired,
            # Every prediction is resolved exactly once, joined or expired.
            "pending": self.predictions - self.joined - self.expired,
            "late": self.late,
            "duplicates": self.duplicates,
            "dead_letters": self.dead_letters,
            "unscorable": self.unscorable,
            "mean_outcome_delay": self.delay_sum / self.joined if self.joined else None,
            "first_event_time": self.first_time,
            "last_event_time": self.last_time,
            "metrics": metrics,
            "rolling_metrics": rolling,
            "concept_drift": None
            if self.loss is None
            else {
                "detector": self.loss.detector_name,
                "detections": self.loss.detections,
                "degradations": self.loss.degradations,
                "improvements": self.loss.improvements,
                "baseline_loss": self.loss.baseline,
                "recent_loss": self.loss.recent_mean(),
            },
            "suppressed_alerts": self.policy.suppressed(),
            "firing_alerts": self.policy.firing(),
        }


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


class MonitorSet:
    """The monitors of every model version, created on first sight, up to a cap.

    A producer that invents a model id or a version per record (a bug, or
    hostile input) must not grow memory without end: :meth:`refusal` gives
    a new version no monitor once ``limits.max_models`` versions are
    monitored (models named in a ``[models."..."]`` section excepted) or
    its model has ``limits.max_versions_per_model``. Its events are then
    dropped and counted (:attr:`refused_events`, :attr:`refused_predictions`),
    and with ``keep_refused`` its predictions are kept in :attr:`refused`
    for the caller to dead-letter and clear. The monitors already running
    keep running: refusing the newcomer, rather than evicting an old
    monitor, means a flood can never push out a model that was there first.

    >>> from driftline.core.config import load_config
    >>> from driftline.core.events import Prediction, PredictionSeen
    >>> ms = MonitorSet(load_config(text="[limits]\\nmax_models = 2", env={}), keep_refused=True)
    >>> for m in ("a", "b", "c"):
    ...     _ = ms.handle(PredictionSeen(Prediction("r-" + m, m, 1, 0.0)))
    >>> sorted(ms.monitors), ms.refused_predictions
    ([('a', 'unversioned'), ('b', 'unversioned')], 1)
    >>> print(ms.refused[0][1][:60])
    model limit reached: 2 model versions are monitored (limits.
    """

    def __init__(self, config: Config, *, keep_refused: bool = False) -> None:
        self.config = config
        self.monitors: dict[tuple[str, str], ModelMonitor] = {}
        self.orphan_outcomes = 0
        # Cardinality caps (refusal()): plain counters, read by /metrics at scrape time.
        self.versions: dict[str, int] = {}  # model id -> its versions with a monitor
        self.refused_events = 0  # model events dropped because their version was refused
        self.refused_predictions = 0  # of which predictions (the worker dead-letters each)
        self.refused: list[tuple[Prediction, str]] | None = [] if keep_refused else None

    def get(self, model_id: str, model_version: str) -> ModelMonitor:
        key = (model_id, model_version)
        mon = self.monitors.get(key)
        if mon is None:
            mon = self.monitors[key] = self._new_monitor(model_id, model_version)
            self.versions[model_id] = self.versions.get(model_id, 0) + 1
        return mon

    def _new_monitor(self, model_id: str, model_version: str) -> ModelMonitor:
        """The monitor of a version seen for the first time (a subclass may stand in for it)."""
        cfg = self.config.model(model_id)
        return ModelMonitor(model_id, model_version, cfg, self.config.label_ttl)

    def refusal(self, model_id: str, model_version: str) -> str | None:
        """Why a version without a monitor may not get one (a cap), or None if it may."""
        limits = self.config.limits
        n = self.versions.get(model_id, 0)
        if n >= limits.max_versions_per_model:
            return (
                f"version limit reached: model {model_id} has {n} versions monitored"
                f" (limits.max_versions_per_model = {limits.max_versions_per_model});"
                f" version {model_version} is refused. Raise the limit if the model really"
                " has that many live versions"
            )
        if len(self.monitors) >= limits.max_models and model_id not in self.config.models:
            return (
                f"model limit reached: {len(self.monitors)} model versions are monitored"
                f" (limits.max_models = {limits.max_models}); {model_id} {model_version} is"
                f' refused. Raise the limit, or name the model in a [models."{model_id}"]'
                " section"
            )
        return None

    def admit(self, ev: ModelEvent, model_id: str, model_version: str) -> ModelMonitor | None:
        """The new monitor for ``ev``'s version, or None (counted) when a cap refuses it.

        Only called for a version without a monitor, so the hot path never pays for the caps.
        """
        reason = self.refusal(model_id, model_version)
        if reason is None:
            return self.get(model_id, model_version)
        self.refused_events += 1
        if type(ev) is PredictionSeen:
            self.refused_predictions += 1
            if self.refused is not None:
                self.refused.append((ev.prediction, reason))  # type: ignore[union-attr]
        return None

    def handle(self, ev: ModelEvent) -> list[Alert]:
        """Route one model event to its version's monitor; return its alerts."""
        t = type(ev)
        if t is PredictionSeen or t is Joined or t is Expired:
            p = ev.prediction  # type: ignore[union-attr]
            mon = self.monitors.get((p.model_id, p.model_version))
            if mon is None:
                mon = self.admit(ev, p.model_id, p.model_version)
                if mon is None:
                    return _NONE
            # ModelMonitor.handle's dispatch, inlined: once per event adds up.
            if t is PredictionSeen:
                return mon._on_prediction(p)
            if t is Joined:
                return mon._on_joined(ev)  # type: ignore[arg-type]
            return mon._on_expired(ev)  # type: ignore[arg-type]
        if t is OrphanOutcome:
            self.orphan_outcomes += 1
            return []
        model_id, version = ev.model_id, ev.model_version  # type: ignore[union-attr]
        mon = self.monitors.get((model_id, version))
        if mon is None:
            mon = self.admit(ev, model_id, version)
            if mon is None:
                return _NONE
        return mon.handle(ev)

    def of_model(self, model_id: str) -> list[ModelMonitor]:
        """The monitors of every version of ``model_id`` (for a checkpoint)."""
        return [m for (mid, _), m in self.monitors.items() if mid == model_id]

    def adopt(self, monitors: list[ModelMonitor]) -> None:
        """Take over monitors restored from a checkpoint, replacing any of the same versions."""
        for mon in monitors:
            key = (mon.model_id, mon.model_version)
            if key not in self.monitors:
                self.versions[mon.model_id] = self.versions.get(mon.model_id, 0) + 1
            self.monitors[key] = mon

    def forget(self, model_ids: set[str]) -> int:
        """Drop every version's monitor of ``model_ids``; return how many went.

        For a worker that no longer owns the models' partition: their state
        now lives on the worker that does, and a stale copy here would show
        frozen figures in ``/models`` and ``/metrics`` beside the live ones.

        >>> from driftline.core.config import load_config
        >>> from driftline.core.events import Prediction, PredictionSeen
        >>> ms = MonitorSet(load_config(env={}))
        >>> for m in ("a", "b"):
        ...     _ = ms.handle(PredictionSeen(Prediction("r-" + m, m, 1, 0.0)))
        >>> ms.forget({"a"}), sorted(ms.monitors)
        (1, [('b', 'unversioned')])
        """
        gone = [key for key in self.monitors if key[0] in model_ids]
        for key in gone:
            del self.monitors[key]
        for model_id in model_ids:
            self.versions.pop(model_id, None)
        return len(gone)

    def status(self) -> list[dict[str, Any]]:
        return [m.status() for _, m in sorted(self.monitors.items())]

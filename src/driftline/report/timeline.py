"""What a replay looked like over event time, per model version, for the report.

The monitors keep only what alerting needs: the current windows. A report
needs their history. :class:`Timeline` watches the same model events the
monitors do (``replay(..., on_event=timeline)``) and keeps its own rolling
windows, sampled every few events, so it reads no monitor state and changes
nothing the monitors compute: a replay with a report gives the very alerts,
to the byte, that one without gives. When no report is asked for, no
timeline exists and the replay loop is untouched.

Per model version it keeps:

* the rolling quality metrics over the monitors' window
  (``monitors.performance.window`` outcomes), with the same metric code;
* the score distribution over the last ``score_window`` predictions: mean
  and 10th, 25th, 50th, 75th and 90th percentiles of the score (of the
  predicted value for regression), a histogram of a classifier's score on
  ``[0, 1]`` (percentiles hide a two-humped distribution, a histogram shows
  mass moving from one hump to the other), or the share of each predicted
  label when the model gives no score;
* the event time its drift reference ends (the first
  ``prediction_drift.reference_size`` predictions), and when its outcomes
  came (to leave a thin tail of stragglers off the charts).

The alerts are kept in the order the monitors raised them. Memory is
bounded whatever the length of the history: each series holds at most
``max_points`` samples (see :class:`Sampler`).

A model that is always right for 3000 outcomes, then right one time in two:

>>> from driftline.core.config import Config
>>> from driftline.core.events import Joined, Outcome, Prediction, PredictionSeen
>>> timeline = Timeline(Config(), max_points=100)
>>> for i in range(6000):
...     p = Prediction(f"r{i}", "fraud", i % 2 == 0, float(i), score=0.9 if i % 2 == 0 else 0.1)
...     truth = p.prediction if i < 3000 or i % 4 < 2 else not p.prediction
...     timeline(PredictionSeen(p), [])
...     timeline(Joined(p, Outcome(f"r{i}", truth, i + 0.5)), [])
>>> (series,) = timeline.snapshot()
>>> len(series.metrics) <= 100
True
>>> for t, values in series.metrics[::12]:
...     print(f"{t:7.1f} accuracy {values['accuracy']:.2f} over the last {values['n']}")
   99.5 accuracy 1.00 over the last 100
 1299.5 accuracy 1.00 over the last 1000
 2499.5 accuracy 1.00 over the last 1000
 3699.5 accuracy 0.65 over the last 1000
 4899.5 accuracy 0.50 over the last 1000
"""

from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftline.core.config import Config
from driftline.core.events import Joined, ModelEvent, Prediction, PredictionSeen
from driftline.core.metrics import canonical_label, make_metrics
from driftline.core.monitor import infer_task

Alert = dict[str, Any]

DEFAULT_MAX_POINTS = 1000
"""Samples per series: more than a chart's width in pixels needs."""

DEFAULT_SCORE_WINDOW = 500
"""Predictions per score-distribution sample: enough for stable percentiles,
few enough that a shift shows within a short stretch of the chart."""

SCORE_BINS = 20
"""Histogram bins of a classifier's score on [0, 1]."""

MAX_SHARES = 12
"""Predicted labels kept per sample; the rest of the window is ``other``."""


class Sampler:
    """Evenly spaced samples of a stream, never more than ``max_points`` of them.

    ``due()`` is asked once per event and says whether to take a sample. When
    a sample would make one too many, every other sample is dropped (never
    the newest) and samples are taken half as often from then on, so the
    kept samples stay evenly spaced (every ``every`` events) and a stream of
    any length costs the same memory. ``counts`` says after how many events
    each kept sample was taken.

    >>> s = Sampler(max_points=5)
    >>> for i in range(1, 22):
    ...     if s.due():
    ...         s.add(f"sample {i}")
    >>> s.points[-1], s.counts, s.every, s.since
    ('sample 20', [4, 8, 12, 16, 20], 4, 1)
    """

    def __init__(self, max_points: int = DEFAULT_MAX_POINTS, every: int = 1) -> None:
        if max_points < 2 or every < 1:
            raise ValueError(f"need max_points >= 2 and every >= 1, got {max_points}, {every}")
        self.max_points = max_points
        self.every = every
        self.points: list[Any] = []
        self.counts: list[int] = []
        self.n = 0  # events counted
        self._left = every

    @property
    def since(self) -> int:
        """Events counted since the newest kept sample (or since the start)."""
        return self.n - (self.counts[-1] if self.counts else 0)

    def due(self) -> bool:
        """Count one event; whether a sample is due now."""
        self.n += 1
        self._left -= 1
        if self._left:
            return False
        self._left = self.every
        return True

    def add(self, point: Any) -> None:
        """Keep ``point`` (a due sample), thinning the kept samples if there are too many."""
        points = self.points
        points.append(point)
        self.counts.append(self.n)
        if len(points) > self.max_points:
            del points[-2::-2]  # the newest stays: the next sample is one new spacing on
            del self.counts[-2::-2]
            self.every *= 2
            self._left = self.every


@dataclass(frozen=True)
class ModelSeries:
    """Everything the report draws for one model version: plain data.

    ``metrics`` holds ``(event_time, rolling metrics)``; ``outcome_times``
    says when the n-th of the ``outcomes`` scored came, as ``(n, event_time)``
    (a sample: see :class:`Sampler`); ``scores`` holds
    ``(event_time, mean, p10, p25, p50, p75, p90)`` when the score is a
    number, and ``histograms`` ``(event_time, shares of SCORE_BINS bins)``
    when it is a classifier's score; ``shares`` holds ``(event_time, {label:
    share})`` when the model gives a label only.
    """

    model_id: str
    model_version: str
    task: str | None = None
    metric_window: int = 0
    score_window: int = 0
    score_name: str = "score"
    first_time: float | None = None
    last_time: float | None = None
    last_prediction: float | None = None
    reference_end: float | None = None
    metrics: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    scores: list[tuple[float, float, float, float, float, float, float]] = field(
        default_factory=list
    )
    outcomes: int = 0
    outcome_times: list[tuple[int, float]] = field(default_factory=list)
    histograms: list[tuple[float, tuple[float, ...]]] = field(default_factory=list)
    shares: list[tuple[float, dict[str, float]]] = field(default_factory=list)


class _Model:
    """The recording state of one model version."""

    def __init__(
        self, model_id: str, model_version: str, p: Prediction, config: Config, timeline: Timeline
    ) -> None:
        cfg = config.model(model_id)
        self.model_id = model_id
        self.model_version = model_version
        self.task = task = cfg.task or infer_task(p)  # as the monitor decides it
        self.metric_window = cfg.monitors.performance.window
        self.rolling = make_metrics(task, self.metric_window, cfg.positive_label)
        self.min_outcomes = min(self.metric_window, 100)  # fewer: too noisy to plot
        self.score_window = timeline.score_window
        self.reference_size = cfg.monitors.prediction_drift.reference_size
        self.reference_end: float | None = None
        self.predictions = 0
        self.first_time = self.last_time = p.event_time
        self.last_prediction: float | None = None
        # Numbers (a score, or a regression's prediction) get percentiles; labels get shares.
        self.numeric = task == "regression" or p.score is not None
        self.score_name = (
            "prediction" if task == "regression" else "score" if self.numeric else "predicted label"
        )
        self.values: deque[Any] = deque(maxlen=self.score_window)
        self.counts: Counter[Any] = Counter()
        # A sample every tenth of a window (then rarer, see Sampler): the windows
        # overlap, so finer steps would cost time and show nothing new.
        self.metric_samples = Sampler(timeline.max_points, max(1, self.metric_window // 10))
        self.score_samples = Sampler(timeline.max_points, max(1, self.score_window // 10))
        self.outcome_times = Sampler(timeline.max_points)  # for the report's time range
        self.metric_time = self.score_time = p.event_time

    def _seen(self, t: float) -> None:
        if t < self.first_time:
            self.first_time = t
        if t > self.last_time:
            self.last_time = t

    def prediction(self, p: Prediction) -> None:
        t = p.event_time
        self._seen(t)
        self.predictions += 1
        self.last_prediction = t
        if self.predictions == self.reference_size:
            self.reference_end = t
        if self.numeric:
            x = p.prediction if self.task == "regression" else p.score
            if not _is_number(x) or not math.isfinite(x):  # type: ignore[arg-type]
                return
            self.values.append(float(x))  # type: ignore[arg-type]
        else:
            label = canonical_label(p.prediction)
            values = self.values
            if len(values) == values.maxlen:
                old = values[0]
                self.counts[old] -= 1
                if not self.counts[old]:
                    del self.counts[old]
            values.append(label)
            self.counts[label] += 1
        self.score_time = t
        if self.score_samples.due():
            self.score_samples.add(self._score_point(t))

    def _score_point(self, t: float) -> Any:
        """``(stats, histogram or None)`` of a number's window, ``(t, shares)`` of a label's."""
        if self.numeric:
            x = np.fromiter(self.values, dtype=float, count=len(self.values))
            x.sort()
            stats = (t, float(x.mean()), *percentiles(x))
            return stats, None if self.task == "regression" else histogram(x)
        n = len(self.values)
        top = self.counts.most_common(MAX_SHARES)
        shares = {str(label): k / n for label, k in top}
        rest = n - sum(k for _, k in top)
        if rest:
            shares["other"] = shares.get("other", 0.0) + rest / n
        return (t, shares)

    def joined(self, ev: Joined) -> None:
        p, o = ev.prediction, ev.outcome
        t = o.event_time if o.event_time > p.event_time else p.event_time
        self._seen(t)
        task = self.task
        if task == "binary":
            self.rolling.push(o.outcome, p.prediction, p.score)
        elif task == "regression":
            if not _is_number(o.outcome) or not _is_number(p.prediction):
                return  # unscorable, as the monitor counts it
            self.rolling.push(float(o.outcome), float(p.prediction))
        else:
            self.rolling.push(o.outcome, p.prediction, p.probabilities)
        self.metric_time = t
        if self.outcome_times.due():
            self.outcome_times.add(t)
        if self.metric_samples.due():
            self._sample_metrics(t)

    def _sample_metrics(self, t: float) -> None:
        values = self.rolling.get()
        if values["n"] >= self.min_outcomes:
            self.metric_samples.add((t, values))

    def series(self) -> ModelSeries:
        """The samples so far, ending at the latest event even if it was not sampled."""
        sampled = self.metric_samples
        metrics = list(sampled.points)
        if sampled.since:
            values = self.rolling.get()
            if values["n"] >= self.min_outcomes:
                _append_last(metrics, (self.metric_time, values), sampled.max_points)
        times = self.outcome_times
        outcome_times = list(zip(times.counts, times.points, strict=True))
        if times.since:
            _append_last(outcome_times, (times.n, self.metric_time), times.max_points)
        scores = list(self.score_samples.points)
        if self.score_samples.since and self.values:
            last = self._score_point(self.score_time)
            _append_last(scores, last, self.score_samples.max_points)
        return ModelSeries(
            model_id=self.model_id,
            model_version=self.model_version,
            task=self.task,
            metric_window=self.metric_window,
            score_window=self.score_window,
            score_name=self.score_name,
            first_time=self.first_time,
            last_time=self.last_time,
            last_prediction=self.last_prediction,
            reference_end=self.reference_end,
            metrics=metrics,
            outcomes=times.n,
            outcome_times=outcome_times,
            scores=[stats for stats, _ in scores] if self.numeric else [],
            histograms=[(st[0], h) for st, h in scores if h is not None] if self.numeric else [],
            shares=[] if self.numeric else scores,
        )


class Timeline:
    """Records the per-model time series of a replay; pass it as ``on_event``.

    Parameters
    ----------
    config
        The replay's configuration: the task, positive label and windows of
        each model are read from it exactly as the monitors read them.
    max_points
        Most samples kept per series.
    score_window
        Predictions per score-distribution sample.
    """

    def __init__(
        self,
        config: Config,
        max_points: int = DEFAULT_MAX_POINTS,
        score_window: int = DEFAULT_SCORE_WINDOW,
    ) -> None:
        if score_window < 1:
            raise ValueError(f"score_window must be at least 1, got {score_window}")
        self.config = config
        self.max_points = max_points
        self.score_window = score_window
        self._models: dict[tuple[str, str], _Model] = {}
        self.alerts: list[Alert] = []

    def _new(self, p: Prediction) -> _Model:
        m = _Model(p.model_id, p.model_version, p, self.config, self)
        self._models[p.model_id, p.model_version] = m
        return m

    def __call__(self, ev: ModelEvent, alerts: list[Alert]) -> None:
        """Record one model event and the alerts the monitors raised on it."""
        t = type(ev)
        if t is PredictionSeen or t is Joined:
            p = ev.prediction  # type: ignore[union-attr]
            m = self._models.get((p.model_id, p.model_version)) or self._new(p)
            if t is PredictionSeen:
                m.prediction(p)
            else:
                m.joined(ev)  # type: ignore[arg-type]
        if alerts:
            self.alerts.extend(alerts)

    def snapshot(self) -> list[ModelSeries]:
        """The series of every model version seen, sorted by model and version."""
        return [m.series() for _, m in sorted(self._models.items())]


_QUANTILES = np.array([0.10, 0.25, 0.50, 0.75, 0.90])
_INNER_EDGES = np.arange(1, SCORE_BINS) / SCORE_BINS


def percentiles(x: np.ndarray) -> list[float]:
    """The 10th, 25th, 50th, 75th and 90th percentiles of sorted ``x``.

    Interpolated as ``np.percentile`` does by default, for a fraction of its
    cost on a sorted window (it is taken hundreds of times per replay).

    >>> x = np.arange(11.0)
    >>> percentiles(x) == np.percentile(x, [10, 25, 50, 75, 90]).tolist()
    True
    """
    pos = _QUANTILES * (len(x) - 1)
    lo = np.floor(pos).astype(np.intp)
    hi = np.minimum(lo + 1, len(x) - 1)
    return (x[lo] + (pos - lo) * (x[hi] - x[lo])).tolist()


def histogram(x: np.ndarray) -> tuple[float, ...]:
    """Shares of sorted ``x`` in ``SCORE_BINS`` equal bins of [0, 1]; outliers go to the ends.

    >>> histogram(np.array([0.0, 0.01, 0.5, 0.99, 1.0, 7.0]))[::19]
    (0.3333333333333333, 0.5)
    """
    below = np.searchsorted(x, _INNER_EDGES, "left")  # values under each inner edge
    counts = np.diff(below, prepend=0, append=len(x))
    return tuple((counts / len(x)).tolist())


def _append_last(points: list[Any], point: Any, max_points: int) -> None:
    """Add the final point, taking the newest sample's place if the series is full."""
    if len(points) >= max_points:
        points[-1] = point
    else:
        points.append(point)


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)

"""River drift detectors by name, and the direction-aware loss watcher.

River's detectors say *that* a stream changed, not *which way*. A model
whose error rate falls has drifted too, and nobody should be paged for it.
:class:`LossDriftMonitor` feeds the per-event loss to a river detector and,
when it fires, judges the change on the losses that came *after* the
detection against the healthy baseline before it: only a rise by both the
absolute and the relative margin is a degradation. A fall becomes the new
baseline and is recorded, not paged.

>>> import random
>>> from driftline.core.config import ConceptDriftConfig
>>> rng = random.Random(7)
>>> watch = LossDriftMonitor(ConceptDriftConfig())
>>> for i in range(6000):
...     error_rate = 0.1 if i < 3000 else 0.35   # the model breaks at 3000
...     verdict = watch.update(float(rng.random() < error_rate))
...     if verdict == "degraded":
...         print(f"degradation confirmed at event {i}")
degradation confirmed at event 3202
"""

from __future__ import annotations

from typing import Any, Literal

from river import drift
from river.drift import binary

from driftline.core.config import ConceptDriftConfig, ConfigError

_FACTORIES: dict[str, Any] = {
    "ADWIN": drift.ADWIN,
    "KSWIN": drift.KSWIN,
    "PageHinkley": drift.PageHinkley,
    "DDM": binary.DDM,
    "EDDM": binary.EDDM,
    "HDDM_A": binary.HDDMA,
    "HDDM_W": binary.HDDMW,
    "FHDDM": binary.FHDDM,
}
BINARY_ONLY = frozenset({"DDM", "EDDM", "HDDM_A", "HDDM_W", "FHDDM"})
# river's FHDDM flags a *fall* in the share of ones (its code tracks the
# maximum and fires on a drop), whatever its docstring says: feed it
# "correct" bits, not "error" bits.
_FEED_CORRECT = frozenset({"FHDDM"})
_MIN_CONFIRM = 100  # losses after a detection before it is judged
_TICK = 50  # losses between two judgements
_Z = 3.0  # a change must stand this many standard errors clear of noise


def make_detector(name: str, params: dict[str, Any] | None = None, *, seed: int = 0) -> Any:
    """A fresh river detector; ``params`` are its constructor arguments.

    >>> make_detector("PageHinkley", {"threshold": 20}).threshold
    20
    >>> make_detector("Nope")
    Traceback (most recent call last):
    ...
    driftline.core.config.ConfigError: unknown detector 'Nope'; choose one of ADWIN, KSWIN, ...
    """
    factory = _FACTORIES.get(name)
    if factory is None:
        names = ", ".join(list(_FACTORIES)[:2])
        raise ConfigError(f"unknown detector {name!r}; choose one of {names}, ...")
    kwargs = dict(params or {})
    if name == "KSWIN":
        kwargs.setdefault("seed", seed)
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"detector {name}: bad parameters {kwargs}: {exc}") from None


Verdict = Literal["degraded", "improved", "recovered"]


class LossDriftMonitor:
    """A river detector on the per-event loss, judged for direction.

    States: *healthy* (the baseline is the mean loss since the last reset),
    *suspect* (the detector fired; losses since then are collected),
    *degraded* (a confirmed rise; the baseline is frozen until the loss
    comes back within half the margin).
    """

    def __init__(self, cfg: ConceptDriftConfig, *, binary_loss: bool = True) -> None:
        self.cfg = cfg
        name = cfg.detector
        if not binary_loss and name in BINARY_ONLY:
            # Binary detectors need 0/1 input; a regression loss is real valued.
            name = "ADWIN"
        self.detector_name = name
        self.detector = make_detector(name, cfg.params)
        self.binary_input = name in BINARY_ONLY
        self.feed_correct = name in _FEED_CORRECT
        # river's ADWIN.update is a Python shim around its Rust window; the
        # shim and the drift_detected property cost more than the window
        # itself, so ADWIN (the default) is driven as the shim would drive it.
        self.adwin = type(self.detector) is drift.ADWIN and hasattr(self.detector, "_helper")
        self.n = 0
        self.detections = 0
        self.improvements = 0
        self.degradations = 0
        self.base_sum = 0.0
        self.base_sq = 0.0
        self.base_n = 0
        self.since_sq = 0.0
        self.degraded_at = 0
        self.detected_time = 0.0
        self.suspect = False
        self.degraded = False
        self.since_sum = 0.0
        self.since_n = 0
        self.recent: list[float] = [0.0] * cfg.recent_window
        self.recent_sum = 0.0
        self.last_baseline = 0.0
        self.last_recent = 0.0

    @property
    def baseline(self) -> float:
        return self.base_sum / self.base_n if self.base_n else 0.0

    def recent_mean(self) -> float:
        k = min(self.n, len(self.recent))
        return self.recent_sum / k if k else 0.0

    def margin(self, baseline: float) -> float:
        return max(self.cfg.absolute_margin, self.cfg.relative_margin * baseline)

    def update(self, loss: float, event_time: float = 0.0) -> Verdict | None:
        """Feed one loss; return a verdict when the state changes."""
        w = len(self.recent)
        i = self.n % w
        self.recent_sum += loss - self.recent[i]
        self.recent[i] = loss
        self.n += 1
        if self.n % (w * 20) == 0:
            self.recent_sum = sum(self.recent)  # keep float error from piling up
        det = self.detector
        if self.adwin:
            if det._drift_detected:
                det._reset()
            drifted = det._drift_detected = det._helper.update(loss)
        else:
            if self.feed_correct:
                det.update(int(not loss))
            else:
                det.update(bool(loss) if self.binary_input else loss)
            drifted = det.drift_detected
        if drifted:
            self.detections += 1
            if not self.degraded and not self.suspect:
                self.suspect = True
                self.since_sum = self.since_sq = 0.0
                self.since_n = 0
                self.detected_time = event_time
        if self.suspect:
            self.since_sum += loss
            self.since_sq += loss * loss
            self.since_n += 1
            if self.since_n >= _MIN_CONFIRM and self.since_n % _TICK == 0:
                return self._judge_suspect()
            return None
        if self.degraded:
            if self.n % _TICK == 0 and self.n - self.degraded_at >= len(self.recent):
                return self._judge_degraded()
            return None
        self.base_sum += loss
        self.base_sq += loss * loss
        self.base_n += 1
        return None

    def _clear(self, diff: float) -> bool:
        """Is ``diff`` (after minus before) more than ``_Z`` standard errors?"""
        n1, n2 = self.base_n, self.since_n
        m1, m2 = self.base_sum / n1, self.since_sum / n2
        v1 = max(self.base_sq / n1 - m1 * m1, 0.0)
        v2 = max(self.since_sq / n2 - m2 * m2, 0.0)
        # The larger variance for both sides: a short run of lucky outcomes
        # (a 0% error baseline has zero variance) must not make ordinary
        # noise look significant.
        v = max(v1, v2)
        se = (v / n1 + v / n2) ** 0.5
        return abs(diff) > _Z * se

    def _judge_suspect(self) -> Verdict | None:
        after = self.since_sum / self.since_n
        base = self.baseline
        self.last_baseline, self.last_recent = base, after
        if self.base_n < len(self.recent):
            # Too little healthy history to judge against (detectors such as
            # DDM fire within their first hundred samples). Keep collecting;
            # once a whole window has passed, it joins the baseline.
            if self.since_n >= len(self.recent):
                self._fold()
            return None
        margin = self.margin(base)
        if after > base + margin and self._clear(after - base):
            self.suspect = False
            self.degraded = True
            self.degraded_at = self.n
            self.degradations += 1
            return "degraded"
        if after < base - margin and self._clear(after - base):
            self.improvements += 1
            self._rebase()
            return "improved"
        if self.since_n >= len(self.recent):
            self._fold()  # no material change once a whole window has passed: a false start
        return None

    def _fold(self) -> None:
        """End a suspicion without a verdict: its losses join the baseline."""
        self.suspect = False
        self.base_sum += self.since_sum
        self.base_sq += self.since_sq
        self.base_n += self.since_n

    def _judge_degraded(self) -> Verdict | None:
        base = self.baseline
        now = self.recent_mean()
        self.last_baseline, self.last_recent = base, now
        if now <= base + self.margin(base) / 2:
            self.degraded = False
            self.suspect = False
            k = min(self.n, len(self.recent))
            self.base_sum, self.base_n = self.recent_sum, k
            self.base_sq = sum(x * x for x in self.recent[:k])
            return "recovered"
        return None

    def _rebase(self) -> None:
        """Start a new healthy baseline from the losses since the detection."""
        self.suspect = False
        self.base_sum, self.base_sq, self.base_n = self.since_sum, self.since_sq, self.since_n

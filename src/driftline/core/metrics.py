"""Model-quality metrics, one object per task, in a single pass per outcome.

river keeps one object per metric, so a binary model scored on accuracy,
precision, recall, F1, ROC AUC and log loss pays for six updates (and
six confusion matrices) per joined pair, about 7 µs. driftline must
replay more than 100k events a second in one process, so each task gets
one object that updates shared counts once:

* classification keeps, per label, how often it was observed, predicted,
  and both at once; every count-based metric is derived from these in
  :meth:`get`, and the positive class may be decided late (see
  :class:`BinaryMetrics`) without losing a single event;
* ROC AUC comes from a fixed-bin score histogram per observed label, log
  loss from per-label sums of both log terms;
* regression keeps three sums.

Every class has ``update``, ``revert`` and ``get``; :class:`RollingMetrics`
turns any of them into a sliding window by reverting the event that leaves.
Counts revert exactly; float sums are recomputed from the window from time
to time so rounding cannot pile up. Objects hold plain attributes only:
they pickle and replay deterministically.

>>> m = make_metrics("binary", window=None)
>>> for y, score in [(True, 0.9), (False, 0.2), (True, 0.4), (False, 0.6)]:
...     loss = m.update(y, score >= 0.5, score)
>>> for name, value in m.get().items():
...     print(f"{name:9} {value:.3g}")
accuracy  0.5
precision 0.5
recall    0.5
f1        0.5
roc_auc   0.75
log_loss  0.54
n         4
"""

from __future__ import annotations

import copy
import math
import re
from array import array
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import numpy as np

from driftline.core.events import TASKS, Label

__all__ = [
    "BinaryMetrics",
    "Metrics",
    "MulticlassMetrics",
    "RegressionMetrics",
    "RollingMean",
    "RollingMetrics",
    "canonical_label",
    "make_metrics",
]

EPS = 1e-15
"""Probabilities are clipped to ``[EPS, 1 - EPS]`` before the log, as river does."""
_ONE_MINUS_EPS = 1.0 - EPS
DEFAULT_BINS = 1000
MAX_LABELS = 1000
"""Distinct labels one object tracks; any further label shares one overflow slot."""
_OVERFLOW = ("driftline", "other labels")  # a tuple: no decoded label can equal it
_MAX_SPELLINGS = 4 * MAX_LABELS  # memoised raw spellings (str "1", int 1, ...)
_INT = re.compile(r"[+-]?\d+")
_FLOAT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_log = math.log


class Metrics(Protocol):
    """What :class:`RollingMetrics` and the monitor need from a metric set."""

    n: int
    _REFRESH_WINDOWS: int

    def update(self, *event: Any) -> float: ...

    def revert(self, *event: Any) -> None: ...

    def get(self) -> dict[str, float]: ...

    def _refresh(self, events: Iterable[tuple[Any, ...]]) -> None: ...


def canonical_label(label: Label) -> Label:
    """The value a label stands for, so that spellings of one value compare equal.

    Producers and label pipelines disagree on types: a prediction may say
    ``1`` or ``true`` where the outcome says ``"1"`` or ``True``. Booleans,
    numbers and their text spellings are therefore one value: ``True``,
    ``1``, ``1.0``, ``"1"``, ``" 1.0 "`` and ``"TRUE"`` are all ``1``
    (likewise ``False`` and ``"false"`` are ``0``). Any other string is
    itself, case and spaces included.

    >>> [canonical_label(x) for x in (True, 1.0, "1", " true ", "2.50", 0, "fraud", "Fraud")]
    [1, 1, 1, 1, 2.5, 0, 'fraud', 'Fraud']
    """
    if isinstance(label, str):
        text = label.strip()
        low = text.lower()
        if low == "true":
            return 1
        if low == "false":
            return 0
        if _INT.fullmatch(text):
            try:
                return int(text)
            except ValueError:  # beyond Python's 4300-digit limit: keep the text
                return label
        if not _FLOAT.fullmatch(text):
            return label
        label = float(text)
    if isinstance(label, bool):
        return int(label)
    if isinstance(label, float):
        if label != label:
            return "nan"
        return int(label) if label.is_integer() else label
    return label


def _clamp_score(score: float) -> float | None:
    """A score outside [0, 1] is clipped to it; NaN counts as no score."""
    if score != score:
        return None
    return 0.0 if score < 0.0 else 1.0


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


class _LabelCounts:
    """Per-label counts shared by the classification metrics.

    Each distinct label (after :func:`canonical_label`) gets a slot; for
    each slot we count how often it was observed (``_true``), predicted
    (``_pred``) and both at once (``_hit``). That is the diagonal and
    the margins of the confusion matrix, which is all that accuracy and
    one-vs-rest precision, recall and F1 need, for any class chosen as
    positive, at any time.
    """

    # Log-loss terms lie in [0, -log(EPS)] (about 34.5), so one add or subtract
    # moves the mean by at most ~4e-15 of rounding; 64 windows of that (2.5e-10
    # for a window of 1000) is negligible, and re-summing costs a window of logs.
    _REFRESH_WINDOWS = 64

    def __init__(self) -> None:
        self.n = 0
        self._ids: dict[Label, int] = {}  # raw spelling -> slot (memo)
        self._slot_of: dict[Any, int] = {}  # canonical label -> slot
        self._labels: list[Any] = []  # slot -> canonical label
        self._true: list[int] = []
        self._pred: list[int] = []
        self._hit: list[int] = []
        self._numeric = False  # some label is a boolean or a number

    @property
    def labels(self) -> list[Any]:
        """The canonical labels seen so far, in order of first appearance."""
        return list(self._labels)

    def _learn(self, label: Label) -> int:
        """The slot of a label not yet memoised (the slow path of ``update``)."""
        key = canonical_label(label)
        slot = self._slot_of.get(key)
        if slot is None:
            if len(self._labels) >= MAX_LABELS:
                key = _OVERFLOW
                slot = self._slot_of.get(key)
            if slot is None:
                slot = len(self._labels)
                self._labels.append(key)
                self._slot_of[key] = slot
                self._grow()
            if not isinstance(key, str | tuple):
                self._numeric = True
        if len(self._ids) < _MAX_SPELLINGS and label == label:  # NaN never matches itself
            self._ids[label] = slot
        return slot

    def _slot(self, label: Label) -> int:
        slot = self._ids.get(label)
        return self._learn(label) if slot is None else slot

    def _grow(self) -> None:
        self._true.append(0)
        self._pred.append(0)
        self._hit.append(0)

    def _count(self, t: int, p: int, step: int) -> float:
        self.n += step
        self._true[t] += step
        self._pred[p] += step
        if t == p:
            self._hit[t] += step
            return 0.0
        return 1.0

    def _accuracy(self) -> float:
        return sum(self._hit) / self.n


class BinaryMetrics(_LabelCounts):
    """Accuracy, precision, recall, F1, ROC AUC and log loss in one pass.

    Parameters
    ----------
    positive_label
        The positive class. Labels are compared by value (see
        :func:`canonical_label`), so ``"1"`` also matches ``1``, ``1.0``
        and ``True``, as a TOML setting needs to.
    bins
        Score histogram bins on ``[0, 1]`` for ROC AUC.

    Notes
    -----
    **The positive class.** If ``positive_label`` is set, it is that.
    Otherwise, if any label is a boolean or a number (or spells one), the
    positive class is ``1``/``True`` and every other value is negative
    (0/1, -1/1 and true/false all work). Otherwise the labels are names
    such as ``"fraud"``/``"legit"`` and the positive class is read off the
    scores, which are the probability of the positive class: it is the
    predicted label whose predictions carry the highest mean score, since
    under any decision threshold the positive predictions score above it
    and the negative ones below. While only one label has been predicted,
    it is positive if its mean score is at least 0.5, else the positive
    class is the one other label seen (if exactly one). Without scores the
    positive class cannot be known, and precision, recall, F1, ROC AUC and
    log loss are left out of :meth:`get`: set ``positive_label``.

    Because counts are kept per label, the positive class is decided in
    :meth:`get`, and a late decision still covers every past event.

    **Undefined values** follow river: precision with no positive
    prediction, recall with no positive outcome and F1 when both are zero
    are ``0.0``. ROC AUC is left out until both classes have a scored
    outcome (river's threshold approximation would report ``0``), log
    loss until a score is seen; both average over scored events only.
    :meth:`get` on no events returns ``{"n": 0}``.

    **Scores** outside ``[0, 1]`` are clipped to it; NaN counts as absent.

    **ROC AUC** uses ``bins`` equal-width score bins per class. Pairs in
    different bins are ordered exactly; a positive-negative pair in the
    same bin counts 1/2, which is also what the exact AUC counts for a
    tie. The error is therefore at most half the share of
    positive-negative pairs that share a bin: if the class score densities
    are bounded by ``D``, at most ``D / (2 * bins)``, e.g. 0.0025 for the
    default 1000 bins and ``D = 5``. Scores on a grid coarser than the
    bins (such as two decimals) give the exact AUC.

    Examples
    --------
    The labels are names here, so the scores tell which one is positive:

    >>> m = BinaryMetrics()
    >>> for y, pred, score in [("fraud", "fraud", 0.8), ("legit", "legit", 0.1),
    ...                        ("fraud", "legit", 0.3), ("legit", "legit", 0.2)]:
    ...     m.update(y, pred, score)
    0.0
    0.0
    1.0
    0.0
    >>> m.positive
    'fraud'
    >>> got = m.get()
    >>> got["precision"], got["recall"], round(got["f1"], 3), got["roc_auc"]
    (1.0, 0.5, 0.667, 1.0)
    """

    def __init__(self, positive_label: Label | None = None, bins: int = DEFAULT_BINS) -> None:
        super().__init__()
        if bins < 1:
            raise ValueError(f"bins must be at least 1, got {bins}")
        self.positive_label = positive_label
        self.bins = bins
        self._scored = 0
        self._hist: list[array | None] = []  # per observed slot: score counts per bin
        self._ll_pos: list[float] = []  # per observed slot: sum of -log(p)
        self._ll_neg: list[float] = []  # per observed slot: sum of -log(1 - p)
        self._score_sum: list[float] = []  # per predicted slot, for inferring the positive
        self._score_n: list[int] = []
        self._infer = positive_label is None

    def _grow(self) -> None:
        super()._grow()
        self._hist.append(None)
        self._ll_pos.append(0.0)
        self._ll_neg.append(0.0)
        self._score_sum.append(0.0)
        self._score_n.append(0)

    def _learn(self, label: Label) -> int:
        slot = super()._learn(label)
        if self._numeric:
            self._infer = False
        return slot

    def update(self, y_true: Label, y_pred: Label, score: float | None = None) -> float:
        """Count one joined pair; return its loss (1.0 if misclassified, else 0.0).

        ``score`` is the predicted probability of the positive class, if the
        model gives one.
        """
        ids = self._ids
        t = ids.get(y_true)
        if t is None:
            t = self._learn(y_true)
        p = ids.get(y_pred)
        if p is None:
            p = self._learn(y_pred)
        self.n += 1
        self._true[t] += 1
        self._pred[p] += 1
        if score is not None:
            if not 0.0 <= score <= 1.0:
                score = _clamp_score(score)
            if score is not None:
                # Inlined here and in revert(): a helper call costs ~0.1 µs an event.
                bins = self.bins
                b = int(score * bins)
                hist = self._hist[t]
                if hist is None:
                    hist = self._hist[t] = array("q", bytes(8 * bins))
                hist[b if b < bins else bins - 1] += 1
                q = EPS if score < EPS else (_ONE_MINUS_EPS if score > _ONE_MINUS_EPS else score)
                self._ll_pos[t] -= _log(q)
                self._ll_neg[t] -= _log(1.0 - q)
                self._scored += 1
                if self._infer:
                    self._score_sum[p] += score
                    self._score_n[p] += 1
        if t == p:
            self._hit[t] += 1
            return 0.0
        return 1.0

    def revert(self, y_true: Label, y_pred: Label, score: float | None = None) -> None:
        """Undo an earlier :meth:`update` with the same arguments.

        The evidence used to infer the positive class is kept, so a sliding
        window cannot flip its positive class when old events leave.
        """
        ids = self._ids
        t = ids.get(y_true)
        if t is None:
            t = self._learn(y_true)
        p = ids.get(y_pred)
        if p is None:
            p = self._learn(y_pred)
        self.n -= 1
        self._true[t] -= 1
        self._pred[p] -= 1
        if t == p:
            self._hit[t] -= 1
        if score is not None:
            if not 0.0 <= score <= 1.0:
                score = _clamp_score(score)
            hist = self._hist[t]
            if score is not None and hist is not None:
                bins = self.bins
                b = int(score * bins)
                hist[b if b < bins else bins - 1] -= 1
                q = EPS if score < EPS else (_ONE_MINUS_EPS if score > _ONE_MINUS_EPS else score)
                self._ll_pos[t] += _log(q)
                self._ll_neg[t] += _log(1.0 - q)
                self._scored -= 1

    def _score_terms(self, score: float | None) -> tuple[int, float, float] | None:
        """Bin and both log-loss terms of a score, exactly as ``update`` computes them."""
        if score is None:
            return None
        if not 0.0 <= score <= 1.0:
            score = _clamp_score(score)
            if score is None:
                return None
        b = min(int(score * self.bins), self.bins - 1)
        q = EPS if score < EPS else (_ONE_MINUS_EPS if score > _ONE_MINUS_EPS else score)
        return b, -_log(q), -_log(1.0 - q)

    def _refresh(self, events: Iterable[tuple[Any, ...]]) -> None:
        """Recompute the float sums from the events still counted (drops rounding)."""
        ll_pos = [0.0] * len(self._labels)
        ll_neg = [0.0] * len(self._labels)
        for y_true, _y_pred, *rest in events:
            terms = self._score_terms(rest[0] if rest else None)
            if terms is not None:
                t = self._slot(y_true)
                ll_pos[t] += terms[1]
                ll_neg[t] += terms[2]
        self._ll_pos, self._ll_neg = ll_pos, ll_neg

    @property
    def positive(self) -> Label | None:
        """The positive class as decided now (canonical form), or None if unknown."""
        if self.positive_label is not None:
            return canonical_label(self.positive_label)
        if self._numeric:
            return 1
        slot = self._inferred_slot()
        return None if slot is None else self._labels[slot]

    def _inferred_slot(self) -> int | None:
        scored = [s for s, k in enumerate(self._score_n) if k and self._labels[s] != _OVERFLOW]
        if not scored:
            return None
        means = [self._score_sum[s] / self._score_n[s] for s in scored]
        if len(scored) > 1:
            return scored[means.index(max(means))]
        if means[0] >= 0.5:
            return scored[0]
        others = [s for s in range(len(self._labels)) if s != scored[0]]
        return others[0] if len(others) == 1 else None

    def _positive_slot(self) -> int | None:
        """Slot of the positive class; -1 if it is known but never seen."""
        if self.positive_label is None and not self._numeric:
            return self._inferred_slot()
        return self._slot_of.get(self.positive, -1)

    def get(self) -> dict[str, float]:
        """The metrics now; see the class notes for what is left out and when."""
        n = self.n
        if not n:
            return {"n": 0}
        out: dict[str, float] = {"accuracy": self._accuracy()}
        pos = self._positive_slot()
        if pos is not None:
            tp, predicted, observed = (
                (self._hit[pos], self._pred[pos], self._true[pos]) if pos >= 0 else (0, 0, 0)
            )
            precision = _ratio(tp, predicted)
            recall = _ratio(tp, observed)
            out["precision"] = precision
            out["recall"] = recall
            out["f1"] = _ratio(2 * precision * recall, precision + recall)
            if self._scored:
                auc = self._roc_auc(pos)
                if auc is not None:
                    out["roc_auc"] = auc
                ll = sum(v for s, v in enumerate(self._ll_neg) if s != pos)
                if pos >= 0:
                    ll += self._ll_pos[pos]
                out["log_loss"] = ll / self._scored
        out["n"] = n
        return out

    def _roc_auc(self, pos: int) -> float | None:
        hist = self._hist[pos] if pos >= 0 else None
        negs = [h for s, h in enumerate(self._hist) if s != pos and h is not None]
        if hist is None or not negs:
            return None
        p = np.frombuffer(hist, dtype=np.int64).astype(np.float64)
        q = np.frombuffer(negs[0], dtype=np.int64).astype(np.float64)
        for h in negs[1:]:
            q += np.frombuffer(h, dtype=np.int64)
        n_pos, n_neg = p.sum(), q.sum()
        if not n_pos or not n_neg:
            return None
        below = np.cumsum(q) - q  # negatives in lower bins
        return float((p @ below + 0.5 * (p @ q)) / (n_pos * n_neg))


class MulticlassMetrics(_LabelCounts):
    """Accuracy, macro F1 and log loss in one pass.

    Macro F1 follows river's ``MacroF1``: the mean over every class that
    was observed or predicted (in the window) of that class's F1, which is
    0 where undefined. Log loss uses the probability given to the observed
    class, clipped to ``[EPS, 1 - EPS]``, averaged over the events that
    came with probabilities. A class missing from ``probabilities`` has
    probability 0 (loss ``-log(EPS)``, about 34.5); river's
    ``CrossEntropy`` scores that 0, which would reward a model for leaving
    the true class out. Probability keys are labels by value too: the key
    ``"2"`` is the probability of outcome ``2``.

    >>> m = MulticlassMetrics()
    >>> m.update("cat", "cat", {"cat": 0.8, "dog": 0.2})
    0.0
    >>> m.update("dog", "cat", {"cat": 0.6, "dog": 0.3, "bird": 0.1})
    1.0
    >>> m.update("bird", "bird", {"bird": 0.9})
    0.0
    >>> {k: round(v, 3) for k, v in m.get().items()}
    {'accuracy': 0.667, 'macro_f1': 0.556, 'log_loss': 0.511, 'n': 3}

    Leaving the observed class out of ``probabilities`` costs ``-log(EPS)``:

    >>> m.update(2, 1, {"1": 1.0})
    1.0
    >>> round(m.get()["log_loss"], 2)
    9.02
    """

    def __init__(self) -> None:
        super().__init__()
        self._ll = 0.0
        self._scored = 0
        self._proba_key: dict[int, Any] = {}  # slot -> the key spelling that last matched

    def update(
        self, y_true: Label, y_pred: Label, probabilities: Mapping[Any, float] | None = None
    ) -> float:
        """Count one joined pair; return its loss (1.0 if misclassified, else 0.0)."""
        ids = self._ids
        t = ids.get(y_true)
        if t is None:
            t = self._learn(y_true)
        p = ids.get(y_pred)
        if p is None:
            p = self._learn(y_pred)
        if probabilities is not None:
            self._ll += self._log_loss(t, y_true, probabilities)
            self._scored += 1
        return self._count(t, p, 1)

    def revert(
        self, y_true: Label, y_pred: Label, probabilities: Mapping[Any, float] | None = None
    ) -> None:
        """Undo an earlier :meth:`update` with the same arguments."""
        t = self._slot(y_true)
        if probabilities is not None:
            self._ll -= self._log_loss(t, y_true, probabilities)
            self._scored -= 1
        self._count(t, self._slot(y_pred), -1)

    def _log_loss(self, t: int, y_true: Label, probabilities: Mapping[Any, float]) -> float:
        q = probabilities.get(y_true)
        if q is None:
            q = probabilities.get(self._proba_key.get(t, _OVERFLOW))
            if q is None:
                for key, value in probabilities.items():
                    if self._slot(key) == t:
                        self._proba_key[t] = key
                        q = value
                        break
                else:
                    q = 0.0
        q = EPS if not q > EPS else (_ONE_MINUS_EPS if q > _ONE_MINUS_EPS else q)
        return -_log(q)

    def _refresh(self, events: Iterable[tuple[Any, ...]]) -> None:
        """Recompute the log-loss sum from the events still counted."""
        total = 0.0
        for y_true, _y_pred, *rest in events:
            if rest and rest[0] is not None:
                total += self._log_loss(self._slot(y_true), y_true, rest[0])
        self._ll = total

    def get(self) -> dict[str, float]:
        """Accuracy, macro F1, log loss (once probabilities are seen) and ``n``."""
        n = self.n
        if not n:
            return {"n": 0}
        f1s = []
        for hit, observed, predicted in zip(self._hit, self._true, self._pred, strict=True):
            if observed or predicted:
                precision, recall = _ratio(hit, predicted), _ratio(hit, observed)
                f1s.append(_ratio(2 * precision * recall, precision + recall))
        out: dict[str, float] = {"accuracy": self._accuracy(), "macro_f1": sum(f1s) / len(f1s)}
        if self._scored:
            out["log_loss"] = self._ll / self._scored
        out["n"] = n
        return out


class RegressionMetrics:
    """Mean absolute error, RMSE and bias from three running sums.

    ``mean_error`` is the mean of ``y_pred - y_true``: positive when the
    model over-predicts.

    >>> m = RegressionMetrics()
    >>> for y, pred in [(3.0, 2.5), (-0.5, 0.0), (2.0, 2.0), (7.0, 8.0)]:
    ...     _ = m.update(y, pred)
    >>> m.get()
    {'mae': 0.5, 'rmse': 0.6123724356957945, 'mean_error': 0.25, 'n': 4}
    """

    # Errors are unbounded: one huge error leaving a window would wipe out the
    # precision of the sum, so it is re-summed after every window of evictions.
    _REFRESH_WINDOWS = 1

    def __init__(self) -> None:
        self.n = 0
        self._err = 0.0
        self._abs = 0.0
        self._sq = 0.0

    def update(self, y_true: float, y_pred: float) -> float:
        """Count one joined pair; return its absolute error."""
        e = y_pred - y_true
        a = abs(e)
        self.n += 1
        self._err += e
        self._abs += a
        self._sq += e * e
        return a

    def revert(self, y_true: float, y_pred: float) -> None:
        """Undo an earlier :meth:`update` with the same arguments."""
        e = y_pred - y_true
        self.n -= 1
        self._err -= e
        self._abs -= abs(e)
        self._sq -= e * e

    def _refresh(self, events: Iterable[tuple[Any, ...]]) -> None:
        """Recompute the sums exactly from the events still counted."""
        errors = [y_pred - y_true for y_true, y_pred in events]
        self._err = math.fsum(errors)
        self._abs = math.fsum(map(abs, errors))
        self._sq = math.fsum(e * e for e in errors)

    def get(self) -> dict[str, float]:
        """MAE, RMSE, mean error and ``n``; ``{"n": 0}`` before any event."""
        n = self.n
        if not n:
            return {"n": 0}
        return {
            "mae": self._abs / n,
            "rmse": math.sqrt(max(self._sq, 0.0) / n),
            "mean_error": self._err / n,
            "n": n,
        }


class RollingMean:
    """Mean of the last ``window`` values, for rolling loss, accuracy or coverage.

    A ring buffer with a running sum. Adding the new value and subtracting
    the old one lets rounding error accumulate, so the sum is recomputed
    exactly (``math.fsum``) each time the ring wraps: O(1) amortised.

    >>> r = RollingMean(3)
    >>> for x in [1.0, 0.0, 1.0, 1.0]:
    ...     r.update(x)
    >>> r.mean, r.n, r.full
    (0.6666666666666666, 3, True)
    """

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.window = window
        self._buf: list[float] = []
        self._i = 0
        self._sum = 0.0

    def update(self, x: float) -> None:
        """Add ``x``, dropping the oldest value once the window is full."""
        buf = self._buf
        if len(buf) < self.window:
            buf.append(x)
            self._sum += x
            return
        i = self._i
        self._sum += x - buf[i]
        buf[i] = x
        i += 1
        if i == self.window:
            i = 0
            self._sum = math.fsum(buf)
        self._i = i

    @property
    def n(self) -> int:
        """How many values the window holds."""
        return len(self._buf)

    @property
    def full(self) -> bool:
        """Whether ``window`` values have been seen."""
        return len(self._buf) == self.window

    @property
    def mean(self) -> float:
        """The mean of the window; 0.0 when empty, as river's ``Mean``."""
        return self._sum / len(self._buf) if self._buf else 0.0


class RollingMetrics:
    """Any metric set above, over the last ``window`` events.

    Keeps the events in a deque and reverts the one that leaves. Counts
    revert exactly; float sums are recomputed from the window now and then
    (every window of evictions for regression, whose errors are unbounded;
    every 64 windows for log loss, whose terms are bounded), so rounding
    cannot pile up. ``get()`` has the same keys as the wrapped metrics, with
    ``n`` the events in the window.

    >>> r = RollingMetrics(RegressionMetrics(), window=2)
    >>> for y, pred in [(0.0, 10.0), (1.0, 1.5), (2.0, 1.0)]:
    ...     _ = r.update(y, pred)
    >>> r.get()
    {'mae': 0.75, 'rmse': 0.7905694150420949, 'mean_error': -0.25, 'n': 2}
    """

    def __init__(self, metrics: Metrics, window: int) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self.metrics = metrics
        self.window = window
        self._events: deque[tuple[Any, ...]] = deque()
        self._pending: list[tuple[Any, ...]] = []
        self._fresh = copy.deepcopy(metrics)
        self._evictions = 0
        self._refresh_after = window * metrics._REFRESH_WINDOWS
        self._trim_at = window + max(1, window // 4)

    def push(self, *event: Any) -> None:
        """Like :meth:`update`, but counted only when the window is next read.

        A monitor reads its rolling metrics every so often (threshold rules,
        status), not after every event; deferring the work lets a window
        nobody reads cost one list append per event, and a window read
        rarely be rebuilt from its last ``window`` events instead of being
        updated and reverted event by event.

        >>> r = RollingMetrics(RegressionMetrics(), window=2)
        >>> for y, pred in [(0.0, 10.0), (1.0, 1.5), (2.0, 1.0)]:
        ...     r.push(y, pred)
        >>> r.get()["mae"]
        0.75
        """
        pending = self._pending
        pending.append(event)
        # Only the last ``window`` events can matter: trimming at 1.25 windows
        # rather than 2 keeps ~375 fewer event tuples per monitor on average
        # (1,000-event window, ~36 KB) for ~4 more pointer moves per push.
        if len(pending) >= self._trim_at:
            del pending[: -self.window]

    def _sync(self) -> None:
        pending = self._pending
        if not pending:
            return
        self._pending = []
        if len(pending) >= self.window:
            # The whole window is new: rebuild rather than update and revert.
            self.metrics = copy.deepcopy(self._fresh)
            self._events = deque()
            self._evictions = 0
            pending = pending[-self.window :]
        for event in pending:
            self.update(*event)

    def update(self, *event: Any) -> float:
        """Pass ``event`` to the wrapped metrics' ``update``; return its loss."""
        if self._pending:
            self._sync()
        loss = self.metrics.update(*event)
        events = self._events
        events.append(event)
        if len(events) > self.window:
            self.metrics.revert(*events.popleft())
            self._evictions += 1
            if self._evictions == self._refresh_after:
                self._evictions = 0
                self.metrics._refresh(events)
        return loss

    @property
    def n(self) -> int:
        """How many events the window holds."""
        self._sync()
        return len(self._events)

    def get(self) -> dict[str, float]:
        """The wrapped metrics over the window."""
        self._sync()
        return self.metrics.get()


def make_metrics(
    task: str, window: int | None, positive_label: Label | None = None
) -> BinaryMetrics | MulticlassMetrics | RegressionMetrics | RollingMetrics:
    """The metric set for ``task``: since the start, or over the last ``window`` events.

    >>> make_metrics("regression", None).get()
    {'n': 0}
    >>> make_metrics("binary", 500, positive_label="fraud").metrics.positive
    'fraud'
    >>> make_metrics("ranking", None)
    Traceback (most recent call last):
    ...
    ValueError: unknown task 'ranking'; choose one of binary, multiclass, regression
    """
    metrics: BinaryMetrics | MulticlassMetrics | RegressionMetrics
    if task == "binary":
        metrics = BinaryMetrics(positive_label)
    elif task == "multiclass":
        metrics = MulticlassMetrics()
    elif task == "regression":
        metrics = RegressionMetrics()
    else:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    return metrics if window is None else RollingMetrics(metrics, window)

"""driftline's one-pass metrics against river and exact references, after every update."""

from __future__ import annotations

import math
import pickle
import random
from bisect import bisect_left, bisect_right, insort
from collections import Counter, deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import metrics as rm
from river import stats

from driftline.core.metrics import (
    EPS,
    MAX_LABELS,
    BinaryMetrics,
    MulticlassMetrics,
    RegressionMetrics,
    RollingMean,
    RollingMetrics,
    canonical_label,
    make_metrics,
)

TOL = 1e-9


def assert_close(got: dict, want: dict, where: str = "", tol: float = TOL) -> None:
    assert got.keys() == want.keys(), f"{where}: keys {sorted(got)} != {sorted(want)}"
    for key, value in want.items():
        assert math.isclose(got[key], value, rel_tol=tol, abs_tol=tol), (
            f"{where}: {key} = {got[key]!r}, expected {value!r}"
        )


class ExactAUC:
    """Exact ROC AUC by pair counting (ties 1/2), kept incrementally with bisect.

    Also counts the positive-negative pairs whose scores share a bin, which
    bounds the error of the binned AUC (see ``BinaryMetrics``).
    """

    def __init__(self, bins: int = 1000) -> None:
        self.bins = bins
        self.pos: list[float] = []
        self.neg: list[float] = []
        self.wins2 = 0  # twice the number of correctly ordered pairs (ties count 1)
        self.pos_bins: Counter[int] = Counter()
        self.neg_bins: Counter[int] = Counter()
        self.same_bin = 0

    def _bin(self, s: float) -> int:
        return min(int(s * self.bins), self.bins - 1)

    def add(self, positive: bool, s: float, step: int = 1) -> None:
        mine, other = (self.pos, self.neg) if positive else (self.neg, self.pos)
        lo, hi = bisect_left(other, s), bisect_right(other, s)
        below, ties = (lo, hi - lo) if positive else (len(other) - hi, hi - lo)
        self.wins2 += step * (2 * below + ties)
        b = self._bin(s)
        mine_bins, other_bins = (
            (self.pos_bins, self.neg_bins) if positive else (self.neg_bins, self.pos_bins)
        )
        self.same_bin += step * other_bins[b]
        mine_bins[b] += step
        if step > 0:
            insort(mine, s)
        else:
            del mine[bisect_left(mine, s)]

    def defined(self) -> bool:
        return bool(self.pos and self.neg)

    def auc(self) -> float:
        return self.wins2 / (2 * len(self.pos) * len(self.neg))

    def bound(self) -> float:
        return 0.5 * self.same_bin / (len(self.pos) * len(self.neg))


def binary_stream(seed, n, pos=True, neg=False, threshold=0.5, scored=0.9):
    """Outcomes 30% positive, scores from overlapping clipped normals (0.0 and 1.0 occur)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        y = rng.random() < 0.3
        s = min(1.0, max(0.0, rng.gauss(0.62 if y else 0.38, 0.2)))
        out.append(
            (
                pos if y else neg,
                pos if s >= threshold else neg,
                s if rng.random() < scored else None,
            )
        )
    return out


def check_binary_against_river(events, pos, positive_label=None, bins=1000):
    """Feed ``events``; after each one compare with river and the exact AUC.

    river's binary metrics get booleans: in river 0.26 a non-boolean ``pos_val``
    such as ``"fraud"`` is compared with the booleans its confusion matrix
    stores, and precision and recall stay 0.
    """
    m = BinaryMetrics(positive_label, bins=bins)
    acc, prec, rec, f1, ll = rm.Accuracy(), rm.Precision(), rm.Recall(), rm.F1(), rm.LogLoss()
    exact = ExactAUC(bins)
    errors = []
    for i, (y, pred, score) in enumerate(events):
        loss = m.update(y, pred, score)
        assert loss == float(y != pred)
        acc.update(y, pred)
        for metric in (prec, rec, f1):
            metric.update(y == pos, pred == pos)
        want = {"accuracy": acc.get(), "precision": prec.get(), "recall": rec.get(), "f1": f1.get()}
        if score is not None:
            ll.update(y == pos, score)
            exact.add(y == pos, score)
            want["log_loss"] = ll.get()
        elif ll._mean.n:
            want["log_loss"] = ll.get()
        got = m.get()
        if exact.defined():
            assert "roc_auc" in got, f"event {i}: both classes scored, no roc_auc"
            err = abs(got.pop("roc_auc") - exact.auc())
            assert err <= exact.bound() + 1e-12, f"event {i}: AUC off by {err} > {exact.bound()}"
            errors.append(err)
        want["n"] = i + 1
        assert_close(got, want, f"event {i}")
    return m, exact, errors


# -- binary ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("pos", "neg", "positive_label"),
    [
        (True, False, None),  # booleans: True is positive
        (1, 0, None),  # numbers: 1 is positive
        (1, -1, None),
        ("fraud", "legit", "fraud"),  # names, configured
        ("legit", "fraud", "legit"),  # the configured class wins over any guess
        (1, 0, "1"),  # a TOML string setting matches numeric labels
    ],
)
def test_binary_matches_river_after_every_update(pos, neg, positive_label):
    events = binary_stream(3, 4000, pos, neg)
    m, exact, _ = check_binary_against_river(events, pos, positive_label)
    assert m.get()["n"] == 4000
    assert 0.6 < exact.auc() < 0.9  # the stream is neither trivial nor random


def test_binary_infers_named_positive_class_from_scores():
    events = binary_stream(5, 3000, "fraud", "legit")
    m = BinaryMetrics()
    refs = {"precision": rm.Precision(), "recall": rm.Recall(), "f1": rm.F1()}
    for i, (y, pred, score) in enumerate(events):
        m.update(y, pred, score)
        for ref in refs.values():
            ref.update(y == "fraud", pred == "fraud")
        # With a 0.5 threshold the rule is never wrong, not even on the first events.
        assert m.positive in ("fraud", None), f"event {i}"
        if m.positive is not None:
            got = m.get()
            for name, ref in refs.items():
                assert math.isclose(got[name], ref.get()), f"event {i}: {name}"
    assert m.positive == "fraud"


def test_binary_inference_holds_for_any_threshold():
    # A cautious model flags fraud only above 0.8: "legit" predictions often score
    # above 0.5, yet they score lower on average than "fraud" ones.
    events = binary_stream(6, 2000, "fraud", "legit", threshold=0.8)
    assert sum(1 for y, p, s in events if p == "legit" and s is not None and s > 0.5) > 100
    m = BinaryMetrics()
    for e in events:
        m.update(*e)
    assert m.positive == "fraud"


def test_binary_named_labels_without_scores_leave_positive_metrics_out():
    m = BinaryMetrics()
    for y, p, _ in binary_stream(7, 200, "fraud", "legit"):
        m.update(y, p)
    assert m.positive is None
    assert set(m.get()) == {"accuracy", "n"}
    m.update("fraud", "fraud", 0.9)
    assert m.positive == "fraud"
    assert {"precision", "recall", "f1", "log_loss"} <= set(m.get())


def test_binary_one_predicted_label_below_half_makes_the_other_positive():
    m = BinaryMetrics()
    m.update("legit", "legit", 0.2)
    assert m.positive is None  # no other label seen yet
    m.update("fraud", "legit", 0.4)
    assert m.positive == "fraud"
    assert m.get()["recall"] == 0.0  # a missed fraud is visible before any is predicted


@given(
    st.lists(
        st.tuples(
            st.booleans(),
            st.booleans(),
            st.one_of(st.none(), st.floats(0.0, 1.0), st.sampled_from([0.0, 0.25, 0.5, 1.0])),
        ),
        max_size=120,
    ),
    st.sampled_from([1, 7, 1000]),
)
@settings(max_examples=150, deadline=None)
def test_binary_matches_river_on_any_stream(events, bins):
    check_binary_against_river(events, True, bins=bins)


def test_binned_auc_is_exact_for_scores_coarser_than_the_bins():
    rng = random.Random(11)
    events = [
        (y, y, round(rng.random() * 0.6 + 0.4 * y, 2))
        for y in (rng.random() < 0.4 for _ in range(3000))
    ]
    _, exact, errors = check_binary_against_river(events, True)
    assert exact.same_bin > 0  # many exact ties, each counted 1/2 by both
    assert max(errors) <= 1e-12


def test_binned_auc_error_is_small_and_within_bound_on_continuous_scores():
    _, exact, errors = check_binary_against_river(binary_stream(13, 4000), True)
    # The class densities here stay below 2.1 (a normal with sigma 0.2 peaks at
    # 2.0, clipping adds point masses at 0 and 1 that fall in one bin each), so
    # once the sample is large the bound D / (2 * bins) is about 0.001.
    assert exact.bound() < 0.0011
    assert max(errors[1000:]) < 0.0011


def test_binary_undefined_values_follow_river():
    m = BinaryMetrics()
    assert m.get() == {"n": 0}
    m.update(False, False)
    assert m.get() == {"accuracy": 1.0, "precision": 0.0, "recall": 0.0, "f1": 0.0, "n": 1}
    m.update(False, False, 0.3)
    assert "roc_auc" not in m.get()  # one class only: undefined, not river's 0
    assert m.get()["log_loss"] == pytest.approx(-math.log(0.7))
    m.update(True, False, 0.6)
    assert m.get()["roc_auc"] == 1.0


def test_labels_compare_by_value():
    m = BinaryMetrics()
    pairs = [
        (True, 1),
        ("1", True),
        (1.0, "true"),
        (" TRUE ", 1),
        (0, False),
        ("0", 0.0),
        ("false", "0"),
    ]
    for y, p in pairs:
        assert m.update(y, p) == 0.0, (y, p)
    assert m.update(True, 0) == 1.0
    assert m.labels == [1, 0]
    assert m.get()["recall"] == pytest.approx(4 / 5)
    assert canonical_label("fraud") == "fraud" and canonical_label("Fraud") != "fraud"


def test_configured_positive_never_seen_gives_zero_recall_and_no_auc():
    m = BinaryMetrics(positive_label="fraud")
    for _ in range(3):
        m.update("legit", "legit", 0.1)
    got = m.get()
    assert got["precision"] == got["recall"] == got["f1"] == 0.0
    assert "roc_auc" not in got
    assert got["log_loss"] == pytest.approx(-math.log(0.9))


def test_scores_outside_unit_interval_are_clipped_and_nan_ignored():
    a, b = BinaryMetrics(), BinaryMetrics()
    for (y, s_raw), s_clean in zip(
        [(True, 1.5), (False, -0.2), (True, float("nan")), (False, 0.3)],
        [1.0, 0.0, None, 0.3],
        strict=True,
    ):
        a.update(y, y, s_raw)
        b.update(y, y, s_clean)
    assert a.get() == b.get()


# -- multiclass -----------------------------------------------------------


def multiclass_stream(seed, n, classes=5, with_probs=0.8):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        y = rng.randrange(classes)
        raw = [rng.random() + (2.0 if c == y else 0.0) * rng.random() for c in range(classes)]
        total = sum(raw)
        probs = {c: r / total for c, r in enumerate(raw)}
        pred = max(probs, key=probs.__getitem__)
        out.append((y, pred, probs if rng.random() < with_probs else None))
    return out


def test_multiclass_matches_river_after_every_update():
    m = MulticlassMetrics()
    acc, f1, ce = rm.Accuracy(), rm.MacroF1(), rm.CrossEntropy()
    for i, (y, pred, probs) in enumerate(multiclass_stream(17, 4000)):
        # Outcomes are ints while probability keys are JSON strings: matched by value.
        keyed = None if probs is None else {str(c): p for c, p in probs.items()}
        assert m.update(y, pred, keyed) == float(y != pred)
        acc.update(y, pred)
        f1.update(y, pred)
        if probs is not None:
            ce.update(y, probs)
        want = {"accuracy": acc.get(), "macro_f1": f1.get(), "n": i + 1}
        if ce._mean.n:
            want["log_loss"] = ce.get()
        assert_close(m.get(), want, f"event {i}")


@given(
    st.lists(st.tuples(st.sampled_from("abcd"), st.sampled_from("abcde")), min_size=1, max_size=80)
)
@settings(max_examples=150, deadline=None)
def test_multiclass_matches_river_on_any_stream(events):
    m, acc, f1 = MulticlassMetrics(), rm.Accuracy(), rm.MacroF1()
    for i, (y, pred) in enumerate(events):
        m.update(y, pred)
        acc.update(y, pred)
        f1.update(y, pred)
        assert_close(
            m.get(), {"accuracy": acc.get(), "macro_f1": f1.get(), "n": i + 1}, f"event {i}"
        )


def test_multiclass_missing_true_class_costs_minus_log_eps():
    m = MulticlassMetrics()
    m.update("dog", "cat", {"cat": 0.9, "bird": 0.1})
    assert m.get()["log_loss"] == pytest.approx(-math.log(EPS))


def test_label_slots_are_capped():
    m = MulticlassMetrics()
    for i in range(MAX_LABELS + 50):
        m.update(f"label-{i}", "x")
    assert len(m.labels) == MAX_LABELS + 1  # the last slot is the shared overflow
    assert m.get()["n"] == MAX_LABELS + 50


# -- regression -----------------------------------------------------------


def regression_stream(seed, n):
    rng = random.Random(seed)
    return [(t, t + rng.gauss(0.1, 1.0)) for t in (rng.gauss(5, 3) for _ in range(n))]


def test_regression_matches_river_after_every_update():
    m, mae, rmse, bias = RegressionMetrics(), rm.MAE(), rm.RMSE(), stats.Mean()
    for i, (y, pred) in enumerate(regression_stream(19, 4000)):
        assert m.update(y, pred) == abs(pred - y)
        mae.update(y, pred)
        rmse.update(y, pred)
        bias.update(pred - y)
        want = {"mae": mae.get(), "rmse": rmse.get(), "mean_error": bias.get(), "n": i + 1}
        assert_close(m.get(), want, f"event {i}")


@given(st.lists(st.tuples(st.floats(-1e6, 1e6), st.floats(-1e6, 1e6)), min_size=1, max_size=80))
@settings(max_examples=150, deadline=None)
def test_regression_matches_river_on_any_stream(events):
    m, mae, rmse = RegressionMetrics(), rm.MAE(), rm.RMSE()
    for i, (y, pred) in enumerate(events):
        m.update(y, pred)
        mae.update(y, pred)
        rmse.update(y, pred)
        got = m.get()
        assert math.isclose(got["mae"], mae.get(), rel_tol=1e-9, abs_tol=1e-6), f"event {i}"
        assert math.isclose(got["rmse"], rmse.get(), rel_tol=1e-9, abs_tol=1e-6), f"event {i}"


# -- rolling --------------------------------------------------------------


def check_rolling(task, events, window, positive_label=None):
    """After every update, the rolling metrics equal fresh metrics on the last ``window`` events."""
    rolling = make_metrics(task, window, positive_label)
    assert isinstance(rolling, RollingMetrics)
    last: deque = deque(maxlen=window)
    for i, event in enumerate(events):
        rolling.update(*event)
        last.append(event)
        fresh = make_metrics(task, None, positive_label)
        for e in last:
            fresh.update(*e)
        assert rolling.n == len(last)
        assert_close(rolling.get(), fresh.get(), f"event {i}")
    return rolling


@pytest.mark.parametrize("window", [1, 7, 100])
def test_rolling_binary_equals_recomputation(window):
    # 3000 events: with window 7 the log-loss sums are re-summed several times.
    check_rolling("binary", binary_stream(23, 3000, 1, 0), window)


def test_rolling_binary_named_labels_equals_recomputation():
    check_rolling("binary", binary_stream(29, 1500, "fraud", "legit"), 50, positive_label="fraud")


@pytest.mark.parametrize("window", [1, 7, 100])
def test_rolling_multiclass_equals_recomputation(window):
    check_rolling("multiclass", multiclass_stream(31, 2000), window)


@pytest.mark.parametrize("window", [1, 7, 100])
def test_rolling_regression_equals_recomputation(window):
    check_rolling("regression", regression_stream(37, 3000), window)


@given(
    st.lists(
        st.tuples(st.booleans(), st.booleans(), st.one_of(st.none(), st.floats(0.0, 1.0))),
        max_size=100,
    ),
    st.integers(1, 12),
)
@settings(max_examples=100, deadline=None)
def test_rolling_binary_equals_recomputation_on_any_stream(events, window):
    check_rolling("binary", events, window)


def test_rolling_regression_recovers_from_a_huge_error_leaving_the_window():
    window = 50
    events = regression_stream(41, 400)
    events[10] = (0.0, 1e15)  # its sum would swallow every small error added after it
    rolling = make_metrics("regression", window)
    for i, event in enumerate(events):
        rolling.update(*event)
        if i >= 2 * window and (i + 1) % window == 0:  # just re-summed
            errors = [p - y for y, p in events[i + 1 - window : i + 1]]
            assert rolling.get()["mae"] == pytest.approx(sum(map(abs, errors)) / window, rel=1e-12)


def test_rolling_keeps_its_inferred_positive_class():
    rolling = make_metrics("binary", 3)
    rolling.update("fraud", "fraud", 0.9)
    for _ in range(5):
        rolling.update("legit", "legit", 0.1)
    # The window now holds only "legit"; the evidence that "fraud" is positive stays.
    assert rolling.metrics.positive == "fraud"
    assert rolling.get()["recall"] == 0.0


def test_rolling_mean_equals_recomputation():
    rng = random.Random(43)
    window = 37
    r = RollingMean(window)
    last: deque = deque(maxlen=window)
    for i in range(3000):
        x = 1e12 if i == 100 else rng.choice([0.0, 1.0, 0.5, rng.random()])
        r.update(x)
        last.append(x)
        assert r.n == len(last) and r.full == (len(last) == window)
        if i < 100 or i >= 100 + 2 * window:  # the 1e12 outlier is re-summed away by then
            assert r.mean == pytest.approx(math.fsum(last) / len(last), rel=1e-12), f"event {i}"
    assert RollingMean(3).mean == 0.0


def test_windows_must_be_positive():
    with pytest.raises(ValueError, match="window must be at least 1"):
        RollingMean(0)
    with pytest.raises(ValueError, match="window must be at least 1"):
        make_metrics("binary", 0)


# -- factory, pickling ----------------------------------------------------


def test_make_metrics_builds_the_task_set():
    assert isinstance(make_metrics("binary", None), BinaryMetrics)
    assert isinstance(make_metrics("multiclass", None), MulticlassMetrics)
    assert isinstance(make_metrics("regression", 10).metrics, RegressionMetrics)
    assert make_metrics("binary", None, positive_label="yes").positive_label == "yes"
    with pytest.raises(ValueError, match="unknown task 'ranking'"):
        make_metrics("ranking", None)


@pytest.mark.parametrize(
    ("task", "window", "events"),
    [
        ("binary", None, binary_stream(47, 1200, "fraud", "legit")),
        ("binary", 40, binary_stream(53, 1200, 1, 0)),
        ("multiclass", None, multiclass_stream(59, 1200)),
        ("multiclass", 40, multiclass_stream(61, 1200)),
        ("regression", None, regression_stream(67, 1200)),
        ("regression", 40, regression_stream(71, 1200)),
    ],
)
def test_pickle_round_trip_continues_identically(task, window, events):
    m = make_metrics(task, window)
    for e in events[:500]:
        m.update(*e)
    copy = pickle.loads(pickle.dumps(m))
    assert copy.get() == m.get()
    for i, e in enumerate(events[500:]):
        assert copy.update(*e) == m.update(*e)
        assert copy.get() == m.get(), f"event {500 + i}"


def test_rolling_mean_pickles():
    r = RollingMean(5)
    for x in range(8):
        r.update(float(x))
    copy = pickle.loads(pickle.dumps(r))
    for x in range(8, 20):
        r.update(x / 3)
        copy.update(x / 3)
        assert copy.mean == r.mean


@pytest.mark.parametrize("window", [1, 7, 100])
def test_deferred_push_reads_the_same_as_eager_update(window):
    rng = random.Random(window)
    eager = RollingMetrics(BinaryMetrics(), window)
    lazy = RollingMetrics(BinaryMetrics(), window)
    for i in range(3 * window + 50):
        y, p, s = rng.random() < 0.3, rng.random() < 0.4, rng.random()
        eager.update(y, p, s)
        lazy.push(y, p, s)
        if rng.random() < 0.1 or i % (2 * window + 1) == 0:
            assert lazy.get() == pytest.approx(eager.get())
            assert lazy.n == eager.n
    assert lazy.get() == pytest.approx(eager.get())

"""DistributionTracker: quiet on stable streams, fast to see real shifts, exact binning."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from dataclasses import replace
from decimal import Decimal
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.core.config import DistributionDriftConfig
from driftline.core.distribution import ColumnReference, DistributionTracker
from driftline.core.stats import chi2_homogeneity, chi2_sf, psi

DEFAULTS = DistributionDriftConfig()
COUNTRIES = ["fr", "de", "us", "uk", "es", "it"]
COUNTRY_P = [0.3, 0.25, 0.2, 0.1, 0.1, 0.05]


def make_records(
    n: int,
    seed: int,
    *,
    mean_shift: dict[str, float] | None = None,
    missing: dict[str, float] | None = None,
    country_p: list[float] | None = None,
) -> list[dict[str, object]]:
    """20 features of the kinds real models see, as JSON-decoded Python values."""
    rng = np.random.default_rng(seed)
    mean_shift = mean_shift or {}
    missing = {"sometimes_missing": 0.05, **(missing or {})}
    cols: dict[str, list[object]] = {}
    for i in range(12):  # gaussian, various means and spreads
        sd = 1.0 + i % 3
        cols[f"num{i}"] = rng.normal(i + mean_shift.get(f"num{i}", 0.0) * sd, sd, n).tolist()
    cols["lognormal"] = rng.lognormal(0.0, 1.0, n).tolist()
    cols["count"] = rng.poisson(3, n).tolist()  # ints
    zero = rng.random(n) < 0.7
    cols["zero_inflated"] = np.where(zero, 0.0, rng.exponential(50.0, n)).tolist()
    cols["flag"] = (rng.random(n) < 0.1).astype(int).tolist()
    cols["country"] = rng.choice(COUNTRIES, p=country_p or COUNTRY_P, size=n).tolist()
    cols["device"] = rng.choice(["ios", "android", "web"], size=n).tolist()
    cols["is_member"] = (rng.random(n) < 0.3).tolist()  # bools: categorical
    cols["sometimes_missing"] = rng.normal(100.0, 15.0, n).tolist()
    for name, rate in missing.items():
        gone = rng.random(n) < rate
        cols[name] = [None if g else v for g, v in zip(gone.tolist(), cols[name], strict=True)]
    names = list(cols)
    return [dict(zip(names, row, strict=True)) for row in zip(*cols.values(), strict=True)]


def run(tracker, records, start=0):
    """(index, check) for every check the records produce."""
    out = []
    for i, r in enumerate(records, start=start):
        check = tracker.update(r, float(i))
        if check is not None:
            out.append((i, check))
    return out


def first_drift(checks):
    return next(((i, c) for i, c in checks if c.drifted), (None, None))


SHIFT_AT = DEFAULTS.reference_size + 3000  # a chunk boundary
FULL = SHIFT_AT + DEFAULTS.window - 1  # first check whose window is all shifted data


def shifted_stream(**shift):
    return make_records(SHIFT_AT, seed=1) + make_records(DEFAULTS.window * 3, seed=2, **shift)


def test_features_have_the_intended_kinds():
    tracker = DistributionTracker(DEFAULTS)
    run(tracker, make_records(DEFAULTS.reference_size, seed=0))
    kinds = {name: ref.kind for name, ref in tracker.references.items()}
    assert len(kinds) == 20
    assert {n for n, k in kinds.items() if k == "categorical"} == {
        "country",
        "device",
        "is_member",
    }
    assert tracker.references["sometimes_missing"].missing_rate == pytest.approx(0.05, abs=0.015)
    # zero is 70 % of zero_inflated, 90 % of flag: each gets a bin of its own
    assert "= 0" in tracker.references["zero_inflated"].labels()
    assert tracker.references["flag"].labels() == ["< 0", "= 0", "> 0", "other", "missing"]


@pytest.mark.slow
def test_no_false_alarm_on_200k_stable_records_with_20_features():
    tracker = DistributionTracker(DEFAULTS)
    checks = run(tracker, make_records(200_000, seed=11))
    assert len(checks) == (200_000 - DEFAULTS.reference_size - DEFAULTS.window) // 500 + 1
    assert [i for i, c in checks if c.drifted] == []
    assert max(c.max_psi for _, c in checks) < DEFAULTS.psi_threshold / 2


def test_mean_shift_of_half_a_standard_deviation_in_one_of_20_features():
    checks = run(DistributionTracker(DEFAULTS), shifted_stream(mean_shift={"num4": 0.5}))
    index, check = first_drift(checks)
    assert index is not None
    assert SHIFT_AT <= index <= FULL
    assert check.drifted == ["num4"]
    result = next(r for r in check.results if r.name == "num4")
    assert result.kind == "numeric"
    assert result.window_mean - result.reference_mean == pytest.approx(0.5 * 2.0, abs=0.2)
    # A 0.5 sd shift has a PSI of about 0.24 over deciles, near the 0.2 threshold:
    # most checks of a fully shifted window see it, none blames another feature.
    full = [c.drifted for i, c in checks if i >= FULL]
    assert full.count(["num4"]) >= 0.75 * len(full)
    assert all(d in ([], ["num4"]) for d in full)


def test_missing_rate_jump_is_drift():
    checks = run(DistributionTracker(DEFAULTS), shifted_stream(missing={"num7": 0.3}))
    index, check = first_drift(checks)
    assert SHIFT_AT <= index <= FULL
    assert check.drifted == ["num7"]
    result = next(r for r in check.results if r.name == "num7")
    assert result.missing_rate_reference == 0.0
    assert result.missing_rate_window > 0.05
    full = next(c for i, c in checks if i == FULL)
    r = next(r for r in full.results if r.name == "num7")
    assert r.missing_rate_window == pytest.approx(0.3, abs=0.03)


def test_categorical_shift_is_drift():
    checks = run(
        DistributionTracker(DEFAULTS),
        shifted_stream(country_p=[0.1, 0.15, 0.2, 0.2, 0.2, 0.15]),
    )
    index, check = first_drift(checks)
    assert SHIFT_AT <= index <= FULL
    assert check.drifted == ["country"]
    result = next(r for r in check.results if r.name == "country")
    assert result.kind == "categorical"
    assert result.window_mean is None and result.reference_mean is None


def test_score_shift_is_prediction_drift():
    rng = np.random.default_rng(5)
    scores = rng.beta(2.0, 5.0, SHIFT_AT).tolist() + rng.beta(3.0, 5.0, 6000).tolist()
    tracker = DistributionTracker(DEFAULTS, columns=["score"])
    checks = run(tracker, [{"score": s} for s in scores])
    index, check = first_drift(checks)
    assert SHIFT_AT <= index <= FULL
    assert check.drifted == ["score"]


def test_predicted_label_shift_is_prediction_drift():
    rng = np.random.default_rng(6)
    labels = rng.choice(["cat", "dog"], SHIFT_AT).tolist()
    labels += rng.choice(["cat", "dog"], 6000, p=[0.8, 0.2]).tolist()
    checks = run(DistributionTracker(DEFAULTS), [{"prediction": y} for y in labels])
    index, check = first_drift(checks)
    assert SHIFT_AT <= index <= FULL
    assert check.drifted == ["prediction"]
    assert not any(c.drifted for i, c in checks if i < SHIFT_AT)


def test_check_fields_and_agreement_with_the_stats_functions():
    cfg = replace(DEFAULTS, reference_size=1000, window=1000, every=250)
    tracker = DistributionTracker(cfg)
    records = make_records(3000, seed=4)
    checks = run(tracker, records)
    assert [i for i, _ in checks] == [1999, 2249, 2499, 2749, 2999]
    _, check = checks[-1]
    assert (check.window_start, check.window_end, check.event_time) == (2000.0, 2999.0, 2999.0)
    assert (check.window_events, check.reference_events) == (1000, 1000)
    assert check.new_columns == ()
    assert check.max_psi == max(r.psi for r in check.results)
    window = tracker.histogram(records[2000:3000])
    start = 0
    for r in check.results:
        ref = tracker.references[r.name]
        counts = window[start : start + ref.n_bins]
        start += ref.n_bins
        assert r.psi == pytest.approx(psi(ref.counts, counts), rel=1e-9, abs=1e-12)
        stat, df = chi2_homogeneity(ref.counts, counts)
        assert (r.statistic, r.df) == (pytest.approx(stat, rel=1e-9, abs=1e-9), df)
        assert r.p_value == pytest.approx(chi2_sf(stat, df) if df else 1.0, rel=1e-9)
        assert r.missing_rate_window == counts[ref.missing_bin] / 1000
        if r.kind == "numeric":
            values = [x[r.name] for x in records[2000:3000] if x[r.name] is not None]
            assert r.window_mean == pytest.approx(np.mean(values), rel=1e-12)
            assert r.reference_mean == pytest.approx(
                np.mean([x[r.name] for x in records[:1000] if x[r.name] is not None]), rel=1e-12
            )
    assert start == window.size
    assert tracker.n_seen == 3000 and tracker.frozen


def test_column_reference_edge_cases():
    # ties among categories keep their order of first appearance; NaN is missing
    ref = ColumnReference.from_values("c", ["b", "a", "a", "b", "c", math.nan, None], bins=3)
    assert ref.categories == ("b", "a")
    assert ref.counts.tolist() == [2, 2, 1, 2]
    # bool is a category, never a number
    assert ColumnReference.from_values("b", [True, False, 1.5], bins=4).kind == "categorical"
    # a column never present in the reference: one bin for any number, all missing
    empty = ColumnReference.from_values("e", [None, None], bins=10)
    assert (empty.kind, empty.labels(), empty.missing_rate) == (
        "numeric",
        ["any number", "other", "missing"],
        1.0,
    )
    assert empty.expected.tolist() == [0.0, 0.0, 1.0]


def test_window_is_a_whole_number_of_chunks():
    cfg = replace(DEFAULTS, reference_size=100, window=1000, every=300)
    checks = run(
        DistributionTracker(cfg, columns=["x"]), [{"x": float(i % 7)} for i in range(2000)]
    )
    assert checks[0][0] == 100 + 900 - 1
    assert {c.window_events for _, c in checks} == {900}


def test_constant_column_is_not_tested_until_it_varies():
    cfg = replace(DEFAULTS, reference_size=500, window=500, every=500)
    tracker = DistributionTracker(cfg)
    records = [{"const": 1.0, "x": float(i % 10)} for i in range(1000)]
    ((_, check),) = run(tracker, records)
    const = check.results[0]
    assert (const.name, const.p_value, const.df, const.drifted) == ("const", 1.0, 0, False)
    # the reference was constant; a window that leaves the constant is visible
    ((_, check),) = run(tracker, [{"const": 2.0, "x": float(i % 10)} for i in range(500)], 1000)
    assert check.drifted == ["const"]


def test_wrong_kinds_count_as_other_and_unknown_keys_are_reported():
    cfg = replace(DEFAULTS, reference_size=200, window=200, every=100)
    tracker = DistributionTracker(cfg)
    run(tracker, [{"x": float(i), "c": "ab"[i % 2]} for i in range(200)])
    x_ref = tracker.references["x"]
    odd = [{"x": "12.5", "c": "a"}, {"x": True, "c": ["unhashable"]}, {"x": 10**400, "c": None}]
    odd += [{"x": math.nan, "c": math.nan, "extra": 1}, None, {"c": "zzz"}]
    counts = tracker.histogram(odd)
    x_counts = counts[: x_ref.n_bins]
    c_counts = counts[x_ref.n_bins :]
    assert x_counts[x_ref.other_bin] == 2  # "12.5" and True
    assert x_counts[x_ref.missing_bin] == 3  # NaN, None record, absent key
    assert x_counts[x_ref.n_value_bins - 1] == 1  # 10**400 is +inf: the top bin
    c_ref = tracker.references["c"]
    assert c_counts[c_ref.other_bin] == 2  # unhashable, unseen "zzz"
    assert c_counts[c_ref.missing_bin] == 3
    checks = run(tracker, odd * 100, start=200)
    assert checks and all(c.new_columns == ("extra",) for _, c in checks)
    assert {r.name for r in checks[-1][1].results} == {"x", "c"}
    assert "x" in checks[-1][1].drifted


def test_many_bins_match_the_naive_count():
    """More than 126 edges: the per-chunk counters widen from int8 to int16."""
    cfg = replace(DEFAULTS, reference_size=3000, bins=300)
    rng = np.random.default_rng(8)
    tracker = DistributionTracker(cfg, columns=["x"])
    run(tracker, [{"x": v} for v in rng.normal(size=3000).tolist()])
    ref = tracker.references["x"]
    assert ref.n_value_bins > 200
    window = [{"x": v} for v in rng.normal(0.1, 1.2, size=1000).tolist()]
    naive = np.bincount([ref.bin_of(r["x"]) for r in window], minlength=ref.n_bins)
    assert tracker.histogram(window).tolist() == naive.tolist()


def test_bools_hiding_among_zeros_and_ones_are_caught():
    """The fast conversion accepts bools as 0.0 and 1.0; they must still count as other."""
    cfg = replace(DEFAULTS, reference_size=4, window=4, every=4)
    tracker = DistributionTracker(cfg, columns=["x", "y"])
    run(tracker, [{"x": float(i), "y": i} for i in range(4)])
    x, y = tracker.references["x"], tracker.references["y"]
    counts = tracker.histogram([{"x": 1.0, "y": 0}, {"x": True, "y": 1}, {"x": 0, "y": False}])
    assert counts[x.other_bin] == 1
    assert counts[x.n_bins + y.other_bin] == 1
    assert counts.sum() == 6


def test_pickle_round_trip_mid_stream_continues_identically():
    cfg = replace(DEFAULTS, reference_size=1000, window=1000, every=250)
    records = shifted_stream(mean_shift={"num1": 1.0})[:8000]
    for cut in (400, 3100):  # inside the reference, then mid-chunk after it
        straight = DistributionTracker(cfg)
        resumed = DistributionTracker(cfg)
        before = run(resumed, records[:cut])
        resumed = pickle.loads(pickle.dumps(resumed))
        after = run(resumed, records[cut:], start=cut)
        assert before + after == run(straight, records)
        assert any(c.drifted for _, c in after)


def test_values_none_counts_every_column_missing():
    cfg = replace(DEFAULTS, reference_size=10, window=10, every=10)
    tracker = DistributionTracker(cfg, columns=["a", "b"])
    run(tracker, [{"a": 1.0, "b": "x"}] * 10)
    counts = tracker.histogram([None])
    a, b = tracker.references["a"], tracker.references["b"]
    assert counts[a.missing_bin] == 1 and counts[a.n_bins + b.missing_bin] == 1
    assert counts.sum() == 2


def test_core_imports_no_streaming_library():
    code = (
        "import sys, driftline.core.distribution, driftline.core.stats;"
        "assert not {'faust', 'aiokafka'} & set(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# --- the vectorized chunk binning equals the per-record definition ---------------

scalar = st.one_of(
    st.none(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**20), 10**20),
    st.sampled_from([0, 1, 2, 0.0, 1.0, -0.0, 10**400, -(10**400)]),
    st.booleans(),
    st.sampled_from(["a", "b", "c", "12.5", ""]),
    st.just(["unhashable"]),
    st.sampled_from(
        [Decimal("2.5"), Decimal("nan"), Fraction(1, 3), complex(1, 2), b"1.5", bytearray(b"2")]
    ),
    st.sampled_from([np.float32(1.5), np.int64(3), np.bool_(True), np.float64("nan")]),
)
numbers = st.one_of(
    st.none(),
    st.floats(-1e6, 1e6),
    st.integers(-50, 50),
    st.sampled_from([math.nan, 0.0, 1.0, 0, 1, np.int64(7), Decimal("2.5")]),
)
COLUMNS = ["n1", "n2", "n3", "c1", "c2"]


@st.composite
def references(draw):
    refs = {}
    for name in COLUMNS:
        pool = numbers if name.startswith("n") else st.one_of(numbers, scalar)
        size = draw(st.integers(1, 40))
        refs[name] = draw(st.lists(pool, min_size=size, max_size=size))
    return refs


record = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from([*COLUMNS, "other_key"]), st.one_of(numbers, scalar)),
)


@given(references(), st.lists(record, min_size=1, max_size=60), st.integers(2, 12))
@settings(max_examples=300, deadline=None)
def test_chunk_counts_equal_naive_per_record_counts(ref_values, records, bins):
    cfg = replace(DEFAULTS, reference_size=40, bins=bins)
    tracker = DistributionTracker(cfg, columns=COLUMNS)
    ref_records = [
        {name: values[i % len(values)] for name, values in ref_values.items()} for i in range(40)
    ]
    run(tracker, ref_records)
    counts = tracker.histogram(records)
    expected = []
    for name in COLUMNS:
        ref = tracker.references[name]
        naive = np.zeros(ref.n_bins, dtype=np.int64)
        for r in records:
            naive[ref.bin_of(None if r is None else r.get(name))] += 1
        expected.append(naive)
        values = [None if r is None else r.get(name) for r in records]
        assert ref.bin_indices(values).tolist() == [ref.bin_of(v) for v in values]
    assert counts.tolist() == np.concatenate(expected).tolist()
    # the reference histogram is the same binning applied to the reference
    assert np.concatenate([tracker.references[c].counts for c in COLUMNS]).tolist() == (
        tracker.histogram(ref_records).tolist()
    )

"""chi2_sf against closed forms and table values; psi; BH against its definition."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.core.stats import (
    PSI_EPSILON,
    benjamini_hochberg,
    chi2_homogeneity,
    chi2_sf,
    psi,
    upper_gamma_q,
)


def exact_chi2_sf(x: float, df: int) -> float:
    """Closed forms of Q(df/2, x/2), summed in log space with fsum.

    Even df = 2k: Q = exp(-z) * sum_{i<k} z^i / i!  (the Poisson tail).
    Odd df = 2k+1: Q = erfc(sqrt z) + sum_{i<k} z^(i+1/2) exp(-z) / Gamma(i+3/2),
    from Q(a+1, z) = Q(a, z) + z^a exp(-z) / Gamma(a+1) and Q(1/2, z) = erfc(sqrt z).
    """
    z = x / 2.0
    lz = math.log(z)
    if df % 2 == 0:
        return math.fsum(math.exp(-z + i * lz - math.lgamma(i + 1)) for i in range(df // 2))
    terms = [math.erfc(math.sqrt(z))]
    terms += [math.exp(-z + (i + 0.5) * lz - math.lgamma(i + 1.5)) for i in range(df // 2)]
    return math.fsum(terms)


DFS = [1, 2, 3, 4, 5, 7, 9, 10, 11, 19, 20, 30, 49, 50, 99, 100, 199, 200, 401]
FACTORS = [0.001, 0.05, 0.3, 0.7, 0.9, 1.0, 1.1, 1.3, 2.0, 3.0, 5.0, 10.0]


@pytest.mark.parametrize("df", DFS)
def test_chi2_sf_matches_closed_forms_to_1e10_relative(df):
    worst = 0.0
    for f in FACTORS:
        for x in (df * f, df * f + 2.0):
            expected = exact_chi2_sf(x, df)
            if expected < 1e-290:  # beyond double range for either side
                continue
            got = chi2_sf(x, df)
            worst = max(worst, abs(got - expected) / expected)
    assert worst < 1e-10


@pytest.mark.parametrize(
    ("x", "df"), [(1399.0, 60), (1401.0, 60), (1500.0, 59), (1300.0, 61), (150.0, 61)]
)
def test_chi2_sf_either_side_of_the_switch_between_methods(x, df):
    assert chi2_sf(x, df) == pytest.approx(exact_chi2_sf(x, df), rel=1e-10)


@pytest.mark.parametrize("df", DFS)
def test_general_incomplete_gamma_agrees_with_the_closed_forms(df):
    """chi2_sf uses finite sums up to 60 df; the series and fraction must agree with them."""
    for f in FACTORS:
        for x in (df * f, df * f + 2.0):
            expected = exact_chi2_sf(x, df)
            if expected > 1e-290:
                assert upper_gamma_q(df / 2, x / 2) == pytest.approx(expected, rel=1e-10)


@given(a=st.floats(0.05, 300.0), z=st.floats(1e-3, 1e3))
@settings(max_examples=300, deadline=None)
def test_incomplete_gamma_recurrence(a, z):
    """Q(a + 1, z) = Q(a, z) + z^a e^-z / Gamma(a + 1): ties non-integer a to the integer cases."""
    step = math.exp(a * math.log(z) - z - math.lgamma(a + 1))
    lhs = upper_gamma_q(a + 1, z)
    assert lhs == pytest.approx(upper_gamma_q(a, z) + step, rel=1e-10, abs=1e-300)


@pytest.mark.parametrize(
    ("df", "alpha", "critical"),
    [  # printed chi-square table (critical values to three decimals)
        (1, 0.05, 3.841),
        (2, 0.05, 5.991),
        (5, 0.01, 15.086),
        (9, 0.001, 27.877),
        (10, 0.05, 18.307),
        (20, 0.01, 37.566),
        (30, 0.05, 43.773),
        (100, 0.05, 124.342),
    ],
)
def test_chi2_sf_at_published_critical_values(df, alpha, critical):
    assert chi2_sf(critical, df) == pytest.approx(alpha, rel=1e-3)


def test_chi2_sf_at_a_quantile_known_to_full_precision():
    assert chi2_sf(3.841458820694124, 1) == pytest.approx(0.05, rel=1e-12)
    assert chi2_sf(-2.0 * math.log(0.001), 2) == pytest.approx(0.001, rel=1e-14)


@given(x=st.floats(0.0, 1e4), df=st.integers(1, 500))
@settings(max_examples=300, deadline=None)
def test_chi2_sf_is_a_survival_function(x, df):
    p = chi2_sf(x, df)
    assert 0.0 <= p <= 1.0
    assert chi2_sf(x * 1.01 + 0.01, df) <= p * (1 + 1e-13)
    if df > 1:
        assert chi2_sf(x, df - 1) <= p + 1e-15  # more degrees of freedom, heavier tail


def test_chi2_sf_edges():
    assert chi2_sf(0.0, 5) == 1.0
    assert chi2_sf(-3.0, 5) == 1.0
    assert chi2_sf(math.inf, 5) == 0.0
    assert chi2_sf(-math.inf, 5) == 1.0
    assert chi2_sf(5e-324, 1) == 1.0
    assert math.isnan(chi2_sf(math.nan, 5))
    assert chi2_sf(1e6, 10) == 0.0
    with pytest.raises(ValueError, match="degrees of freedom"):
        chi2_sf(1.0, 0)


def brute_force_contingency(a, b):
    """Textbook Pearson statistic of the 2 x k table, columns with no counts dropped."""
    table = [(x, y) for x, y in zip(a, b, strict=True) if x + y > 0]
    rows = [sum(x for x, _ in table), sum(y for _, y in table)]
    n = sum(rows)
    stat = 0.0
    for col in table:
        col_total = sum(col)
        for r in range(2):
            expected = rows[r] * col_total / n
            stat += (col[r] - expected) ** 2 / expected
    return stat, len(table) - 1


@given(
    st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500)), min_size=1, max_size=15).filter(
        lambda t: sum(x for x, _ in t) > 0 and sum(y for _, y in t) > 0
    )
)
@settings(max_examples=200, deadline=None)
def test_chi2_homogeneity_matches_the_textbook_table(pairs):
    a = [x for x, _ in pairs]
    b = [y for _, y in pairs]
    stat, df = chi2_homogeneity(a, b)
    expected_stat, expected_df = brute_force_contingency(a, b)
    if expected_df < 1:
        assert (stat, df) == (0.0, max(expected_df, 0))
    else:
        assert df == expected_df
        assert stat == pytest.approx(expected_stat, rel=1e-9, abs=1e-9)


def test_psi_known_values():
    assert psi([1, 1, 1], [1, 1, 1]) == 0.0
    assert psi([0.5, 0.5], [0.6, 0.4]) == pytest.approx(0.1 * math.log(1.2) - 0.1 * math.log(0.8))
    # counts or proportions: same answer
    assert psi([50, 50], [60, 40]) == pytest.approx(psi([0.5, 0.5], [0.6, 0.4]))
    # an empty bin is floored at PSI_EPSILON, not infinite
    expected = (0.1 - PSI_EPSILON) * math.log(0.1 / PSI_EPSILON) + 0.1 * math.log(1.0 / 0.9)
    assert psi([90, 10], [100, 0]) == pytest.approx(expected)


@given(
    st.lists(st.tuples(st.integers(0, 100), st.integers(0, 100)), min_size=2, max_size=12).filter(
        lambda t: sum(x for x, _ in t) > 0 and sum(y for _, y in t) > 0
    )
)
@settings(max_examples=200, deadline=None)
def test_psi_is_symmetric_and_non_negative(pairs):
    a = [x for x, _ in pairs]
    b = [y for _, y in pairs]
    assert psi(a, b) >= 0.0
    assert psi(a, b) == pytest.approx(psi(b, a), rel=1e-12, abs=1e-15)


def test_psi_and_chi2_reject_mismatched_bins():
    with pytest.raises(ValueError, match="3 expected bins but 2"):
        psi([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="positive total"):
        psi([0, 0], [1, 2])
    with pytest.raises(ValueError, match="3 reference bins but 2"):
        chi2_homogeneity(np.ones(3), np.ones(2))


def brute_force_bh(p_values, q):
    """BH by its definition: the largest k with at least k p-values <= k q / m."""
    m = len(p_values)
    k_star = max(
        (k for k in range(1, m + 1) if sum(p <= k * q / m for p in p_values) >= k), default=0
    )
    return [k_star > 0 and p <= k_star * q / m for p in p_values]


@given(
    st.lists(
        st.one_of(st.floats(0.0, 1.0), st.sampled_from([0.0, 0.001, 0.01, 0.05, 1.0])),
        max_size=40,
    ),
    st.sampled_from([0.001, 0.01, 0.05, 0.1, 0.5]),
)
@settings(max_examples=400, deadline=None)
def test_benjamini_hochberg_matches_its_definition(p_values, q):
    assert benjamini_hochberg(p_values, q) == brute_force_bh(p_values, q)


def test_benjamini_hochberg_is_between_bonferroni_and_unadjusted():
    rng = np.random.default_rng(3)
    for _ in range(50):
        p = rng.uniform(0, 0.2, size=20).tolist()
        bh = benjamini_hochberg(p, 0.05)
        assert all(b for x, b in zip(p, bh, strict=True) if x <= 0.05 / 20)
        assert not any(b for x, b in zip(p, bh, strict=True) if x > 0.05)

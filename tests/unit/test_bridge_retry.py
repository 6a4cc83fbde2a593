"""Retry classification, Retry-After, and the bounds of the jittered backoff."""

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from driftline.bridges.retry import (
    MAX_RETRY_AFTER,
    RetryPolicy,
    Verdict,
    classify_status,
    parse_retry_after,
)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_is_delivered(status):
    assert classify_status(status) is Verdict.DELIVERED


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_what_time_can_fix_is_retried(status):
    assert classify_status(status) is Verdict.RETRY


@pytest.mark.parametrize(
    "status", [400, 401, 403, 404, 405, 409, 410, 413, 415, 422, 301, 302, 307, 100]
)
def test_what_retrying_cannot_fix_is_refused(status):
    assert classify_status(status) is Verdict.REFUSED


def test_retry_after_in_seconds_or_as_a_date():
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(hours=1), usegmt=True), now) == 0.0


@pytest.mark.parametrize("value", [None, "", "  ", "soon", "nan", "inf", "-inf"])
def test_unusable_retry_after_is_ignored(value):
    assert parse_retry_after(value) is None


def test_retry_after_is_bounded():
    assert parse_retry_after("-5") == 0.0
    assert parse_retry_after("86400") == MAX_RETRY_AFTER


def test_backoff_stays_within_full_jitter_bounds():
    policy = RetryPolicy(base=0.5, cap=30.0)
    rng = random.Random(7)
    for attempt in range(1, 40):
        ceiling = min(30.0, 0.5 * 2 ** (attempt - 1))
        assert policy.ceiling(attempt) == ceiling
        delays = [policy.delay(attempt, rng=rng.random) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
    # Full jitter: the draws spread over the whole range, not around the ceiling.
    draws = [policy.delay(10, rng=rng.random) for _ in range(2000)]
    assert min(draws) < 3.0 and max(draws) > 27.0


def test_backoff_never_overflows():
    policy = RetryPolicy(base=0.5, cap=30.0)
    assert policy.ceiling(1_000_000) == 30.0
    assert policy.delay(1_000_000, rng=lambda: 1.0) == 30.0
    assert policy.ceiling(0) == 0.5


def test_retry_after_is_a_floor_even_above_the_cap():
    policy = RetryPolicy(base=0.1, cap=1.0)
    assert policy.delay(1, retry_after=5.0, rng=lambda: 1.0) == 5.0
    assert policy.delay(20, retry_after=0.2, rng=lambda: 1.0) == 1.0
    assert policy.delay(1, retry_after=1e9, rng=lambda: 0.0) == MAX_RETRY_AFTER


@pytest.mark.parametrize(
    "kwargs", [{"timeout": 0}, {"base": 0}, {"base": 2.0, "cap": 1.0}, {"timeout": -1}]
)
def test_nonsense_policies_are_refused(kwargs):
    with pytest.raises(ValueError, match="retry policy"):
        RetryPolicy(**kwargs)

"""When to try a delivery again, and how long to wait first.

A page that is never delivered is worse than a page delivered late, so a
bridge retries without end what time can fix: rate limiting (429), a
request timeout reported by the server (408), server errors (5xx), and the
network failing (timeouts, refused or reset connections). What time cannot
fix, a request the endpoint understood and refused (400, 401, 403, 404,
413, 422, ...), would block every later alert of its partition forever: it
goes to the dead-letter topic instead, with the endpoint's answer.

Waits use exponential backoff with *full jitter* (a uniform draw between 0
and the exponential ceiling): when an endpoint comes back, the retries of
many partitions and many bridges spread out instead of arriving together.
A ``Retry-After`` from the server is honoured as a lower bound.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = ["MAX_RETRY_AFTER", "RetryPolicy", "Verdict", "classify_status", "parse_retry_after"]

MAX_RETRY_AFTER = 600.0
"""Seconds: a longer ``Retry-After`` is cut to this, so a confused server cannot park a bridge."""

# 4xx answers that mean "not now" rather than "never".
_RETRYABLE_4XX = frozenset({408, 425, 429})


class Verdict(enum.Enum):
    """What an HTTP status means for the alert that was sent."""

    DELIVERED = "delivered"
    RETRY = "retry"
    REFUSED = "refused"


def classify_status(status: int) -> Verdict:
    """2xx delivered; 408, 425, 429 and 5xx retried; anything else refused for good.

    Redirects are refused too: a bridge does not follow them (a client that
    follows a 301 or 302 turns the POST into a body-less GET), so the
    configured URL must be the final one.

    >>> [classify_status(s).value for s in (200, 202, 429, 503, 400, 404, 301)]
    ['delivered', 'delivered', 'retry', 'retry', 'refused', 'refused', 'refused']
    """
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in _RETRYABLE_4XX or 500 <= status < 600:
        return Verdict.RETRY
    return Verdict.REFUSED


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date); None if unusable.

    >>> parse_retry_after("3"), parse_retry_after(" 1.5 "), parse_retry_after("soon")
    (3.0, 1.5, None)
    >>> now = datetime(2024, 1, 1, 12, 0, 0, tzinfo=UTC)
    >>> parse_retry_after("Mon, 01 Jan 2024 12:00:07 GMT", now)
    7.0
    >>> parse_retry_after("Mon, 01 Jan 2024 11:00:00 GMT", now)
    0.0
    """
    if not value or not value.strip():
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


@dataclass(frozen=True)
class RetryPolicy:
    """How long one HTTP attempt may take, and how long to wait before the next.

    ``timeout``: seconds for one whole request (connect, send, answer).
    ``base`` and ``cap``: the wait before retry ``n`` (``n`` = 1 after the
    first failure) is uniform in ``[0, min(cap, base * 2**(n-1))]``.
    """

    timeout: float = 10.0
    base: float = 0.5
    cap: float = 30.0

    def __post_init__(self) -> None:
        if not (self.timeout > 0 and self.base > 0 and self.cap >= self.base):
            raise ValueError(
                f"retry policy needs timeout > 0 and 0 < base <= cap; got timeout={self.timeout},"
                f" base={self.base}, cap={self.cap}"
            )

    def ceiling(self, attempt: int) -> float:
        """The longest wait after failed attempt number ``attempt`` (1-based).

        >>> p = RetryPolicy(base=0.5, cap=30.0)
        >>> [p.ceiling(n) for n in (1, 2, 3, 7, 8, 10_000)]
        [0.5, 1.0, 2.0, 30.0, 30.0, 30.0]
        """
        exponent = max(attempt, 1) - 1
        # 2**exponent grows past any cap long before a float overflows: stop early.
        if exponent >= 64:
            return self.cap
        return min(self.cap, self.base * 2.0**exponent)

    def delay(
        self,
        attempt: int,
        retry_after: float | None = None,
        rng: Callable[[], float] = random.random,
    ) -> float:
        """Seconds to wait after failed attempt ``attempt``: full jitter, at least ``retry_after``.

        >>> p = RetryPolicy(base=1.0, cap=8.0)
        >>> p.delay(3, rng=lambda: 0.5), p.delay(3, rng=lambda: 0.0)
        (2.0, 0.0)
        >>> p.delay(1, retry_after=5.0, rng=lambda: 0.5)
        5.0
        """
        jittered = rng() * self.ceiling(attempt)
        if retry_after is not None:
            return max(jittered, min(retry_after, MAX_RETRY_AFTER))
        return jittered

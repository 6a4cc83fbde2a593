"""Make sure an agent reads every offset of its partitions, in order.

The input and model-events topics are neither compacted nor transactional,
so their offsets have no holes: an agent that sees offset 408 of a
partition right after 345 (or, first after an assignment, after a commit
at 346) has had records skipped by the consumer. Faust 0.15 does that
around a rebalance: records it fetched before seeking a partition to its
committed offset are dropped from the agents' queues, and a batch fetched
from the old position is still handed over after the seek (see
``streaming/seekfirst.py``; ``scripts/scale_out.py`` found it: a worker that
joined started two partitions 62 records past their commit). Worse, Faust
counts the jump as a gap already acknowledged, so the commit moves past
records nobody processed.

:class:`OffsetGuard` notices the jump, has the agent seek back to the
expected offset once, and has it pass over the records that still come
from beyond it until the expected one arrives. So each record is
processed once and in order, which the join's input positions and the
monitors' high-water marks rely on. If the expected offset never comes
back (the records were deleted by retention meanwhile), it says so and
goes on from where the consumer is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger("driftline.worker")

PROCESS = -1
"""Verdict of :meth:`OffsetGuard.admit`: process the record."""
SKIP = -2
"""Verdict: pass over the record (a rewind is under way: it will come again)."""


class OffsetGuard:
    """Per topic partition, the next offset an agent must read; rewinds on a forward jump.

    ``committed`` gives the consumer's committed offset of a partition (the
    next to read), expected of the first record after an assignment.

    >>> guard = OffsetGuard(committed=lambda tp: 10)
    >>> guard.admit("p0", 10), guard.admit("p0", 11)
    (-1, -1)
    >>> guard.admit("p0", 15)  # 12..14 skipped by the consumer: seek back to 12
    12
    >>> guard.admit("p0", 16), guard.admit("p0", 12), guard.admit("p0", 13)
    (-2, -1, -1)
    """

    def __init__(
        self,
        committed: Callable[[Any], int | None],
        *,
        give_up_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.committed = committed
        self.next: dict[Any, int] = {}  # topic partition -> the next offset to read
        self.rewinding: dict[Any, tuple[int, float]] = {}  # -> (sought offset, since when)
        self._tried: set[tuple[Any, int]] = set()
        self.give_up_after = give_up_after
        self.clock = clock
        self.rewinds = 0  # seeks back, for the logs and tests

    def admit(self, tp: Any, offset: int) -> int:
        """:data:`PROCESS`, :data:`SKIP`, or the offset to seek ``tp`` back to (then skip)."""
        rewind = self.rewinding.get(tp)
        if rewind is not None:
            target, since = rewind
            if offset > target:
                if self.clock() - since < self.give_up_after:
                    return SKIP
                log.error(
                    "offsets %d..%d of %s never came back after a seek: lost, going on",
                    target,
                    offset - 1,
                    tp,
                )
                del self.rewinding[tp]
                self.next[tp] = offset + 1
                return PROCESS
            del self.rewinding[tp]
        expected = self.next.get(tp)
        if expected is None:
            expected = self.committed(tp)
        if expected is not None and offset > expected:
            if (tp, expected) not in self._tried:
                self._tried.add((tp, expected))
                self.rewinding[tp] = (expected, self.clock())
                self.rewinds += 1
                log.warning(
                    "offsets %d..%d of %s were skipped by the consumer: seeking back to %d",
                    expected,
                    offset - 1,
                    tp,
                    expected,
                )
                return expected
            log.error(
                "offsets %d..%d of %s are gone (sought back once already): going on",
                expected,
                offset - 1,
                tp,
            )
        self.next[tp] = offset + 1
        return PROCESS

    def keep(self, assigned: Callable[[Any], bool]) -> None:
        """After an assignment: forget the partitions that left (one may come back further on)."""
        for tp in [tp for tp in self.next if not assigned(tp)]:
            del self.next[tp]
        for tp in [tp for tp in self.rewinding if not assigned(tp)]:
            del self.rewinding[tp]
        self._tried.clear()

"""Where the join's expiry index keeps what does not fit in memory.

The join (:class:`~driftline.core.join.JoinBuffer`) indexes every entry by
its deadline, soonest first. With a million predictions waiting for their
outcomes, the index alone is ~170 MB of Python tuples, while the entries
themselves wait on disk. So the index keeps at most a bounded number of
(deadline, request id) pairs in memory per partition and puts the rest in
an :class:`IndexTail`: a store sorted by (deadline, request id) from which
expiry takes the soonest a chunk at a time. The streaming worker keeps its
tail in a RocksDB database of its own (``streaming/indextail.py``); here is
the contract and an in-memory version, for tests and for reasoning.

The tail is derived state: the join rebuilds it with its index.

>>> tail = MemoryTail()
>>> tail.put(3, [(20.0, "b"), (10.0, "a"), (30.0, "c")])
>>> tail.take(3, 2), tail.count(3)
([(10.0, 'a'), (20.0, 'b')], 1)
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Protocol

IndexItem = tuple[float, str]
"""(deadline, request id): what the expiry index orders."""


class IndexTail(Protocol):
    """Index items of many partitions, each partition's taken back in order."""

    def put(self, partition: int, items: Iterable[IndexItem]) -> None:
        """Add ``items`` (any order) to ``partition``'s. An item put twice may come back once."""

    def take(self, partition: int, n: int) -> list[IndexItem]:
        """Remove and return ``partition``'s ``n`` smallest items (or all it has), sorted."""

    def count(self, partition: int) -> int:
        """How many items ``partition`` holds."""

    def drop(self, partition: int) -> None:
        """Forget every item of ``partition``."""

    def clear(self) -> None:
        """Forget every item."""


class MemoryTail:
    """An :class:`IndexTail` in sorted lists: the reference the on-disk one is tested against."""

    def __init__(self) -> None:
        self._items: dict[int, list[IndexItem]] = {}

    def put(self, partition: int, items: Iterable[IndexItem]) -> None:
        held = self._items.setdefault(partition, [])
        for item in items:
            bisect.insort(held, item)

    def take(self, partition: int, n: int) -> list[IndexItem]:
        held = self._items.get(partition, [])
        out = held[:n]
        del held[:n]
        return out

    def count(self, partition: int) -> int:
        return len(self._items.get(partition, ()))

    def drop(self, partition: int) -> None:
        self._items.pop(partition, None)

    def clear(self) -> None:
        self._items.clear()

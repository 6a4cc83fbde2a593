"""The join buffer's entries, kept in memory and in a Faust table's changelog.

The core's :class:`~driftline.core.join.JoinBuffer` keeps its entries in a
``MutableMapping``. Here that mapping is a plain dict (reads are the hot
path) whose writes and deletes also go to the changelog of a Faust table,
on the partition of the request they belong to. After a crash or a
rebalance, Faust restores the table from its changelog and
:meth:`ChangelogDict.restore` rebuilds the dict from it.
"""

from __future__ import annotations

from typing import Any

import orjson

from driftline.core.events import Outcome
from driftline.core.join import Entry
from driftline.core.wire import decode_prediction, encode_prediction


def encode_entry(e: Entry) -> bytes:
    """An entry as compact JSON, for the changelog."""
    o = e.outcome
    return orjson.dumps(
        [
            e.state,
            e.deadline,
            e.partition,
            e.model_id,
            e.model_version,
            e.extra_outcomes,
            None if e.prediction is None else encode_prediction(e.prediction),
            None if o is None else [o.request_id, o.outcome, o.event_time, o.model_id],
        ]
    )


def decode_entry(raw: bytes) -> Entry:
    """The inverse of :func:`encode_entry`."""
    state, deadline, partition, model, version, extra, p, o = orjson.loads(raw)
    return Entry(
        state,
        deadline,
        None if p is None else decode_prediction(p),
        None if o is None else Outcome(o[0], o[1], o[2], o[3]),
        model,
        version,
        extra,
        partition,
    )


class ChangelogDict(dict[str, Entry]):
    """A dict whose changes are also written to a Faust table's changelog."""

    def __init__(self, table: Any) -> None:
        super().__init__()
        self.table = table
        self.writes = 0

    def __setitem__(self, key: str, entry: Entry) -> None:
        super().__setitem__(key, entry)
        raw = encode_entry(entry)
        k = key.encode()
        self.table.data[k] = raw
        self.table.send_changelog(entry.partition, k, raw)
        self.writes += 1

    def __delitem__(self, key: str) -> None:
        entry = self.pop(key)
        k = key.encode()
        self.table.data.pop(k, None)
        self.table.send_changelog(entry.partition, k, None)
        self.writes += 1

    def restore(self, partitions: set[int]) -> int:
        """Reload from the table's store, keeping only ``partitions``; return the count."""
        self.clear()
        put = super().__setitem__
        stale = []
        for k, raw in list(self.table.data.items()):
            if raw is None:
                continue
            entry = decode_entry(raw)
            key = k.decode() if isinstance(k, bytes) else str(k)
            if entry.partition in partitions:
                put(key, entry)
            else:
                stale.append(k)
        for k in stale:
            self.table.data.pop(k, None)
        return len(self)

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget (locally only) the entries of revoked partitions."""
        gone = [k for k, e in self.items() if e.partition in partitions]
        for k in gone:
            dict.__delitem__(self, k)
            self.table.data.pop(k.encode(), None)
        return len(gone)

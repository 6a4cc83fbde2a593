"""The join's expiry-index tail in a RocksDB database of the worker's own.

The core's :class:`~driftline.core.join.JoinBuffer` keeps a bounded share of
its expiry index in memory and hands the rest to an
:class:`~driftline.core.indextail.IndexTail`. This one keeps it on disk,
sorted the way expiry needs it: one key per (partition, deadline, request
id), in an order RocksDB's byte order keeps, and no value. Taking the soonest
items back is one ordered scan and one range delete.

The tail is derived state: the join rebuilds it with its index whenever
partitions are assigned. So it is private to the worker (not a Faust table,
no changelog), emptied when opened, written without a write-ahead log, and
small in memory (the write buffers and a block cache below).
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from driftline.core.indextail import IndexItem

_DOUBLE = struct.Struct(">d")
_BITS = struct.Struct(">Q")
_PARTITION = struct.Struct(">I")  # a Kafka partition number is an int32
_HEAD = struct.Struct(">IQ")  # partition, then the deadline's ordered bits
_SIGN = 1 << 63
_ALL_BITS = (1 << 64) - 1


def sort_key(partition: int, deadline: float, rid: str) -> bytes:
    """A key whose byte order is the order of (partition, deadline, request id).

    >>> sort_key(1, -2.5, "a") < sort_key(1, 0.0, "a") < sort_key(1, 3.0, "a")
    True
    >>> sort_key(1, 3.0, "a") < sort_key(1, 3.0, "b") < sort_key(2, -1e300, "")
    True
    """
    bits = _BITS.unpack(_DOUBLE.pack(deadline))[0]
    # IEEE 754 in byte order: flip the sign bit of positive numbers, every bit
    # of negative ones, and the order of the bytes is the order of the numbers.
    bits = bits ^ _ALL_BITS if bits & _SIGN else bits | _SIGN
    return _HEAD.pack(partition, bits) + rid.encode()


def from_key(key: bytes) -> IndexItem:
    """The (deadline, request id) of a :func:`sort_key` key.

    >>> from_key(sort_key(7, -0.25, "r-9"))
    (-0.25, 'r-9')
    """
    bits = _BITS.unpack_from(key, 4)[0]
    bits = bits ^ _SIGN if bits & _SIGN else bits ^ _ALL_BITS
    return _DOUBLE.unpack(_BITS.pack(bits))[0], key[12:].decode()


class RocksTail:
    """An :class:`~driftline.core.indextail.IndexTail` in RocksDB at ``path``.

    Opened on first use, emptied then: what a previous process left there
    is rebuilt from the join table anyway.
    """

    WRITE_BUFFER = 4 << 20
    BLOCK_CACHE = 8 << 20

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: Any = None
        self._write: Any = None
        self._counts: dict[int, int] = {}

    def _open(self) -> Any:
        import rocksdict

        shutil.rmtree(self.path, ignore_errors=True)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        options = rocksdict.Options(raw_mode=True)
        options.create_if_missing(True)
        options.set_write_buffer_size(self.WRITE_BUFFER)
        options.set_max_write_buffer_number(2)
        table = rocksdict.BlockBasedOptions()
        table.set_block_cache(rocksdict.Cache(self.BLOCK_CACHE))
        # Index and filter blocks in the cache too, so that they are bounded
        # by it rather than growing with the files on disk.
        table.set_cache_index_and_filter_blocks(True)
        options.set_block_based_table_factory(table)
        self._db = rocksdict.Rdict(str(self.path), options=options)
        self._write = rocksdict.WriteOptions()
        self._write.disable_wal = True  # derived state: rebuilt, never recovered
        return self._db

    def put(self, partition: int, items: Iterable[IndexItem]) -> None:
        import rocksdict

        db = self._db or self._open()
        batch = rocksdict.WriteBatch(raw_mode=True)
        put = batch.put
        n = 0
        for deadline, rid in items:
            put(sort_key(partition, deadline, rid), b"")
            n += 1
        if n:
            db.write(batch, self._write)
            self._counts[partition] = self._counts.get(partition, 0) + n

    def take(self, partition: int, n: int) -> list[IndexItem]:
        if not self._counts.get(partition):
            return []
        db = self._db
        start = _PARTITION.pack(partition)
        keys = []
        for key in db.keys(from_key=start):
            if not key.startswith(start) or len(keys) >= n:
                break
            keys.append(key)
        if keys:
            db.delete_range(keys[0], keys[-1] + b"\x00", self._write)
        # An item put twice is one key: the count may run ahead of the keys
        # until the partition's last are taken.
        self._counts[partition] = self._counts[partition] - len(keys) if len(keys) == n else 0
        return [from_key(k) for k in keys]

    def count(self, partition: int) -> int:
        """Items put and not taken (one put twice counts twice, until the last are taken)."""
        return self._counts.get(partition, 0)

    def drop(self, partition: int) -> None:
        if self._counts.pop(partition, 0):
            start, end = _PARTITION.pack(partition), _PARTITION.pack(partition + 1)
            self._db.delete_range(start, end, self._write)

    def clear(self) -> None:
        for partition in list(self._counts):
            self.drop(partition)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        shutil.rmtree(self.path, ignore_errors=True)

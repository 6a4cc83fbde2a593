"""The join buffer's entries, kept in memory, in a Faust table, and in its changelog.

The core's :class:`~driftline.core.join.JoinBuffer` keeps its entries in a
``MutableMapping``. Here that mapping is a plain dict (reads are the hot
path) whose writes and deletes also go to the Faust table's local store
(RocksDB on disk by default, or memory) and to the table's changelog, on
the partition of the request they belong to. After a crash or a
rebalance, Faust restores the table (from the local RocksDB files plus the
changelog's tail, or from the whole changelog with the memory store) and
:meth:`ChangelogDict.restore` rebuilds the dict from it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Iterable
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from faust.types import TP

from driftline.core.events import Outcome
from driftline.core.join import Entry
from driftline.core.wire import decode_prediction, encode_prediction

log = logging.getLogger("driftline.worker")

WATERMARK_KEY = b"\x00watermark/"
OUTBOX_KEY = b"\x00outbox/"
"""Keys of the join's own records in its changelog, one of each per partition.

Not request ids (none starts with NUL). With each batch, the join writes
to each changelog partition it touched, after the entries' changes: its
watermark, and the *outbox*, the batch's model events caused by that
partition's records, with their tags. Only then are the model events sent.
A worker that restores the partition starts from that watermark and sends
the outbox again (the monitors drop what they have): see
``docs/reliability.md``, crash recovery.
"""


CHANGELOG_MAX_BYTES = 16 << 20
"""Largest write of one batch to one changelog partition (the topic's ``max.message.bytes``)."""
_OUTBOX_HEAD = b"driftline-outbox:1\n"
EMPTY_OUTBOX = _OUTBOX_HEAD


def encode_outbox(messages: list[tuple[bytes, bytes]]) -> bytes:
    """Model-event messages (key, value) as one changelog value, sent again as they are.

    Length-prefixed frames, so that the messages are encoded once, for the
    outbox and for sending alike.

    >>> decode_outbox(encode_outbox([(b"fraud", b'{"tagged":[]}')]))
    [(b'fraud', b'{"tagged":[]}')]
    """
    parts = [_OUTBOX_HEAD]
    for key, value in messages:
        parts += (len(key).to_bytes(4, "big"), key, len(value).to_bytes(4, "big"), value)
    return b"".join(parts)


def decode_outbox(raw: bytes) -> list[tuple[bytes, bytes]]:
    """The inverse of :func:`encode_outbox`; ``ValueError`` if it is not one."""
    if not raw.startswith(_OUTBOX_HEAD):
        raise ValueError("not a driftline outbox")
    out = []
    i, end = len(_OUTBOX_HEAD), len(raw)
    while i < end:
        frame = []
        for _ in range(2):  # the key, then the value
            if i + 4 > end:
                raise ValueError("truncated driftline outbox")
            n = int.from_bytes(raw[i : i + 4], "big")
            if i + 4 + n > end:
                raise ValueError("truncated driftline outbox")
            frame.append(bytes(raw[i + 4 : i + 4 + n]))
            i += 4 + n
        out.append((frame[0], frame[1]))
    return out


def watermark_change(partition: int, watermark: float) -> tuple[bytes, tuple[int, bytes]]:
    """The changelog change that records ``watermark`` on ``partition``.

    A partition with no event time yet (minus infinity) is recorded as
    ``null``, which JSON has instead of infinities.

    >>> watermark_change(3, float("-inf"))
    (b'\\x00watermark/3', (3, b'null'))
    """
    value = orjson.dumps(watermark if watermark != float("-inf") else None)
    return WATERMARK_KEY + str(partition).encode(), (partition, value)


def outbox_change(partition: int, raw: bytes) -> tuple[bytes, tuple[int, bytes]]:
    """The changelog change that records ``partition``'s outbox (tagged model events)."""
    return OUTBOX_KEY + str(partition).encode(), (partition, raw)


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
            e.p_pos,
            e.o_pos,
        ]
    )


def decode_entry(raw: bytes) -> Entry:
    """The inverse of :func:`encode_entry`."""
    items = orjson.loads(raw)
    state, deadline, partition, model, version, extra, p, o = items[:8]
    # Entries written before input positions were kept have none (-1: untracked).
    p_pos, o_pos = items[8:10] if len(items) >= 10 else (-1, -1)
    return Entry(
        state,
        deadline,
        None if p is None else decode_prediction(p),
        None if o is None else Outcome(o[0], o[1], o[2], o[3]),
        model,
        version,
        extra,
        partition,
        p_pos,
        o_pos,
    )


class LocalTable:
    """Writes to a Faust table's local store with an explicit partition.

    Faust's RocksDB store finds the partition of a write from the event
    being processed; the join writes a whole batch at once, and the expiry
    timer has no event at all. So writes go straight to the partition's
    RocksDB database (one write batch per partition and input batch), and
    the changelog offsets they cover are recorded as Faust's own "persisted
    offset", so a restart replays only the changelog's tail onto the local
    files instead of the whole topic. With the memory store, this is the
    table's dict.

    The outboxes are the exception: each holds a batch's model events (as
    many bytes again as the entries), is only read at a restore, and is
    replaced by the next batch's. RocksDB does not get them; the persisted
    offset of a partition stays just before its latest outbox instead, so
    that a restart reads that outbox (and whatever follows it) from the
    changelog, as Faust reads any changelog tail (see :meth:`persisted`).
    Writing them cost ~1.3 µs per pair of a batched bench.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        store = table.data
        self.rocksdb = hasattr(store, "_db_for_partition") and hasattr(
            store, "set_persisted_offset"
        )
        # Per partition: the changelog offset of its latest outbox, which
        # RocksDB does not hold. Never reset: an entry that went stale (Faust
        # recovered the outbox into RocksDB since) at worst makes a restart
        # read more of the changelog than it needs.
        self.outbox_offsets: dict[int, int] = {}

    def write(self, changes: dict[bytes, tuple[int, bytes | None]]) -> None:
        store = self.table.data
        if not self.rocksdb:
            for k, (_, raw) in changes.items():
                if raw is None:
                    store.pop(k, None)
                else:
                    store[k] = raw
            return
        from rocksdict import WriteBatch

        batches: dict[int, Any] = {}
        for k, (partition, raw) in changes.items():
            if k[:1] == b"\x00" and k.startswith(OUTBOX_KEY):
                continue  # read back from the changelog: see the class docstring
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = WriteBatch(raw_mode=True)
            if raw is None:
                batch.delete(k)
            else:
                batch.put(k, raw)
        for partition, batch in batches.items():
            store._db_for_partition(partition).write(batch)

    def read(self, key: bytes, partitions: Iterable[int]) -> tuple[int, bytes] | None:
        """The stored value of ``key`` in the first of ``partitions`` that has it."""
        if not self.rocksdb:
            return None
        dbs = self.table.data._dbs
        for partition in partitions:
            db = dbs.get(partition)
            if db is not None:
                raw = db.get(key)
                if raw is not None:
                    return partition, raw
        return None

    def delete(self, key: bytes, partition: int) -> None:
        store = self.table.data
        if self.rocksdb:
            store._db_for_partition(partition).delete(key)
        else:
            store.pop(key, None)

    def persisted(self, offsets: dict[int, int], outboxes: Collection[int] = ()) -> None:
        """Record that the changelog holds everything written, up to ``offsets``.

        ``outboxes``: the partitions whose last record written (at their
        offset in ``offsets``) is their outbox. RocksDB holds everything up
        to ``offsets`` but the outboxes, so a partition's persisted offset
        stays below its latest outbox: a restart reads the changelog from
        there (Faust reads from the persisted offset on) and so gets the
        outbox back, and the records after it again, which changes nothing.
        """
        if not self.rocksdb or not offsets:
            return
        store = self.table.data
        topic = self.table.changelog_topic.get_topic_name()
        outbox_offsets = self.outbox_offsets
        for partition, offset in offsets.items():
            if partition in outboxes:
                outbox_offsets[partition] = offset
                offset -= 1
            else:
                at = outbox_offsets.get(partition)
                if at is not None and offset >= at:
                    offset = at - 1
            store.set_persisted_offset(TP(topic, partition), offset)


class ChangelogDict(dict[str, Entry]):
    """A dict whose changes are also queued for a Faust table's changelog.

    Changes are not sent one by one: Faust's per-message send path costs
    70-170 µs, more than everything else the worker does for a record. They
    queue here and :meth:`take` hands them to :class:`ChangelogWriter`, which
    sends a whole batch at once before the input batch is acknowledged.
    A request changed twice in one batch is written once, with its last value.

    With the RocksDB store, at most ``max_in_memory`` entries stay in the
    dict: after each :meth:`take` (when every entry is on disk) the oldest
    requests beyond that are dropped from memory ("spilled"), and a later
    :meth:`get` of one reads it back from RocksDB. So a million predictions
    waiting for their outcomes cost disk, not memory (the join's expiry
    index keeps its own items over the bound on disk too: see
    ``streaming/indextail.py``). Until something spills, a read costs one
    dict look-up as before.
    """

    def __init__(self, table: Any, max_in_memory: int | None = None) -> None:
        super().__init__()
        self.table = table
        self.local = LocalTable(table)
        self.writes = 0
        self._dirty: dict[str, Entry] = {}
        self.max_in_memory = max_in_memory if self.local.rocksdb else None
        self.spilled: dict[int, int] = {}  # partition -> entries only on disk
        self.spill_reads = 0
        self.watermarks: dict[int, float] = {}  # restored: partition -> the join's watermark
        self.outboxes: dict[int, bytes] = {}  # restored: partition -> its last outbox

    def get(self, key: str, default: Any = None) -> Any:  # type: ignore[override]
        entry = dict.get(self, key)
        if entry is None and self.spilled:
            entry = self._load(key)
        return default if entry is None else entry

    def _load(self, key: str) -> Entry | None:
        found = self.local.read(key.encode(), [p for p, n in self.spilled.items() if n > 0])
        if found is None:
            return None
        partition, raw = found
        entry = decode_entry(raw)
        dict.__setitem__(self, key, entry)  # back in memory, clean: no write
        self.spill_reads += 1
        left = self.spilled[partition] - 1
        if left > 0:
            self.spilled[partition] = left
        else:
            del self.spilled[partition]
        return entry

    def __len__(self) -> int:
        return dict.__len__(self) + sum(self.spilled.values())

    def in_memory(self) -> int:
        """Entries held in the dict (the rest are only on disk)."""
        return dict.__len__(self)

    def spill(self) -> int:
        """Drop the oldest clean entries beyond ``max_in_memory`` from memory; return how many."""
        cap = self.max_in_memory
        excess = dict.__len__(self) - cap if cap is not None else 0
        if excess <= 0:
            return 0
        dirty = self._dirty
        gone = []
        for key, entry in self.items():
            if len(gone) >= excess:
                break
            if key not in dirty:  # only what RocksDB already holds may leave memory
                gone.append((key, entry.partition))
        spilled = self.spilled
        for key, partition in gone:
            dict.__delitem__(self, key)
            spilled[partition] = spilled.get(partition, 0) + 1
        return len(gone)

    def __setitem__(self, key: str, entry: Entry) -> None:
        dict.__setitem__(self, key, entry)  # not super(): a new object per call
        self._dirty[key] = entry  # encoded once, at take(), whatever happens meanwhile

    def __delitem__(self, key: str) -> None:
        # The join only deletes a tombstone whose last write is at least one
        # TTL old. No changelog delete is sent: the changelog's retention
        # (see ``changelog_topic_config``) drops it, and a restore that still
        # finds it forgets it at the first watermark move. One write saved
        # per request.
        entry = self.pop(key)
        self.local.delete(key.encode(), entry.partition)
        self._dirty.pop(key, None)

    def take(self) -> dict[bytes, tuple[int, bytes | None]]:
        """The changes since the last call (key -> (partition, value)); the queue empties.

        Write them to the changelog, then hand them to :meth:`stored`.
        """
        dirty, self._dirty = self._dirty, {}
        return {
            key.encode(): (entry.partition, encode_entry(entry)) for key, entry in dirty.items()
        }

    def stored(
        self,
        changes: dict[bytes, tuple[int, bytes | None]],
        offsets: dict[int, int] | None = None,
        outboxes: Collection[int] = (),
    ) -> None:
        """``changes`` are in the changelog: write them to the table's local data too.

        Only after the changelog has them: a restart reads the local data and
        then the changelog from where the local data ends, so the local data
        must never be ahead of the changelog. ``offsets`` (the changelog
        offset of the last record written per partition) and ``outboxes``
        (the partitions whose last record is their outbox) then become the
        local data's persisted offsets (:meth:`LocalTable.persisted`). Then
        entries over the memory bound may leave memory.
        """
        self.local.write(changes)
        if offsets:
            self.local.persisted(offsets, outboxes)
        self.writes += len(changes)
        if self.max_in_memory is not None and dict.__len__(self) > self.max_in_memory:
            self.spill()

    def restore(
        self, partitions: set[int], on_entry: Callable[[str, Entry], None] | None = None
    ) -> int:
        """Reload from the table's store, keeping only ``partitions``; return the count.

        One entry at a time: each is handed to ``on_entry`` (the join's
        :meth:`~driftline.core.join.JoinBuffer.index_entry`) and, up to
        ``max_in_memory``, kept in memory; the rest stay on disk only, as
        if spilled. So restoring a million pending predictions does not
        hold them in memory at once.
        """
        self.clear()
        self._dirty = {}
        self.spilled = {}
        self.watermarks = {}
        self.outboxes = {}
        put = super().__setitem__
        cap = self.max_in_memory
        spilled = self.spilled
        stale = []
        for k, raw in self.table.data.items():
            if raw is None:
                continue
            kb = k if isinstance(k, bytes) else str(k).encode()
            if kb.startswith(b"\x00"):
                if kb.startswith(WATERMARK_KEY):
                    partition = int(kb[len(WATERMARK_KEY) :])
                    value = orjson.loads(raw)
                    if partition in partitions and value is not None:  # null: no time yet
                        self.watermarks[partition] = float(value)
                elif kb.startswith(OUTBOX_KEY):
                    partition = int(kb[len(OUTBOX_KEY) :])
                    if partition in partitions:
                        self.outboxes[partition] = bytes(raw)
                continue
            entry = decode_entry(raw)
            if entry.partition not in partitions:
                stale.append(k)
                continue
            key = kb.decode()
            if on_entry is not None:
                on_entry(key, entry)
            if cap is None or dict.__len__(self) < cap:
                put(key, entry)
            else:
                spilled[entry.partition] = spilled.get(entry.partition, 0) + 1
        if not self.local.rocksdb:  # RocksDB files of other partitions are not open here
            for k in stale:
                self.table.data.pop(k, None)
        return len(self)

    def drop_partitions(self, partitions: set[int]) -> int:
        """Forget (locally only) the entries of revoked partitions."""
        gone = [k for k, e in self.items() if e.partition in partitions]
        for k in gone:
            dict.__delitem__(self, k)
            if not self.local.rocksdb:  # Faust closes a revoked partition's RocksDB files
                self.table.data.pop(k.encode(), None)
        for p in partitions:
            self.spilled.pop(p, None)
        return len(gone)


def changelog_topic_config(label_ttl: float) -> dict[str, str]:
    """Topic settings of the join changelog: compacted, and records expire.

    An entry's latest record is at most one TTL old while the entry lives
    (every state change rewrites it), so keeping records for three TTLs
    (at least a day) never loses a live entry.
    """
    retention_ms = int(max(3 * label_ttl, 86_400.0) * 1000)
    return {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(retention_ms),
        "max.message.bytes": str(CHANGELOG_MAX_BYTES),
    }


class ChangelogWriter:
    """Sends queued join-table changes to the changelog topic in batches.

    Uses its own aiokafka producer and aiokafka's batch API (about 7 µs a
    record against 70+ µs through Faust's send path). Faust restores the
    table from the same topic on assignment, so nothing else changes. The
    same producer sends the model events and the monitor checkpoints
    (:meth:`deliver`), where the worker must know they landed before it
    moves on.
    """

    def __init__(self, bootstrap_servers: str, topic: str, **producer_options: Any) -> None:
        self.topic = topic
        self._options = {"bootstrap_servers": bootstrap_servers, **producer_options}
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        if self._producer is None:
            producer = AIOKafkaProducer(**self._options)
            await producer.start()
            self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    async def deliver(
        self,
        topic: str,
        messages: list[tuple[bytes, bytes, int | None]],
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Send ``(key, value, partition)`` messages to ``topic``; wait until the broker has them.

        In order: two messages for one partition land in the order given. A
        partition of ``None`` means the key's (the Java client's hash, as Faust's).
        """
        if not messages:
            return
        async with self._lock:
            await self.start()
            producer = self._producer
            assert producer is not None
            futures = [
                await producer.send(topic, value, key=key, partition=partition, headers=headers)
                for key, value, partition in messages
            ]
            await asyncio.gather(*futures)

    async def write(self, changes: dict[bytes, tuple[int, bytes | None]]) -> dict[int, int]:
        """Send ``changes`` and wait until the broker has them.

        Returns the offset of the last record written, per partition.
        """
        if not changes:
            return {}
        async with self._lock:
            await self.start()
            producer = self._producer
            assert producer is not None
            by_partition: dict[int, list[tuple[bytes, bytes | None]]] = {}
            for key, (partition, value) in changes.items():
                by_partition.setdefault(partition, []).append((key, value))
            futures = []
            sizes = []  # records per batch: a batch's metadata names its first offset
            for partition, records in by_partition.items():
                batch, n = producer.create_batch(), 0
                for key, value in records:
                    if batch.append(key=key, value=value, timestamp=None) is None:
                        log.warning(
                            "a batch's changes to changelog partition %d exceed %d bytes:"
                            " written in parts, so a crash in between could double-count",
                            partition,
                            CHANGELOG_MAX_BYTES,
                        )
                        futures.append(
                            await producer.send_batch(batch, self.topic, partition=partition)
                        )
                        sizes.append(n)
                        batch, n = producer.create_batch(), 0
                        batch.append(key=key, value=value, timestamp=None)
                    n += 1
                futures.append(await producer.send_batch(batch, self.topic, partition=partition))
                sizes.append(n)
            last: dict[int, int] = {}
            for meta, n in zip(await asyncio.gather(*futures), sizes, strict=True):
                end = meta.offset + n - 1
                if end > last.get(meta.partition, -1):
                    last[meta.partition] = end
            return last

"""The worker's topology, in one place.

::

    predictions ─┐                                  ┌─> alerts (key dedup_key)
                 ├─> join agent ─> model-events ─> monitor agent
    outcomes   ──┘   (join table)  (key model_id)   └─> /models, /metrics (streaming/metrics.py)
         └───── malformed ─────> driftline-dead-letter

The join agent reads both input topics (co-partitioned, keyed by request
id), decodes each message (one record or a JSON array of records), feeds
the core's :class:`~driftline.core.join.JoinBuffer` whose entries live in a
changelogged table, and sends the resulting model events to an internal
topic keyed by model id, one micro-batch per model per input batch. The
monitor agent feeds them to the core's :class:`~driftline.core.monitor.MonitorSet`
and sends every alert message to the alert topic keyed by its dedup key.
Each input partition has its own event time; a timer advances it on a
partition that goes quiet, so pending joins expire even when no data comes.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
import orjson
from faust.types import TP

from driftline.core import checkpoint
from driftline.core.codec import RecordError, decode_message, named_model
from driftline.core.config import Config
from driftline.core.events import Expired, Joined, ModelEvent, PredictionSeen, Rejected
from driftline.core.join import JoinBuffer, position, tag_events
from driftline.core.monitor import MonitorSet
from driftline.core.wire import Tag, WireError, decode_tagged, encode_tagged
from driftline.streaming.checkpoints import read_checkpoints
from driftline.streaming.deadletter import DeadLetter, dead_letter, refused_predictions
from driftline.streaming.fetchwait import shorten_fetch_wait
from driftline.streaming.indextail import RocksTail
from driftline.streaming.joinstore import (
    CHANGELOG_MAX_BYTES,
    ChangelogDict,
    ChangelogWriter,
    changelog_topic_config,
    decode_outbox,
    encode_outbox,
    outbox_change,
    watermark_change,
)
from driftline.streaming.kafka import (
    CHECKPOINT_MAX_BYTES,
    aiokafka_auth,
    bootstrap_servers,
    faust_credentials,
)
from driftline.streaming.metrics import (
    Telemetry,
    consumer_highwater,
    consumer_last_poll,
    input_time_headers,
    install_metrics,
)
from driftline.streaming.offsets import PROCESS, OffsetGuard
from driftline.streaming.seekfirst import seek_before_resume

log = logging.getLogger("driftline.worker")

WITH_PREDICTION = frozenset((PredictionSeen, Joined, Expired))  # model events naming it there
NO_INDEXES: frozenset[int | None] = frozenset()  # a message without refused records

JOIN_TABLE = "driftline-join"


CHUNK_BYTES = 4 << 20
"""Input bytes the join commits at most at once (one message may add up to
``limits.max_message_bytes``). A batch's changes and outbox take about twice
its input bytes, so a chunk's write to one changelog partition stays well
under ``CHANGELOG_MAX_BYTES`` and is appended whole (docs/reliability.md)."""


def changelog_topic_name(config: Config) -> str:
    """The join table's changelog topic (Faust's naming)."""
    return f"{config.app_id}-{JOIN_TABLE}-changelog"


@dataclass
class WorkerSettings:
    """How this worker process runs (as opposed to what it monitors)."""

    web_port: int = 6066
    web_host: str = "127.0.0.1"
    store: str = "rocksdb://"
    data_dir: str = ".driftline-data"
    batch_size: int = 500
    batch_within: float = 0.05
    expiry_interval: float = 1.0
    # Join entries kept in memory with the RocksDB store; older ones are read
    # back from disk when their outcome (or a retry) comes. ~2.7 KB each.
    join_memory_entries: int = 200_000
    replication_factor: int = 1
    # Seconds between monitor checkpoints. Input offsets are committed only
    # once checkpointed, so this is also how much a crash makes the worker redo.
    checkpoint_interval: float = 5.0
    # Kafka static membership: a worker restarted under the same name gets its
    # partitions back at once, without waiting for the session timeout.
    instance_id: str | None = None
    chunk_bytes: int = CHUNK_BYTES  # input bytes the join commits at most at once


@dataclass
class WorkerState:
    """What the agents share inside one worker process."""

    join: JoinBuffer
    store: ChangelogDict
    monitors: MonitorSet
    # Per input topic partition: when (epoch seconds) the join last read a
    # record of it, or got it.
    last_read: dict[TP, float] = field(default_factory=dict)
    # Per topic partition, the next offset the join and the monitor agents
    # must read (set by make_app, which knows the consumer).
    join_offsets: OffsetGuard = field(default_factory=lambda: OffsetGuard(lambda tp: None))
    monitor_offsets: OffsetGuard = field(default_factory=lambda: OffsetGuard(lambda tp: None))
    dead_letters: int = 0
    ready: bool = False
    telemetry: Telemetry = field(default_factory=Telemetry)  # for /metrics
    # model id -> the model-events partition its events came from, to forget
    # the monitors of models whose partition went to another worker.
    model_partitions: dict[bytes, int] = field(default_factory=dict)
    # Exactly-once bookkeeping of the monitor stage (docs/reliability.md):
    # per model id, the high-water mark of the events applied, per source;
    high_water: dict[bytes, checkpoint.HighWater] = field(default_factory=dict)
    # per model id, the model-events offset its checkpoint covers (skip below);
    resume_at: dict[bytes, int] = field(default_factory=dict)
    # the model-events partitions whose monitors live here.
    monitor_partitions: set[int] = field(default_factory=set)
    # the input partitions whose join state lives here (their outboxes were sent).
    join_partitions: set[int] = field(default_factory=set)


def refused_models(value: bytes | None, errors: list[RecordError]) -> list[tuple[str, str]]:
    """The model named by each refused record that plainly names one.

    Feeds the per-model ``dead_letters`` count of ``/models``. A message
    that is not JSON names no model; in a batched message each refused
    element is looked at on its own.

    >>> refused_models(b'[{"model_id": "m"}, {"model_id": 7}]',
    ...                [RecordError("x", index=0), RecordError("y", index=1)])
    [('m', 'unversioned')]
    """
    if not value or len(value) > 4 * 1024 * 1024:
        return []
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        return []
    found = []
    for err in errors:
        if err.index is None:
            target = obj
        elif isinstance(obj, list) and 0 <= err.index < len(obj):
            target = obj[err.index]
        else:
            continue
        if named := named_model(target):
            found.append(named)
    return found


class Outgoing:
    """A batch's model events and their tags, grouped as they are sent.

    One group per (input partition, model): the events that go in that
    partition's outbox in messages keyed by that model. The join adds each
    event to its group as it goes, rather than collecting one flat list that
    the commit then regroups (a second pass over every event, ~1 µs per
    pair). Groups keep the order in which they first appeared, and events
    their order within a group, so the messages are the same, in the same
    order, as those of the flat list regrouped.
    """

    __slots__ = ("by_partition", "order")

    def __init__(self) -> None:
        # input partition -> model id -> (events, tags)
        self.by_partition: dict[int, dict[str, tuple[list[ModelEvent], list[Tag]]]] = {}
        self.order: list[tuple[int, str]] = []  # (partition, model) in order of appearance

    def __bool__(self) -> bool:
        return bool(self.order)

    def models(self, partition: int) -> dict[str, tuple[list[ModelEvent], list[Tag]]]:
        """The groups of ``partition`` by model id (for the join's inlined common case)."""
        models = self.by_partition.get(partition)
        if models is None:
            models = self.by_partition[partition] = {}
        return models

    def group(self, partition: int, model: str) -> tuple[list[ModelEvent], list[Tag]]:
        """The (events, tags) lists of ``partition`` and ``model``, new if need be."""
        models = self.models(partition)
        group = models.get(model)
        if group is None:
            group = models[model] = ([], [])
            self.order.append((partition, model))
        return group

    def extend(self, events: list[ModelEvent], tags: list[Tag]) -> None:
        """Add ``events``, each to the group of its tag's partition and of its model."""
        for ev, tag in zip(events, tags, strict=True):
            part = int(tag[0][1:])  # "p3", "o3", "x3" -> 3
            with_prediction = type(ev) in WITH_PREDICTION
            model = ev.prediction.model_id if with_prediction else ev.model_id or ""  # type: ignore[union-attr]
            group = self.group(part, model)
            group[0].append(ev)
            group[1].append(tag)

    def groups(self) -> list[tuple[int, str, list[ModelEvent], list[Tag]]]:
        """``(partition, model, events, tags)`` of every group, in order of appearance."""
        by_partition = self.by_partition
        return [(p, m, *by_partition[p][m]) for p, m in self.order]


# RocksDB settings of the join table, per partition. Faust's defaults (a 64
# MiB write buffer, up to 3 of them, a 2 GiB block cache) suit a table that is
# read from disk; the join only writes there (reads come from memory) and
# reads it back at recovery, so large memtables only grow the worker's RSS for
# the first tens of minutes (+55% in a 10-minute soak) before the first flush.
JOIN_TABLE_ROCKSDB = {
    "write_buffer_size": 4 << 20,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 << 20,
}


def tune_gc(young: int = 500_000) -> None:
    """Make the cyclic garbage collector cheap for a long-running worker.

    The worker holds many long-lived objects (the modules it imported, every
    pending prediction of the join, the monitors' windows) and allocates
    many short-lived ones per record. With CPython's defaults a young
    collection runs every 700 allocations and full collections re-scan
    everything that ever survived, which here cost more than decoding a
    record (see docs/performance.md). So: what exists at start-up is frozen
    (never scanned again; still freed by reference counting), and young
    collections run every ``young`` allocations. Reference cycles are still
    collected, only less often.

    CPython counts allocations net of deallocations, so what triggers a
    young collection here is mostly the join's new entries, and each
    collection walks every object still young, almost all of them entries
    that live on. At 50,000 the worker spent ~2 µs per pair in young
    collections (a batched bench); at 500,000, a tenth of that. Garbage in
    reference cycles, which is rare here, waits at most that many
    allocations longer.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young, older, oldest)


def make_app(
    config: Config, settings: WorkerSettings | None = None
) -> tuple[faust.App, WorkerState]:
    """Build the Faust app for ``config``; return it with its shared state."""
    ws = settings or WorkerSettings()
    shorten_fetch_wait()
    seek_before_resume()
    topics = config.topics
    app = faust.App(
        config.app_id,
        broker=config.broker,
        store=ws.store,
        datadir=ws.data_dir,
        topic_partitions=topics.partitions,
        topic_replication_factor=ws.replication_factor,
        topic_allow_declare=True,
        web_port=ws.web_port,
        web_bind=ws.web_host,
        web_host=ws.web_host,
        consumer_auto_offset_reset="earliest",
        table_standby_replicas=0,
        producer_linger=0.005,
        stream_buffer_maxsize=max(4096, ws.batch_size * 4),
        broker_max_poll_records=max(500, ws.batch_size),
        web_enabled=True,
        broker_credentials=faust_credentials(config.security),
        consumer_group_instance_id=ws.instance_id,
    )
    inputs = app.topic(
        topics.predictions,
        topics.outcomes,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    model_events = app.topic(
        config.model_events_topic,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=topics.partitions,
        internal=True,
    )
    alerts_topic = app.topic(
        topics.alerts, key_serializer="raw", value_serializer="raw", partitions=topics.partitions
    )
    dead_topic = app.topic(
        topics.dead_letter,
        key_serializer="raw",
        value_serializer="raw",
        partitions=topics.partitions,
    )
    table = app.Table(
        JOIN_TABLE,
        key_type=bytes,
        value_type=bytes,
        partitions=topics.partitions,
        extra_topic_configs=changelog_topic_config(config.label_ttl),
        options=JOIN_TABLE_ROCKSDB,
    )
    # Entries are our own compact JSON: keep Faust's codecs out of the way.
    table.key_serializer = table.value_serializer = "raw"
    store = ChangelogDict(table, max_in_memory=ws.join_memory_entries)
    writer = ChangelogWriter(
        bootstrap_servers(config.broker),
        table.changelog_topic.get_topic_name(),
        linger_ms=0,
        # One record batch per partition and write: appended whole or not at all.
        max_batch_size=CHANGELOG_MAX_BYTES,
        # What this producer sends must land once: a retry of a request whose
        # answer was lost is not appended twice.
        acks="all",
        enable_idempotence=True,
        max_request_size=CHANGELOG_MAX_BYTES + (1 << 20),
        **aiokafka_auth(config.security),
    )
    # Model events and checkpoints: a producer of their own, whose record
    # batches stay under the broker's default message size (1 MiB) that the
    # model-events topic has; a checkpoint larger than a batch goes alone.
    sender = ChangelogWriter(
        bootstrap_servers(config.broker),
        config.model_events_topic,
        linger_ms=0,
        max_batch_size=256 << 10,
        acks="all",
        enable_idempotence=True,
        max_request_size=CHECKPOINT_MAX_BYTES + (1 << 20),
        **aiokafka_auth(config.security),
    )
    # With entries on disk beyond the bound, the expiry index keeps its items
    # beyond a bound on disk too (with the memory store, everything is in
    # memory anyway). An entry has up to two index items, its live one and
    # a stale one (a joined prediction's first deadline, dropped lazily when
    # due), so the index's bound is twice the entries': the index spills
    # when the entries do, not before (each item it spills costs ~1.4 µs).
    tail = (
        RocksTail(Path(app.conf.tabledir) / "driftline-expiry-index")
        if store.max_in_memory is not None
        else None
    )
    state = WorkerState(
        join=JoinBuffer(
            config.label_ttl,
            lateness=config.lateness,
            store=store,
            sync_sides=True,
            index_tail=tail,
            index_memory=2 * ws.join_memory_entries,
        ),
        store=store,
        monitors=MonitorSet(config, keep_refused=True),
    )
    limits = config.limits
    pred_topic = topics.predictions

    state.join.expiry_log = []
    # The join agent and the idle-expiry timer both emit model events: one at
    # a time, so that each source's events reach the monitors in order.
    join_lock = asyncio.Lock()
    model_events_name = model_events.get_topic_name()
    client_auth = aiokafka_auth(config.security)

    async def send_dead(dl: DeadLetter, source: str) -> None:
        state.dead_letters += 1
        state.telemetry.dead_letter(source, dl.code)
        await dead_topic.send(key=dl.key, value=dl.value, headers=dl.headers)

    async def commit_batch(
        outgoing: Outgoing,
        partitions: set[int],
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        """Make a batch's join state durable, then send its model events.

        Per changelog partition, in one record batch (which the broker appends
        whole or not at all): the entries' changes, the watermark, and the
        outbox (the model events this partition's records caused, tagged).
        Only then do the model events go out, and only then is the input
        batch acknowledged. So no model event ever leaves without the state
        that made it, and a worker that restores the partition after a crash
        sends the outbox again, which the monitors drop if they have it
        (docs/reliability.md).
        """
        j = state.join
        changes = store.take()
        # One message group per (input partition, model): encoded once, for the
        # outbox of that partition and for sending.
        by_partition: dict[int, list[tuple[bytes, bytes]]] = {}
        for part, model, evs, tgs in outgoing.groups():
            key = model.encode()
            box = by_partition.setdefault(part, [])
            for value in encode_tagged(evs, tgs):  # each under the broker's message size limit
                box.append((key, value))
        for part in partitions | by_partition.keys():
            key, change = watermark_change(part, j.clock(part).watermark)
            changes[key] = change
            key, change = outbox_change(part, encode_outbox(by_partition.get(part, [])))
            changes[key] = change
        offsets = await writer.write(changes)
        # Each partition's outbox is its last record written (just above).
        store.stored(changes, offsets, outboxes=partitions | by_partition.keys())
        if by_partition:
            messages = [(k, v, None) for box in by_partition.values() for k, v in box]
            await sender.deliver(model_events_name, messages, headers)

    def committed_offset(tp: TP) -> int | None:
        """Faust's committed offset of ``tp`` (the next to read), if it knows one."""
        committed = getattr(app.consumer, "_committed_offset", None) or {}
        return committed.get(tp)

    # Each agent reads every offset of its partitions once, in order
    # (streaming/offsets.py): a jump forward is sought back.
    state.join_offsets = OffsetGuard(committed_offset)
    state.monitor_offsets = OffsetGuard(committed_offset)

    @app.agent(inputs)
    async def join(stream: Any) -> None:
        """Decode, join, and pass model events on, a batch of messages at a time."""
        j = state.join
        xlog = j.expiry_log
        guard = state.join_offsets
        read_next = guard.next
        async for events in stream.take_events(ws.batch_size, within=ws.batch_within):
            async with join_lock:
                outgoing = Outgoing()
                partitions: set[int] = set()
                tps: set[TP] = set()
                first = 0  # the chunk's first event
                size = 0  # the chunk's input bytes
                for i, event in enumerate(events):
                    msg = event.message
                    tp = msg.tp
                    if read_next.get(tp) == msg.offset and not guard.rewinding:
                        read_next[tp] = msg.offset + 1  # the common case, inlined
                    else:
                        verdict = guard.admit(tp, msg.offset)
                        if verdict != PROCESS:
                            if verdict >= 0:
                                await app.consumer.seek(tp, verdict)
                            continue  # it comes again after the seek
                    partitions.add(msg.partition)
                    tps.add(tp)
                    size += len(msg.value or b"")
                    is_prediction = msg.topic == pred_topic
                    kind = "prediction" if is_prediction else "outcome"
                    src = f"{kind[0]}{msg.partition}"
                    records, errors = decode_message(
                        msg.value, kind, limits, default_time=msg.timestamp
                    )
                    j.partition = msg.partition
                    add: Any = j.add_prediction if is_prediction else j.add_outcome
                    bad = {e.index for e in errors} if errors else NO_INDEXES
                    base = position(msg.offset, 0, msg.partition)
                    index = 0
                    models = outgoing.models(msg.partition)
                    for rec in records:
                        while index in bad:  # positions count the refused records too
                            index += 1
                        j.position = pos = base | (index << 16)
                        index += 1
                        evs = add(rec)
                        if not evs:
                            continue
                        if xlog:  # expiries too, tagged by the entries that expired
                            more: list[ModelEvent] = []
                            more_tags: list[Tag] = []
                            tag_events(evs, [src, pos, 0], xlog, more, more_tags)
                            outgoing.extend(more, more_tags)
                            continue
                        # The common case, inlined: the record's own events, numbered
                        # as tag_events numbers them (one, or a prediction and its join).
                        for k, ev in enumerate(evs):
                            if type(ev) in WITH_PREDICTION:
                                model = ev.prediction.model_id  # type: ignore[union-attr]
                            else:
                                model = ev.model_id or ""  # type: ignore[union-attr]
                            group = models.get(model)
                            if group is None:
                                group = outgoing.group(msg.partition, model)
                            group[0].append(ev)
                            group[1].append([src, pos, k])
                    if errors:
                        dl = dead_letter(
                            value=msg.value,
                            key=msg.key,
                            topic=msg.topic,
                            partition=msg.partition,
                            offset=msg.offset,
                            errors=errors,
                        )
                        await send_dead(dl, msg.topic)
                        # After the message's records, in order: positions past theirs.
                        n = len(records) + len(errors)
                        for k, (model_id, version) in enumerate(refused_models(msg.value, errors)):
                            at = position(msg.offset, min(n + k, 0xFFFF), msg.partition)
                            outgoing.extend(
                                [Rejected(model_id, version, msg.timestamp or 0.0)], [[src, at, 0]]
                            )
                    if size >= ws.chunk_bytes and i + 1 < len(events):
                        # A large batch is committed in chunks, so that each
                        # partition's changelog write stays one record batch.
                        j.position = -1
                        chunk = events[first : i + 1]
                        await commit_batch(outgoing, partitions, input_time_headers(chunk))
                        outgoing, partitions, first, size = Outgoing(), set(), i + 1, 0
                j.position = -1
                now = time.time()
                for tp in tps:
                    state.last_read[tp] = now
                chunk = events[first:]
                await commit_batch(outgoing, partitions, input_time_headers(chunk))

    def quiet_since(tp: TP, now: float) -> float | None:
        """When the join last read input topic partition ``tp``, if it has read all of it.

        None unless a fetch response came after that read, recently, and
        showed nothing beyond it. So None while it cannot tell: before the
        first fetch, and while fetching stops (a rebalance, a paused
        partition), when the high-water mark goes stale however much is
        written meanwhile.
        """
        consumer = app.consumer
        last_read = state.last_read.get(tp)
        if last_read is None:  # nothing read yet: quiet from now on, if nothing comes
            state.last_read[tp] = now
            return None
        polled = consumer_last_poll(consumer, tp)
        if polled is None or polled < last_read or now - polled > idle_poll_age:
            return None
        end = consumer_highwater(consumer, tp)
        done = state.join_offsets.next.get(tp)
        if done is None:
            done = (getattr(consumer, "_committed_offset", None) or {}).get(tp)
        if end is None or (end > 0 and (done is None or end > done)):
            return None
        return last_read

    # A fetch response older than this says nothing about a partition now.
    idle_poll_age = max(5.0, 2 * ws.expiry_interval)

    @app.timer(interval=ws.expiry_interval)
    async def expire_idle() -> None:
        """Move event time on where a side of a partition is read to its end and quiet.

        A partition's event time is the older of its newest prediction and
        newest outcome (the join's ``sync_sides``), so that a backlog read
        faster on one topic than the other expires nothing early. A side
        that has been read to its end (see :func:`quiet_since`) and stayed
        quiet for ``expiry_interval`` stops holding it back: it is lifted to
        the other side's time. When both are, the partition's next records
        will be about as new as the other partitions', so its time moves to
        the newest any partition here has seen, and on by the wall-clock
        time elapsed since its last record: a partition that goes quiet for
        a day expires the predictions it holds, whether its records carry
        today's times or a replayed history's. A backlog (taken over from
        another worker, or left by a pause) is never quiet, so it runs on
        its own event time and its predictions wait for their outcomes in it.
        """
        if not state.ready or app.rebalancing:
            return
        j = state.join
        interval = ws.expiry_interval
        async with join_lock:
            now = time.time()
            clocks = [(part, j.clocks.get(part)) for part in sorted(state.join_partitions)]
            newest = max((max(c.sides) for _, c in clocks if c is not None), default=float("-inf"))
            if newest == float("-inf"):
                return
            outgoing = Outgoing()
            for part, clock in clocks:
                if clock is None:
                    continue
                since = [
                    quiet_since(TP(topic, part), now)
                    for topic in (topics.predictions, topics.outcomes)
                ]
                quiet = [t is not None and now - t >= interval for t in since]
                sides = clock.sides
                if quiet[0] and quiet[1]:
                    idle = now - max(t for t in since if t is not None)
                    own = max(sides)
                    target = max(own + idle, newest) if own != float("-inf") else newest
                    # The watermark only: the sides keep the times records showed.
                    due = j.advance(target - config.lateness, part)
                elif quiet[0] or quiet[1]:
                    side = 0 if quiet[0] else 1
                    due = j.lift(part, side, sides[1 - side])
                else:
                    continue
                if due:
                    out: list[ModelEvent] = []
                    tags: list[Tag] = []
                    tag_events(due, [], j.expiry_log, out, tags)
                    outgoing.extend(out, tags)
            if outgoing:
                await commit_batch(outgoing, set())

    # The monitor stage acknowledges a model-events message only once a
    # checkpoint covers it, so the committed offset never passes what a
    # restarted worker can restore.
    unacked: list[Any] = []  # events processed, not yet covered by a checkpoint
    dirty: dict[bytes, int] = {}  # model id -> its partition, changed since its checkpoint
    next_offset: dict[int, int] = {}  # model-events partition -> the next offset to process
    checkpoint_lock = asyncio.Lock()
    monitor_stream: list[Any] = []
    last_checkpoint = [time.monotonic()]

    async def write_checkpoints() -> None:
        """Checkpoint every model changed since its last checkpoint, then ack what they cover."""
        async with checkpoint_lock:
            last_checkpoint[0] = time.monotonic()
            if not unacked and not dirty:
                return
            acks = unacked[:]
            del unacked[:]
            models = dict(dirty)
            dirty.clear()
            records = []
            for key, partition in models.items():
                raw = checkpoint.dump(
                    key.decode(),
                    state.monitors.of_model(key.decode()),
                    state.high_water.get(key, {}),
                    next_offset.get(partition, 0),
                )
                records.append((key, raw, partition))
            try:
                await sender.deliver(config.checkpoint_topic, records)
            except BaseException:
                unacked[:0] = acks  # not covered: acknowledge them with the next checkpoint
                for key, partition in models.items():
                    dirty.setdefault(key, partition)
                raise
            if acks:
                stream = monitor_stream[0]  # set by the monitor agent, which fills `unacked`
                for event in acks:
                    await stream.ack(event)

    @app.timer(interval=0.25)
    async def checkpoint_timer() -> None:
        """Checkpoint on schedule, and at once when a rebalance waits for acknowledgements."""
        if not (unacked or dirty):
            return
        if app.rebalancing or time.monotonic() - last_checkpoint[0] >= ws.checkpoint_interval:
            await write_checkpoints()

    @app.agent(model_events)
    async def monitor(stream: Any) -> None:
        """Feed model events to the monitors; send every alert they raise."""
        mons = state.monitors
        telemetry = state.telemetry
        model_partitions = state.model_partitions
        high_water = state.high_water
        resume_at = state.resume_at
        manual = stream.noack()
        monitor_stream[:] = [manual]
        guard = state.monitor_offsets
        async for event in manual.events():
            msg = event.message
            key = msg.key
            verdict = guard.admit(msg.tp, msg.offset)
            if verdict != PROCESS:
                if verdict >= 0:
                    await app.consumer.seek(msg.tp, verdict)
                unacked.append(event)  # acknowledged; it comes again after the seek
                continue
            if msg.offset < resume_at.get(key, 0):
                unacked.append(event)  # its checkpoint covers it already
                continue
            try:
                evs, tags = decode_tagged(msg.value)
            except WireError as exc:
                dl = dead_letter(
                    value=msg.value,
                    key=msg.key,
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                    errors=[exc],
                    stage="monitor",
                )
                await send_dead(dl, msg.topic)
                unacked.append(event)
                continue
            hw = high_water.get(key)
            if hw is None:
                hw = high_water[key] = {}
            applied = 0
            for ev, tag in zip(evs, tags, strict=True):
                if tag is not None:
                    # checkpoint.admit, inlined: it runs once per event.
                    src, a, b = tag
                    last = hw.get(src)
                    if last is None:
                        hw[src] = [a, b]
                    elif a < last[0] or (a == last[0] and b <= last[1]):
                        continue  # applied already
                    else:
                        last[0] = a  # in place: no allocation per event
                        last[1] = b
                applied += 1
                for alert in mons.handle(ev):
                    alert["emitted_at"] = time.time()
                    await alerts_topic.send(
                        key=alert["dedup_key"].encode(), value=orjson.dumps(alert)
                    )
            if mons.refused:  # new model versions over limits.max_models & co.
                dl = refused_predictions(
                    mons.refused,
                    key=msg.key,
                    topic=msg.topic,
                    partition=msg.partition,
                    offset=msg.offset,
                )
                mons.refused.clear()
                await send_dead(dl, msg.topic)
            if applied:
                telemetry.monitored(key, msg.headers, applied)
            model_partitions[key] = msg.partition
            dirty[key] = msg.partition
            next_offset[msg.partition] = msg.offset + 1
            unacked.append(event)
            if (
                time.monotonic() - last_checkpoint[0] >= ws.checkpoint_interval
                or app.rebalancing
                or app.should_stop
            ):
                await write_checkpoints()

    # Faust waits for every message in progress to be acknowledged before a
    # rebalance or a shutdown goes on; the monitor stage's are acknowledged by
    # a checkpoint, so write one first rather than wait for the next.
    wait_empty = app._consumer_wait_empty

    async def checkpoint_then_wait_empty(consumer: Any, logger: Any) -> None:
        try:
            await write_checkpoints()
        except Exception as exc:  # the broker is away: Faust's wait will retry commits
            log.warning("checkpoint before the rebalance or shutdown failed: %r", exc)
        await wait_empty(consumer, logger)

    app._consumer_wait_empty = checkpoint_then_wait_empty  # type: ignore[method-assign]

    @table.on_recover
    async def restored() -> None:
        assigned = {
            tp.partition
            for tp in app.assignor.assigned_actives()
            if tp.topic in (topics.predictions, topics.outcomes)
        }
        # Where reading goes on is checked for skipped offsets (join and
        # monitor agents); a partition that left may come back further on.
        state.join_offsets.keep(lambda tp: tp.partition in assigned)
        mine = monitor_partitions_assigned()
        state.monitor_offsets.keep(lambda tp: tp.partition in mine)
        # Entries are indexed as they are read back, and only the bound of
        # them stays in memory: a restore of a million pending predictions
        # never holds them all.
        state.join.clear_index()
        n = state.store.restore(assigned, state.join.index_entry)
        state.join.finish_index()
        await resume_join(assigned - state.join_partitions)
        state.join_partitions = assigned
        forget_moved_models()
        await restore_monitors()
        state.ready = True
        log.info("join table restored: %d entries for partitions %s", n, sorted(assigned))

    async def resume_join(new: set[int]) -> None:
        """Pick up event time where the restored partitions left it; send again the outboxes
        of the partitions ``new`` to this worker.

        A crash (or the worker that had them) may have stopped between a
        batch's changelog write and its model events; the monitors drop the
        events of an outbox they have. A partition this worker kept through
        the rebalance has none pending: Faust let its last batch finish.
        """
        j = state.join
        for part, saved in state.store.watermarks.items():
            j.resume(part, saved)
        now = time.time()
        for part in new:  # idle from now on, if no record of it comes
            for topic in (topics.predictions, topics.outcomes):
                state.last_read[TP(topic, part)] = now
        sent = 0
        async with join_lock:
            for part, raw in sorted(state.store.outboxes.items()):
                if part not in new:
                    continue
                try:
                    messages = decode_outbox(raw)
                except ValueError as exc:
                    log.warning("outbox of partition %d not sent again: %s", part, exc)
                    continue
                await sender.deliver(model_events_name, [(k, v, None) for k, v in messages])
                sent += len(messages)
        if sent:
            log.info("%d model-event message(s) of the restored outboxes sent again", sent)

    def monitor_partitions_assigned() -> set[int]:
        return {
            tp.partition for tp in app.assignor.assigned_actives() if tp.topic == model_events_name
        }

    async def restore_monitors() -> None:
        """Resume the monitors of model-events partitions new to this worker from checkpoints."""
        mine = monitor_partitions_assigned()
        new = mine - state.monitor_partitions
        state.monitor_partitions = mine
        if not new:
            return
        started = time.monotonic()
        found = await read_checkpoints(
            config.checkpoint_topic,
            new,
            bootstrap_servers=bootstrap_servers(config.broker),
            **client_auth,
        )
        restored_models = 0
        for key, (partition, raw) in found.items():
            try:
                cp = checkpoint.load(raw)
            except checkpoint.CheckpointError as exc:
                log.warning("checkpoint of model %r not used, it starts afresh: %s", key, exc)
                continue
            keep, why = checkpoint.restorable(cp, config)
            for reason in why:
                log.warning("checkpoint of %s", reason)
            state.monitors.forget({cp.model_id})
            state.monitors.adopt(keep)
            state.high_water[key] = cp.high_water
            state.resume_at[key] = cp.offset
            state.model_partitions[key] = partition
            restored_models += 1
        log.info(
            "monitors of %d model(s) restored from checkpoints for partitions %s in %.2f s",
            restored_models,
            sorted(new),
            time.monotonic() - started,
        )

    def forget_moved_models() -> None:
        """After a rebalance: drop the monitors of models whose partition left this worker."""
        mine = monitor_partitions_assigned()
        state.monitor_partitions &= mine
        moved = {key for key, p in state.model_partitions.items() if p not in mine}
        if not moved:
            return
        for key in moved:
            del state.model_partitions[key]
            state.high_water.pop(key, None)
            state.resume_at.pop(key, None)
            dirty.pop(key, None)
        n = state.monitors.forget({key.decode() for key in moved})
        log.info(
            "%d model version(s) of %d model(s) now monitored by another worker: forgotten here",
            n,
            len(moved),
        )

    @app.on_partitions_revoked.connect
    async def on_revoked(app_: Any, revoked: set[TP], **_: Any) -> None:
        parts = {
            tp.partition for tp in revoked if tp.topic in (topics.predictions, topics.outcomes)
        }
        if parts:
            state.store.drop_partitions(parts)
            state.join.forget_partitions(parts)  # their clocks, and their expiry index
            for tp in [tp for tp in state.last_read if tp.partition in parts]:
                del state.last_read[tp]

    @app.on_before_shutdown.connect
    async def stop_writer(app_: Any, **_: Any) -> None:
        await writer.stop()
        await sender.stop()
        if tail is not None:
            tail.close()

    install_metrics(app, state, config)  # /metrics

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        store = state.store
        index = state.join.index_size()
        return web.json(
            {
                "status": "ok" if state.ready else "starting",
                # Join entries, and how many of them are in memory (the rest wait in RocksDB).
                "join_entries": len(store),
                "join_entries_in_memory": store.in_memory(),
                # The expiry index of those entries: items in memory and on disk.
                "join_index_in_memory": index[0],
                "join_index_on_disk": index[1],
            }
        )

    @app.page("/models")
    async def models(web: Any, request: Any) -> Any:
        return web.bytes(orjson.dumps(state.monitors.status()), content_type="application/json")

    return app, state

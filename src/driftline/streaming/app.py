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
A timer advances event time on idle partitions so pending joins expire
even when no data comes.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import faust
import orjson
from faust.types import TP

from driftline.core.codec import RecordError, decode_message, named_model
from driftline.core.config import Config
from driftline.core.events import ModelEvent, Prediction, Rejected
from driftline.core.join import JoinBuffer
from driftline.core.monitor import MonitorSet
from driftline.core.wire import WireError, decode_batch, encode_batches
from driftline.streaming.deadletter import DeadLetter, dead_letter, refused_predictions
from driftline.streaming.fetchwait import shorten_fetch_wait
from driftline.streaming.joinstore import ChangelogDict, ChangelogWriter, changelog_topic_config
from driftline.streaming.kafka import aiokafka_auth, bootstrap_servers, faust_credentials
from driftline.streaming.metrics import Telemetry, input_time_headers, install_metrics

log = logging.getLogger("driftline.worker")

JOIN_TABLE = "driftline-join"


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


@dataclass
class WorkerState:
    """What the agents share inside one worker process."""

    join: JoinBuffer
    store: ChangelogDict
    monitors: MonitorSet
    last_event_wall: float = 0.0
    dead_letters: int = 0
    ready: bool = False
    telemetry: Telemetry = field(default_factory=Telemetry)  # for /metrics
    # model id -> the model-events partition its events came from, to forget
    # the monitors of models whose partition went to another worker.
    model_partitions: dict[bytes, int] = field(default_factory=dict)


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


def tune_gc(young: int = 50_000) -> None:
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
        max_batch_size=1 << 20,
        **aiokafka_auth(config.security),
    )
    state = WorkerState(
        join=JoinBuffer(config.label_ttl, lateness=config.lateness, store=store),
        store=store,
        monitors=MonitorSet(config, keep_refused=True),
    )
    limits = config.limits
    pred_topic = topics.predictions

    async def send_dead(dl: DeadLetter, source: str) -> None:
        state.dead_letters += 1
        state.telemetry.dead_letter(source, dl.code)
        await dead_topic.send(key=dl.key, value=dl.value, headers=dl.headers)

    async def commit_join_changes() -> None:
        # Before the input batch is acknowledged: a restart must find the
        # join state of every record whose offset was committed.
        store.local.persisted(await writer.write(store.take()))

    async def send_model_events(
        events: Iterable[ModelEvent], headers: list[tuple[str, bytes]] | None = None
    ) -> None:
        by_model: dict[str, list[ModelEvent]] = {}
        for ev in events:
            model = ev.prediction.model_id if hasattr(ev, "prediction") else ev.model_id  # type: ignore[union-attr]
            by_model.setdefault(model or "", []).append(ev)
        for model, evs in by_model.items():
            key = model.encode()
            for value in encode_batches(evs):  # each under the broker's message size limit
                await model_events.send(key=key, value=value, headers=headers)

    @app.agent(inputs)
    async def join(stream: Any) -> None:
        """Decode, join, and pass model events on, a batch of messages at a time."""
        j = state.join
        async for events in stream.take_events(ws.batch_size, within=ws.batch_within):
            # Data is flowing: the idle-expiry timer must not advance event
            # time while this batch (which may await sends) is in progress.
            state.last_event_wall = time.monotonic()
            out: list[ModelEvent] = []
            for event in events:
                msg = event.message
                kind = "prediction" if msg.topic == pred_topic else "outcome"
                records, errors = decode_message(
                    msg.value, kind, limits, default_time=msg.timestamp
                )
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
                    for model, version in refused_models(msg.value, errors):
                        out.append(Rejected(model, version, msg.timestamp or 0.0))
                j.partition = msg.partition
                for rec in records:
                    if type(rec) is Prediction:
                        out.extend(j.add_prediction(rec))
                    else:
                        out.extend(j.add_outcome(rec))  # type: ignore[arg-type]
            state.last_event_wall = time.monotonic()
            await commit_join_changes()
            if out:
                await send_model_events(out, input_time_headers(events))

    @app.timer(interval=ws.expiry_interval)
    async def expire_idle() -> None:
        """Advance event time on a quiet worker so pending joins still expire.

        Event time moves on by the wall-clock time elapsed since the last
        record arrived: a partition that goes quiet for a day expires the
        predictions it holds, whether its records carry today's times or a
        replayed history's.
        """
        j = state.join
        if not state.ready or state.last_event_wall == 0.0 or j._max_time == float("-inf"):
            return
        idle = time.monotonic() - state.last_event_wall
        if idle < ws.expiry_interval:
            return
        due = j.advance(j._max_time + idle - config.lateness)
        await commit_join_changes()
        if due:
            await send_model_events(due)

    @app.agent(model_events)
    async def monitor(stream: Any) -> None:
        """Feed model events to the monitors; send every alert they raise."""
        mons = state.monitors
        telemetry = state.telemetry
        model_partitions = state.model_partitions
        async for event in stream.events():
            msg = event.message
            try:
                evs = decode_batch(msg.value)
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
                continue
            for ev in evs:
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
            telemetry.monitored(msg.key, msg.headers, len(evs))
            model_partitions[msg.key] = msg.partition

    @table.on_recover
    async def restored() -> None:
        assigned = {
            tp.partition
            for tp in app.assignor.assigned_actives()
            if tp.topic in (topics.predictions, topics.outcomes)
        }
        n = state.store.restore(assigned)
        state.join.rebuild_index()
        forget_moved_models()
        state.ready = True
        log.info("join table restored: %d entries for partitions %s", n, sorted(assigned))

    def forget_moved_models() -> None:
        """After a rebalance: drop the monitors of models whose partition left this worker."""
        name = model_events.get_topic_name()
        mine = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name}
        moved = {key for key, p in state.model_partitions.items() if p not in mine}
        if not moved:
            return
        for key in moved:
            del state.model_partitions[key]
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
            state.join.rebuild_index()

    @app.on_before_shutdown.connect
    async def stop_writer(app_: Any, **_: Any) -> None:
        await writer.stop()

    install_metrics(app, state, config)  # /metrics

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        store = state.store
        return web.json(
            {
                "status": "ok" if state.ready else "starting",
                # Join entries, and how many of them are in memory (the rest wait in RocksDB).
                "join_entries": len(store),
                "join_entries_in_memory": store.in_memory(),
            }
        )

    @app.page("/models")
    async def models(web: Any, request: Any) -> Any:
        return web.bytes(orjson.dumps(state.monitors.status()), content_type="application/json")

    return app, state

"""Replay on two cores: decode and join here, monitors in a child process.

Replay's work splits in two nearly equal halves: reading, decoding and
joining records, and running the monitors on the model events the join
produces. The worker already runs these as two stages joined by a topic;
here the stages are two processes joined by a pipe, carrying the same
model-event micro-batches (:mod:`driftline.core.wire`), so the monitors
see exactly the events, in exactly the order, of a one-process replay.

Streaming needs the input in event-time order, which is how history is
usually stored: each file is read lazily and the files are merged as they
go. The first record older than its predecessor in the same file means the
file is not ordered; :func:`replay_streaming` then returns ``None`` and the
caller replays the sorted way instead. Its alerts and figures are the same
either way; only the speed differs.
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
from collections.abc import Callable, Iterator
from operator import attrgetter
from pathlib import Path
from typing import Any

import orjson

from driftline.core.config import Config
from driftline.core.events import ModelEvent, Outcome, Prediction
from driftline.core.monitor import Alert, MonitorSet
from driftline.core.pipeline import Pipeline
from driftline.core.wire import decode_batch, encode_batch

_BATCH = 4096  # model events per pipe message


class NotOrdered(Exception):
    """A file's records are not in event-time order."""


def _ordered(records: Iterator[Prediction | Outcome]) -> Iterator[Prediction | Outcome]:
    last = float("-inf")
    for rec in records:
        t = rec.event_time
        if t < last:
            raise NotOrdered
        last = t
        yield rec


def _monitor_process(conn: Any, config: Config) -> None:
    """The child: model events in, alerts and final status out."""
    import gc

    gc.disable()
    monitors = MonitorSet(config)
    handle = monitors.handle
    while True:
        raw = conn.recv_bytes()
        if not raw:
            break
        found: list[Alert] = []
        for ev in decode_batch(raw):
            alerts = handle(ev)
            if alerts:
                found.extend(alerts)
        if found:
            conn.send_bytes(b"A" + orjson.dumps(found))
    conn.send_bytes(b"S" + orjson.dumps([monitors.status(), monitors.orphan_outcomes]))
    conn.close()


def replay_streaming(
    paths: list[Path],
    config: Config,
    open_records: Callable[[Path], Iterator[Prediction | Outcome]],
    on_alert: Callable[[Alert], None] | None = None,
) -> tuple[list[Alert], list[dict[str, Any]], int, int] | None:
    """Replay time-ordered files on two processes.

    Returns ``(alerts, models, records, orphan_outcomes)``, or ``None`` when
    a file turns out not to be in event-time order (nothing is reported
    then: the caller starts again the sorted way).
    """
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_monitor_process, args=(child, config), daemon=True)
    proc.start()
    child.close()
    alerts: list[Alert] = []

    def take_alerts(raw: bytes) -> None:
        # Handed to on_alert only at the end: until then the input may turn
        # out unordered, and the sorted replay would report them again.
        alerts.extend(orjson.loads(raw[1:]))

    def drain() -> None:
        while parent.poll():
            take_alerts(parent.recv_bytes())

    pipe = Pipeline(config)
    add_prediction, add_outcome = pipe.join.add_prediction, pipe.join.add_outcome
    streams = [_ordered(open_records(p)) for p in paths]
    merged = (
        streams[0] if len(streams) == 1 else heapq.merge(*streams, key=attrgetter("event_time"))
    )
    batch: list[ModelEvent] = []
    records = 0
    try:
        for rec in merged:
            records += 1
            batch.extend(add_prediction(rec) if type(rec) is Prediction else add_outcome(rec))  # type: ignore[arg-type]
            if len(batch) >= _BATCH:
                parent.send_bytes(encode_batch(batch))
                batch = []
                drain()
    except NotOrdered:
        proc.kill()
        proc.join()
        parent.close()
        return None
    if batch:
        parent.send_bytes(encode_batch(batch))
    parent.send_bytes(b"")
    while True:
        raw = parent.recv_bytes()
        if raw[:1] == b"A":
            take_alerts(raw)
            continue
        models, orphans = orjson.loads(raw[1:])
        break
    proc.join()
    parent.close()
    if on_alert is not None:
        for a in alerts:
            on_alert(a)
    pending = pipe.pending_by_model()
    for st in models:
        st["pending"] = pending.get((st["model_id"], st["model_version"]), 0)
    return alerts, models, records, orphans


def worth_it(paths: list[Path]) -> bool:
    """Two processes pay off on a second core and inputs of some size."""
    if (os.cpu_count() or 1) < 2 or multiprocessing.get_start_method(allow_none=True) == "spawn":
        return False
    try:
        return sum(p.stat().st_size for p in paths) > 20_000_000
    except OSError:
        return False

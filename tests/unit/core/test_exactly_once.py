"""The worker's exactly-once protocol, played in memory with crashes at every step.

The streaming worker (``driftline.streaming.app``) joins a batch of input
records, writes the join's changes, its watermark and the batch's tagged
model events (the *outbox*) to each changelog partition at once, then
sends the model events, and only later commits the input offsets; a
restored partition's outbox is sent again. Its monitor stage applies an
event only if its tag is over the high-water mark of its source, and
checkpoints the monitors with those marks. This test
plays that protocol with the core's own pieces and no Kafka: a "crash"
throws away everything not yet durable (the join's memory, events not yet
delivered, offsets not yet committed, monitor state since its last
checkpoint), and the run resumes from what was. Whatever the crash points,
the counts must equal the truth: nothing lost, nothing counted twice.
"""

from __future__ import annotations

import copy
import random
import zlib
from dataclasses import dataclass, field
from typing import Any

import pytest

from driftline.core import checkpoint
from driftline.core.config import load_config
from driftline.core.events import ModelEvent, Outcome, Prediction
from driftline.core.join import JoinBuffer, position, tag_events
from driftline.core.monitor import MonitorSet

TTL = 100.0
PARTITIONS = 2
MODELS = ("a", "b", "c")


@dataclass
class Inputs:
    """Input topics: per (kind, partition), a list of records (one per message)."""

    logs: dict[tuple[str, int], list[Any]] = field(default_factory=dict)
    truth: dict[str, dict[str, int]] = field(default_factory=dict)


def make_inputs(rng: random.Random, n: int) -> Inputs:
    inp = Inputs({(k, p): [] for k in "po" for p in range(PARTITIONS)})
    for m in MODELS:
        inp.truth[m] = {"predictions": 0, "joined": 0, "expired": 0, "duplicates": 0}
    t = 0.0
    for i in range(n):
        t += rng.random()
        rid, model = f"r{i}", rng.choice(MODELS)
        part = zlib.crc32(rid.encode()) % PARTITIONS
        p = Prediction(rid, model, 1, t, "v1", score=0.5)
        truth = inp.truth[model]
        truth["predictions"] += 1
        inp.logs["p", part].append(p)
        if rng.random() < 0.1:  # a producer retry: counted once as a duplicate
            inp.logs["p", part].append(p)
            truth["duplicates"] += 1
        if rng.random() < 0.8:  # labelled, well within the TTL (early or late)
            o = Outcome(rid, 1, t + rng.random() * 5)
            truth["joined"] += 1
            inp.logs["o", part].append(o)
            if rng.random() < 0.1:
                inp.logs["o", part].append(o)
                truth["duplicates"] += 1
        else:
            truth["expired"] += 1
    return inp


@dataclass
class Durable:
    """What the join's changelog holds, per input partition."""

    entries: dict[int, dict[str, Any]] = field(default_factory=dict)
    watermark: dict[int, float] = field(default_factory=dict)
    outbox: dict[int, tuple[list[ModelEvent], list[Any]]] = field(default_factory=dict)


class Worker:
    """One incarnation of the worker: memory that a crash loses."""

    def __init__(self, durable: Durable, committed: dict[tuple[str, int], int]) -> None:
        store = {rid: copy.copy(e) for part in durable.entries.values() for rid, e in part.items()}
        self.join = JoinBuffer(TTL, store=store, sync_sides=True)
        self.join.expiry_log = []
        # As the worker's resume_join() does: event time where it was saved,
        for part, saved in durable.watermark.items():
            self.join.resume(part, saved)
        self.read = dict(committed)  # the next input offset to read, per (kind, partition)

    @staticmethod
    def outboxes(durable: Durable) -> tuple[list[ModelEvent], list[Any]]:
        """... and the outboxes, sent again."""
        events: list[ModelEvent] = []
        tags: list[Any] = []
        for part in sorted(durable.outbox):
            evs, tgs = durable.outbox[part]
            events.extend(evs)
            tags.extend(tgs)
        return events, tags


class Monitors:
    """The monitor stage: monitors plus high-water marks, checkpointed now and then."""

    def __init__(self) -> None:
        self.config = load_config(env={})
        self.set = MonitorSet(self.config)
        self.hw: dict[str, checkpoint.HighWater] = {}
        self.offset: dict[str, int] = {}  # per model: the next model-event message to read
        self.saved: dict[str, bytes] = {}

    def apply(self, model: str, events: list[ModelEvent], tags: list[Any]) -> None:
        hw = self.hw.setdefault(model, {})
        for ev, tag in zip(events, tags, strict=True):
            if checkpoint.admit(hw, tag):
                self.set.handle(ev)

    def save(self) -> None:
        for model in self.hw:
            self.saved[model] = checkpoint.dump(
                model, self.set.of_model(model), self.hw[model], self.offset.get(model, 0)
            )

    def crashed(self) -> Monitors:
        fresh = Monitors()
        for model, raw in self.saved.items():
            cp = checkpoint.load(raw)
            keep, why = checkpoint.restorable(cp, fresh.config)
            assert not why
            fresh.set.adopt(keep)
            fresh.hw[model] = cp.high_water
            fresh.offset[model] = cp.offset
            fresh.saved[model] = raw
        return fresh


def run(
    seed: int, n: int = 300, crash_rate: float = 0.15, monitor_crashes: bool = True
) -> tuple[dict, dict, int]:
    rng = random.Random(seed)
    inp = make_inputs(rng, n)
    durable = Durable()
    committed = {key: 0 for key in inp.logs}
    events_log: dict[str, list[tuple[list[ModelEvent], list[Any]]]] = {m: [] for m in MODELS}
    events_log[""] = []  # orphan outcomes name no model
    worker = Worker(durable, committed)
    monitors = Monitors()
    crashes = 0

    def deliver(out: list[ModelEvent], tags: list[Any]) -> bool:
        """Send per model, in order; a crash may cut it anywhere. False if it did."""
        by_model: dict[str, tuple[list, list]] = {}
        for ev, tag in zip(out, tags, strict=True):
            model = ev.prediction.model_id if hasattr(ev, "prediction") else ev.model_id
            group = by_model.setdefault(model or "", ([], []))
            group[0].append(ev)
            group[1].append(tag)
        for model, msg in by_model.items():
            if rng.random() < crash_rate / 4:
                return False
            events_log[model].append(msg)
        return True

    def consume_model_events() -> None:
        nonlocal monitors
        for model, log in events_log.items():
            while (i := monitors.offset.get(model, 0)) < len(log):
                events, tags = log[i]
                monitors.apply(model, events, tags)
                monitors.offset[model] = i + 1
                if rng.random() < 0.2:
                    monitors.save()
                if rng.random() < crash_rate / 10 and monitor_crashes:
                    monitors = monitors.crashed()

    def write_changelog(j: JoinBuffer, out: list, tags: list, touched: set[int]) -> bool:
        """Per partition, all or nothing: entries, watermark, outbox. False if a crash cut it."""
        by_part: dict[int, tuple[list, list]] = {}
        for ev, tag in zip(out, tags, strict=True):
            group = by_part.setdefault(int(tag[0][1:]), ([], []))
            group[0].append(ev)
            group[1].append(tag)
        for part in sorted(touched | by_part.keys() | set(range(PARTITIONS))):
            if rng.random() < crash_rate / 4:
                return False
            durable.entries[part] = {
                rid: copy.copy(e) for rid, e in j.store.items() if e.partition == part
            }
            durable.watermark[part] = j.clock(part).watermark
            durable.outbox[part] = by_part.get(part, ([], []))
        return True

    while True:
        pending = [k for k in inp.logs if worker.read[k] < len(inp.logs[k])]
        idle = not pending
        out: list[ModelEvent] = []
        tags: list[Any] = []
        touched: set[int] = set()
        j = worker.join
        if idle:
            # Every record read: time moves on until everything pending expires.
            # By then the input offsets are committed (the worker commits every
            # few seconds; the idle timer needs a whole TTL to forget a
            # tombstone, the one thing that recognises a re-read record).
            clocks = [(p, c.max_time) for p, c in sorted(j.clocks.items())]
            if all(t == float("-inf") for _, t in clocks):
                break
            committed = dict(worker.read)
            evs = []
            for part, t in clocks:  # each partition's event time, as the worker's idle timer
                if t != float("-inf"):
                    evs.extend(j.advance(t + 3 * TTL, part))
            tag_events(evs, [], j.expiry_log, out, tags)
        else:
            for _ in range(rng.randint(1, 6)):  # a batch, partitions interleaved at random
                pending = [k for k in inp.logs if worker.read[k] < len(inp.logs[k])]
                if not pending:
                    break
                kind, part = key = rng.choice(pending)
                offset = worker.read[key]
                worker.read[key] += 1
                rec = inp.logs[key][offset]
                j.partition = part
                touched.add(part)
                j.position = pos = position(offset, 0, part)
                evs = j.add_prediction(rec) if kind == "p" else j.add_outcome(rec)
                if evs:
                    tag_events(evs, [f"{kind}{part}", pos, 0], j.expiry_log, out, tags)
        # The worker's order: the changelog (entries, watermark, outbox), then
        # the model events, then (later) the input offsets.
        crashed = not write_changelog(j, out, tags, touched) or not deliver(out, tags)
        if not crashed:
            if rng.random() < 0.5:
                committed = dict(worker.read)
            if rng.random() < crash_rate / 2:
                crashed = True  # after everything, before the offsets
        consume_model_events()
        if crashed:
            crashes += 1
            worker = Worker(durable, committed)
            while not deliver(*Worker.outboxes(durable)):  # a crash while sending them again
                crashes += 1
                worker = Worker(durable, committed)
        elif idle and not any(events_log_pending(events_log, monitors)):
            break
    consume_model_events()
    counts = {
        m: {
            "predictions": mon.predictions,
            "joined": mon.joined,
            "expired": mon.expired,
            "duplicates": mon.duplicates,
        }
        for (m, _), mon in monitors.set.monitors.items()
    }
    return counts, inp.truth, crashes


def events_log_pending(events_log: dict, monitors: Monitors) -> list[bool]:
    return [monitors.offset.get(m, 0) < len(log) for m, log in events_log.items()]


@pytest.mark.parametrize("seed", range(40))
def test_counts_are_exact_whatever_the_crash_points(seed: int) -> None:
    counts, truth, crashes = run(seed)
    assert crashes > 0
    assert counts == truth


def test_without_crashes_the_same_counts() -> None:
    counts, truth, crashes = run(7, crash_rate=0.0)
    assert crashes == 0
    assert counts == truth


def test_without_the_high_water_marks_crashes_double_count() -> None:
    """The check that makes the others meaningful: drop the dedup, and counts go wrong."""
    admit = checkpoint.admit
    try:
        checkpoint.admit = lambda hw, tag: True  # type: ignore[assignment]
        wrong = 0
        for seed in range(10):
            counts, truth, _ = run(seed)
            wrong += counts != truth
    finally:
        checkpoint.admit = admit  # type: ignore[assignment]
    assert wrong >= 5

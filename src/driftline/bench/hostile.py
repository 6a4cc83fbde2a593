"""The hostile-input corpus through a real worker, and a tally of what became of it.

:func:`run_hostile` creates topics of its own (the inputs accept messages
of several megabytes, as a lax cluster would; the dead letter keeps the
broker's defaults, as ``driftline topics create`` makes it), starts
``driftline worker`` on them, sends ``pairs`` good prediction/outcome pairs
with every kind of :mod:`driftline.hostile` mixed in (``repeat`` samples of
each, spread over the partitions) plus a flood of new model ids and one of
new versions, and waits until every good pair is joined and every refusal
is in the dead letter. Then it checks:

- each refused record is in the dead letter, attributed to its source
  message (topic, partition, offset), with a reason containing the kind's
  words, and nothing else is there;
- every good pair and every accepted hostile record was joined (``/models``),
  retried records counted as duplicates;
- the floods: what was monitored plus what was refused is what was sent,
  and no model has more versions, nor the worker more models, than the caps;
- the worker's committed offsets reach the end of both input topics (lag 0);
- the worker is alive, its agents never crashed; its resident memory.

``scripts/hostile_input.py`` prints :func:`report`; the integration test
runs a small version and asserts :attr:`HostileResult.problems` is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from driftline.core.config import LimitsConfig
from driftline.hostile import (
    GOOD_MODEL,
    HOSTILE_MODEL,
    Context,
    Flood,
    Message,
    Sample,
    build_samples,
    flood_samples,
    good_pair,
)

__all__ = ["FloodTally", "HostileResult", "KindTally", "report", "run_hostile"]

INPUT_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""``max.message.bytes`` of the input topics: multi-megabyte messages reach the worker."""

STALL_TIMEOUT = 60.0
"""Give up when nothing moved (joins, dead letters) for this many seconds."""

LAG_TIMEOUT = 30.0
"""Seconds the worker gets, once everything is processed, to commit the end offsets."""

_WHERE = re.compile(r"^.*? offset \d+(?: record (\d+))?: ", re.DOTALL)

Echo = Callable[[str], None]


@dataclass
class KindTally:
    """What became of the samples of one kind."""

    kind: str
    samples: int = 0
    messages: int = 0
    expected: int = 0  # refused records the dead letter must name
    refused: int = 0  # refused records it names
    accepted: int = 0  # records that must be joined
    reason: str = ""  # one reason, as the dead letter gives it
    wrong: list[str] = field(default_factory=list)


@dataclass
class FloodTally:
    """What became of a cardinality flood: monitored + refused must be what was sent."""

    kind: str
    sent: int
    monitored: int = 0
    refused: int = 0
    reason: str = ""
    wrong: list[str] = field(default_factory=list)


@dataclass
class HostileResult:
    """The tally of one run; :attr:`problems` lists everything that is off."""

    pairs: int
    partitions: int
    kinds: list[KindTally]
    floods: list[FloodTally]
    good_joined: int = 0
    accepted_expected: int = 0
    accepted_joined: int = 0
    duplicates_expected: int = 0
    duplicates: int = 0
    messages_sent: int = 0
    bytes_sent: int = 0
    dead_letters: int = 0  # from the decoder (message by message)
    monitor_dead_letters: int = 0  # from the monitor stage (cardinality caps)
    monitors: int = 0
    max_versions_seen: int = 0
    lag: dict[str, int] = field(default_factory=dict)
    rss_bytes: int = 0
    peak_rss_bytes: int = 0
    alive: bool = True
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


# --------------------------------------------------------------------------- plan


@dataclass(frozen=True, slots=True)
class _Planned:
    message: Message
    partition: int
    owner: int  # index into the samples, -1 for good traffic and floods


def _plan(
    ctx: Context,
    pairs: int,
    samples: Sequence[Sample],
    floods: Sequence[Flood],
    partitions: int,
    run: str,
) -> list[_Planned]:
    """Good pairs in order, hostile samples and flood pairs spread evenly among them."""
    extra: list[tuple[int, list[_Planned]]] = []
    for index, sample in enumerate(samples):
        part = index % partitions
        extra.append((index, [_Planned(m, part, index) for m in sample.messages]))
    n = 0
    for flood in floods:
        for rid, pred, out in flood.pairs:
            part = n % partitions
            n += 1
            key = rid.encode()
            extra.append(
                (
                    -1,
                    [
                        _Planned(Message("predictions", pred, key), part, -1),
                        _Planned(Message("outcomes", out, key), part, -1),
                    ],
                )
            )
    step = max(1, pairs // max(1, len(extra)))
    plan: list[_Planned] = []
    pending = iter(extra)
    for i in range(pairs):
        rid = f"{run}-good-{i}"
        pred, out = good_pair(ctx, rid, i)
        key = rid.encode()
        plan.append(_Planned(Message("predictions", pred, key), i % partitions, -1))
        plan.append(_Planned(Message("outcomes", out, key), i % partitions, -1))
        if i % step == 0:
            nxt = next(pending, None)
            if nxt is not None:
                plan.extend(nxt[1])
    for _, rest in pending:
        plan.extend(rest)
    return plan


# --------------------------------------------------------------------------- Kafka


async def _create_topics(bootstrap: str, names: dict[str, str], partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        big = {"max.message.bytes": str(INPUT_MAX_MESSAGE_BYTES)}
        topics = [
            NewTopic(names["predictions"], partitions, 1, topic_configs=big),
            NewTopic(names["outcomes"], partitions, 1, topic_configs=big),
            NewTopic(names["alerts"], partitions, 1),
            NewTopic(names["dead_letter"], partitions, 1),
        ]
        await admin.create_topics(topics)
        deadline = time.monotonic() + 30
        while True:
            described = await admin.describe_topics(list(names.values()))
            if all(
                t.get("error_code", 0) == 0
                and len(t.get("partitions") or ()) == partitions
                and all(p.get("leader", -1) >= 0 for p in t["partitions"])
                for t in described
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {sorted(names.values())} have no leaders")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def _delete_topics(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        mine = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if mine:
            await admin.delete_topics(mine)
    finally:
        await admin.close()


class _DeadLetterReader:
    """Reads the dead-letter topic from the start, in the background."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=INPUT_MAX_MESSAGE_BYTES * 2,
            fetch_max_bytes=INPUT_MAX_MESSAGE_BYTES * 4,
        )
        self.topic = topic
        self.messages: list[Any] = []
        self.task: asyncio.Task[None] | None = None

    async def start(self, partitions: int) -> None:
        await self.consumer.start()
        tps = [TopicPartition(self.topic, p) for p in range(partitions)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batches = await self.consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                self.messages.extend(batch)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        await self.consumer.stop()


async def _lag(
    bootstrap: str, group: str, topics: Sequence[str], partitions: int
) -> dict[str, int]:
    """End offset minus the group's committed offset, summed per topic."""
    tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
        await admin.close()
    lag = dict.fromkeys(topics, 0)
    for tp in tps:
        meta = committed.get(tp)
        done = meta.offset if meta is not None and meta.offset >= 0 else 0
        lag[tp.topic] += ends[tp] - done
    return lag


def _rss(pid: int) -> tuple[int, int]:
    """Current and peak resident set size of ``pid``, in bytes (0 when gone)."""
    now = peak = 0
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                now = int(line.split()[1]) * 1024
            elif line.startswith("VmHWM:"):
                peak = int(line.split()[1]) * 1024
    return now, peak


# --------------------------------------------------------------------------- tally


def _headers(message: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in message.headers or ():
        out.setdefault(k, []).append(v.decode(errors="replace"))
    return out


def _reason_text(header: str) -> str:
    """The reason of a ``driftline-reason`` header, without its location prefix."""
    return _WHERE.sub("", header, count=1)


def _models_by_id(models: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for m in models:
        by.setdefault(m["model_id"], []).append(m)
    return by


def _sum(models: list[dict[str, Any]] | None, key: str) -> int:
    return sum(int(m.get(key) or 0) for m in models or ())


class _Tally:
    """Matches dead letters to what was sent, and /models to what must be joined."""

    def __init__(
        self,
        samples: Sequence[Sample],
        floods: Sequence[Flood],
        origin: dict[tuple[str, int, int], int],
        topic_role: dict[str, str],
    ) -> None:
        self.samples = samples
        self.floods = floods
        self.origin = origin
        self.topic_role = topic_role
        self.kinds: dict[str, KindTally] = {}
        for s in samples:
            t = self.kinds.setdefault(s.kind, KindTally(s.kind))
            t.samples += 1
            t.messages += len(s.messages)
            t.expected += len(s.refused)
            t.accepted += len(s.accepted)
        self.flood_tallies = {f.kind: FloodTally(f.kind, len(f.pairs)) for f in floods}
        self.flood_of = {rid: f.kind for f in floods for rid, _, _ in f.pairs}
        self.unattributed: list[str] = []
        self.decode_letters = 0
        self.monitor_letters = 0
        self.seen = 0

    def expected_decode_letters(self) -> int:
        return sum(1 for s in self.samples if s.refused)

    def read(self, messages: Sequence[Any]) -> None:
        """Attribute the dead letters not read yet."""
        for message in messages[self.seen :]:
            self._one(message)
        self.seen = len(messages)

    def _one(self, message: Any) -> None:
        h = _headers(message)
        reasons = h.get("driftline-reason", [])
        source = (h.get("driftline-source-topic") or ["?"])[0]
        refused = int((h.get("driftline-refused-records") or ["0"])[0])
        if (h.get("driftline-stage") or [""])[0] == "monitor":
            self._from_monitor(message, reasons)
            return
        key = (
            self.topic_role.get(source, source),
            int((h.get("driftline-source-partition") or ["-1"])[0]),
            int((h.get("driftline-source-offset") or ["-1"])[0]),
        )
        owner = self.origin.get(key)
        if owner is None:
            self.unattributed.append(f"{key}: {reasons[:1]}")
            return
        self.decode_letters += 1
        sample = self.samples[owner]
        tally = self.kinds[sample.kind]
        tally.refused += refused
        if reasons and not tally.reason:
            tally.reason = _reason_text(reasons[0])
        if refused != len(sample.refused):
            tally.wrong.append(f"{refused} records refused, expected {len(sample.refused)}")
        for header, fragment in zip(reasons, sample.refused, strict=False):
            text = _reason_text(header)
            if fragment not in text:
                tally.wrong.append(f"reason {text[:120]!r} lacks {fragment!r}")
                break
        omitted = int((h.get("driftline-reasons-omitted") or ["0"])[0])
        if len(reasons) + omitted != refused:
            tally.wrong.append(f"{len(reasons)} reasons + {omitted} omitted != {refused}")

    def _from_monitor(self, message: Any, reasons: list[str]) -> None:
        try:
            records = orjson.loads(message.value)
        except orjson.JSONDecodeError:
            self.unattributed.append(f"monitor-stage dead letter not JSON: {reasons[:1]}")
            return
        self.monitor_letters += 1
        if isinstance(records, dict):
            records = [records]
        for i, record in enumerate(records):
            rid = record.get("request_id") if isinstance(record, dict) else None
            kind = self.flood_of.get(rid)  # type: ignore[arg-type]
            if kind is None:
                self.unattributed.append(f"monitor-stage dead letter for {rid!r}")
                continue
            tally = self.flood_tallies[kind]
            tally.refused += 1
            text = _reason_text(reasons[i]) if i < len(reasons) else ""
            if not tally.reason:
                tally.reason = text
            flood = next(f for f in self.floods if f.kind == kind)
            if flood.reason is None:
                tally.wrong.append(f"refused, but must be accepted: {text[:120]!r}")
            elif flood.reason not in text:
                tally.wrong.append(f"reason {text[:120]!r} lacks {flood.reason!r}")

    def floods_done(self, by_model: dict[str, list[dict[str, Any]]]) -> bool:
        for flood in self.floods:
            tally = self.flood_tallies[flood.kind]
            tally.monitored = sum(_sum(by_model.get(m), "joined") for m in flood.model_ids)
            if tally.monitored + tally.refused < tally.sent:
                return False
        return True


# --------------------------------------------------------------------------- run


def _config_text(limits: LimitsConfig, floods: Sequence[Flood]) -> str:
    text = (
        "[limits]\n"
        f"max_models = {limits.max_models}\n"
        f"max_versions_per_model = {limits.max_versions_per_model}\n"
        # The good and hostile models are named, so a flood can never crowd them out.
        f'[models."{GOOD_MODEL}"]\ntask = "binary"\n'
        f'[models."{HOSTILE_MODEL}"]\ntask = "binary"\n'
    )
    for flood in floods:
        if flood.kind == "feature_name_flood":
            # A reference small enough to be complete, and tested, within the run.
            for model in flood.model_ids:
                text += (
                    f'[models."{model}".monitors.data_drift]\n'
                    "reference_size = 200\nwindow = 200\nevery = 100\n"
                )
    return text


async def run_hostile(
    bootstrap: str,
    *,
    pairs: int = 20_000,
    repeat: int = 3,
    partitions: int = 4,
    max_models: int = 200,
    max_versions: int = 20,
    flood_models: int | None = None,
    flood_versions: int | None = None,
    timeout: float = 600.0,
    echo: Echo = print,
) -> HostileResult:
    """Send the corpus mixed into ``pairs`` good pairs through a fresh worker; tally it.

    ``max_models`` and ``max_versions`` are the worker's
    ``limits.max_models`` and ``limits.max_versions_per_model``; the floods
    default to twice each (``flood_models`` new model ids,
    ``flood_versions`` new versions of one model).
    """
    from driftline.bench.stream import WorkerFailed, WorkerProcess

    started = time.monotonic()
    limits = LimitsConfig(max_models=max_models, max_versions_per_model=max_versions)
    run = f"dl-hostile-{uuid.uuid4().hex[:10]}"
    prefix = f"{run}-"
    ctx = Context(now=time.time(), limits=limits)
    samples = list(build_samples(ctx, repeat, prefix=run))
    floods = flood_samples(
        ctx,
        2 * max_models if flood_models is None else flood_models,
        2 * max_versions if flood_versions is None else flood_versions,
        prefix=f"{run}-flood",
    )
    result = HostileResult(pairs=pairs, partitions=partitions, kinds=[], floods=[])
    result.accepted_expected = sum(len(s.accepted) for s in samples)
    result.duplicates_expected = sum(s.duplicates for s in samples)

    with tempfile.TemporaryDirectory(prefix="driftline-hostile-") as tmp:
        config_path = Path(tmp) / "driftline.toml"
        config_path.write_text(_config_text(limits, floods))
        worker = WorkerProcess(
            bootstrap, prefix, partitions=partitions, config_path=str(config_path)
        )
        t = worker.config.topics
        names = {
            "predictions": t.predictions,
            "outcomes": t.outcomes,
            "alerts": t.alerts,
            "dead_letter": t.dead_letter,
        }
        role = {t.predictions: "predictions", t.outcomes: "outcomes"}
        reader = _DeadLetterReader(bootstrap, t.dead_letter)
        producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=5,
            max_request_size=INPUT_MAX_MESSAGE_BYTES,
            max_batch_size=1 << 20,
        )
        try:
            await _create_topics(bootstrap, names, partitions)
            await worker.start()
            await worker.wait_ready()
            echo(f"worker ready ({worker.config.app_id}); sending")
            await reader.start(partitions)
            await producer.start()
            plan = _plan(ctx, pairs, samples, floods, partitions, run)
            origin: dict[tuple[str, int, int], int] = {}
            futures = []
            for item in plan:
                m = item.message
                topic = names[m.topic]
                fut = await producer.send(topic, m.value, key=m.key, partition=item.partition)
                futures.append((fut, item))
                result.bytes_sent += len(m.value or b"") + len(m.key or b"")
            for fut, item in futures:
                meta = await fut
                if item.owner >= 0:
                    origin[(item.message.topic, meta.partition, meta.offset)] = item.owner
            result.messages_sent = len(plan)
            echo(f"sent {len(plan):,} messages ({result.bytes_sent / 1e6:,.1f} MB); waiting")

            tally = _Tally(samples, floods, origin, role)
            await _wait(worker, result, tally, reader, timeout, echo)
            deadline = time.monotonic() + LAG_TIMEOUT
            while True:
                result.lag = await _lag(
                    bootstrap, worker.config.app_id, [t.predictions, t.outcomes], partitions
                )
                if not any(result.lag.values()) or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            await asyncio.sleep(1.0)  # anything late (a duplicate dead letter) shows now
            tally.read(reader.messages)
            by_model = _models_by_id(await worker.models())
            _finish(result, tally, by_model, limits)
            result.rss_bytes, result.peak_rss_bytes = _rss(worker.pid)
        except WorkerFailed as exc:
            result.alive = False
            result.problems.append(f"worker failed: {exc}")
        finally:
            with contextlib.suppress(Exception):
                await producer.stop()
            await reader.stop()
            if worker.proc is not None:
                result.alive = result.alive and worker.proc.returncode is None
            await worker.stop()
            with contextlib.suppress(Exception):
                await _delete_topics(bootstrap, prefix)
    result.seconds = time.monotonic() - started
    return result


async def _wait(
    worker: Any,
    result: HostileResult,
    tally: _Tally,
    reader: _DeadLetterReader,
    timeout: float,
    echo: Echo,
) -> None:
    """Poll until every pair is joined and every refusal is in the dead letter."""
    deadline = time.monotonic() + timeout
    last: tuple[int, ...] = ()
    moved = time.monotonic()
    while True:
        tally.read(reader.messages)
        by_model = _models_by_id(await worker.models())
        good = _sum(by_model.get(GOOD_MODEL), "joined")
        accepted = _sum(by_model.get(HOSTILE_MODEL), "joined")
        floods = tally.floods_done(by_model)
        state = (good, accepted, tally.decode_letters, len(reader.messages))
        if (
            good >= result.pairs
            and accepted >= result.accepted_expected
            and tally.decode_letters >= tally.expected_decode_letters()
            and floods
        ):
            return
        now = time.monotonic()
        if state != last:
            last, moved = state, now
        elif now - moved > STALL_TIMEOUT or now > deadline:
            result.problems.append(
                f"stalled: {good}/{result.pairs} good pairs joined, {accepted}/"
                f"{result.accepted_expected} accepted hostile records joined, "
                f"{tally.decode_letters}/{tally.expected_decode_letters()} dead letters"
            )
            echo(result.problems[-1])
            return
        await asyncio.sleep(0.5)


def _finish(
    result: HostileResult,
    tally: _Tally,
    by_model: dict[str, list[dict[str, Any]]],
    limits: LimitsConfig,
) -> None:
    result.kinds = list(tally.kinds.values())
    result.floods = list(tally.flood_tallies.values())
    result.dead_letters = tally.decode_letters
    result.monitor_dead_letters = tally.monitor_letters
    result.good_joined = _sum(by_model.get(GOOD_MODEL), "joined")
    result.accepted_joined = _sum(by_model.get(HOSTILE_MODEL), "joined")
    result.duplicates = _sum(by_model.get(HOSTILE_MODEL), "duplicates")
    result.monitors = sum(len(v) for v in by_model.values())
    result.max_versions_seen = max((len(v) for v in by_model.values()), default=0)
    p = result.problems
    if result.good_joined != result.pairs:
        p.append(f"{result.good_joined} good pairs joined, expected {result.pairs}")
    expired = _sum(by_model.get(GOOD_MODEL), "expired")
    if expired:
        p.append(f"{expired} good predictions expired")
    if result.accepted_joined != result.accepted_expected:
        p.append(
            f"{result.accepted_joined} accepted hostile records joined,"
            f" expected {result.accepted_expected}"
        )
    if result.duplicates != result.duplicates_expected:
        p.append(f"{result.duplicates} duplicates counted, expected {result.duplicates_expected}")
    for k in result.kinds:
        if k.refused != k.expected:
            p.append(f"{k.kind}: {k.refused} records in the dead letter, expected {k.expected}")
        p.extend(f"{k.kind}: {w}" for w in k.wrong[:3])
    for f in result.floods:
        if f.monitored + f.refused != f.sent:
            p.append(f"{f.kind}: {f.monitored} monitored + {f.refused} refused != {f.sent} sent")
        if f.refused and not f.reason:
            p.append(f"{f.kind}: {f.refused} refused without a reason")
        p.extend(f"{f.kind}: {w}" for w in f.wrong[:3])
    named = {GOOD_MODEL, HOSTILE_MODEL}
    named.update(m for f in tally.floods if f.reason is None for m in f.model_ids)
    unnamed = sum(len(v) for m, v in by_model.items() if m not in named)
    if unnamed > limits.max_models:
        p.append(f"{unnamed} model versions monitored, over limits.max_models {limits.max_models}")
    if result.max_versions_seen > limits.max_versions_per_model:
        p.append(f"a model has {result.max_versions_seen} versions, over the limit")
    p.extend(f"dead letter not from the corpus: {u}" for u in tally.unattributed[:5])
    for topic, lag in result.lag.items():
        if lag:
            p.append(f"consumer lag {lag} on {topic}")


# --------------------------------------------------------------------------- report


def report(result: HostileResult) -> str:
    """The tally as a plain-text table, then the totals and any problem."""
    lines = [
        f"{'kind':42} {'sent':>5} {'dead':>5} {'want':>5} {'joined':>6}  reason",
        "-" * 110,
    ]
    for k in result.kinds:
        mark = "" if k.refused == k.expected and not k.wrong else "  <-- WRONG"
        reason = k.reason or ("(accepted)" if not k.expected else "")
        lines.append(
            f"{k.kind:42} {k.messages:>5} {k.refused:>5} {k.expected:>5} {k.accepted:>6}"
            f"  {reason[:70]}{mark}"
        )
    for f in result.floods:
        lines.append(
            f"{f.kind:42} {f.sent:>5} {f.refused:>5} {'-':>5} {f.monitored:>6}  {f.reason[:70]}"
        )
    mb = 1024 * 1024
    lines += [
        "-" * 110,
        f"kinds: {len(result.kinds)}; messages sent: {result.messages_sent:,}"
        f" ({result.bytes_sent / mb:,.1f} MiB) over {result.partitions} partitions",
        f"good pairs: {result.pairs:,} sent, {result.good_joined:,} joined",
        f"accepted hostile records: {result.accepted_expected:,} expected,"
        f" {result.accepted_joined:,} joined; duplicates {result.duplicates}"
        f"/{result.duplicates_expected}",
        f"dead letters: {result.dead_letters:,} from the decoder,"
        f" {result.monitor_dead_letters:,} from the monitor stage (floods; sent = pairs)",
        f"model versions monitored: {result.monitors:,}"
        f" (most versions of one model: {result.max_versions_seen})",
        "consumer lag at the end: "
        + ", ".join(f"{t.rsplit('-', 1)[-1]} {n}" for t, n in result.lag.items()),
        f"worker: {'alive' if result.alive else 'DEAD'}, RSS {result.rss_bytes / mb:,.0f} MiB"
        f" (peak {result.peak_rss_bytes / mb:,.0f} MiB); run took {result.seconds:,.0f} s",
    ]
    if result.problems:
        lines.append(f"PROBLEMS ({len(result.problems)}):")
        lines += [f"  - {p}" for p in result.problems[:40]]
    else:
        lines.append(
            "OK: no crash, no stall, every refusal dead-lettered, every good record joined"
        )
    return "\n".join(lines)

"""``driftline simulate``: scenario traffic, sent to Kafka as it happens.

Replay and the detection evaluation run a scenario in event time, as fast
as the CPU goes. A live worker has to be shown traffic the way production
sends it: predictions at a steady wall-clock rate, and each outcome only
once its label delay has passed. This module paces
:func:`driftline.scenarios.generate` on the wall clock.

The scenario is generated *relative* to the start (``start_time=0``), and
every record is stamped ``start + its offset`` when it is sent, so the
event times on the wire are real times: the worker's event-time clock, the
alert times and the clock on the wall agree, and a drift announced for
12:00:30 shows up in alerts stamped a few seconds later. ``generate``
already yields predictions and their outcomes merged in event-time order
(its heap is the scheduler), so pacing is "sleep until the next record is
due, send it".

Request ids get a per-run prefix: a scenario with the same seed yields the
same ids every time, and a second run into the same topics must not look
like a storm of duplicates to the join.

With ``batch > 1`` several records go in one Kafka message, as a JSON array
(what a high-volume producer does). The join needs a prediction and its
outcome in the same partition number of their topics, so records are
batched *per partition of their own request id* (the partition a keyed
single-record send would pick) and each array is sent to that partition,
keyed by its first request id. Before an outcome batch of a partition
leaves, that partition's pending predictions leave, so no outcome ever
overtakes its prediction.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import secrets
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner

from driftline.core.config import Config, SecurityConfig
from driftline.streaming.kafka import (
    KafkaSetupError,
    aiokafka_auth,
    bootstrap_servers,
    start_client,
)

if TYPE_CHECKING:  # scenarios pulls in river and numpy: import it only to simulate
    from driftline.scenarios import ScenarioInfo

__all__ = [
    "SimulationError",
    "SimulationPlan",
    "SimulationStats",
    "StopOnSignals",
    "make_plan",
    "new_run_id",
    "parse_label_delay",
    "simulate",
    "topic_partitions",
]

MAX_BATCH = 1000
"""Records per message at most: about 400 bytes each keeps a message well
under the broker's default 1 MiB ``message.max.bytes``."""

BATCH_LINGER = 0.5
"""Seconds a partial batch may wait for more records before it is sent.
Outcomes arrive seconds after their predictions, so half a second of
batching delay does not reorder anything that matters, while a slow
partition still sends promptly."""

CONNECT_TIMEOUT = 10.0
"""Seconds to reach the broker before giving up with a clear message."""

_PRODUCER_OPTIONS: dict[str, Any] = {
    # A few milliseconds of linger lets a burst share a request without
    # delaying records noticeably against their event time.
    "linger_ms": 5,
    # Idempotent: when a broker restarts, a produce request whose answer was
    # lost is sent again, and the broker drops the copy it already has (by
    # producer id and sequence) instead of appending a duplicate record,
    # which the join would count as a retried prediction.
    "acks": "all",
    "enable_idempotence": True,
    # aiokafka fails a batch that has waited this long for a partition
    # leader, and send() waits this long for buffer space: long enough to
    # ride out a broker restart, so records wait instead of failing the run.
    "request_timeout_ms": 120_000,
}


Model = tuple[str, str]
"""(model id, model version)"""


class SimulationError(RuntimeError):
    """Sending failed part-way (the broker went away, a message was refused)."""


# --------------------------------------------------------------------------
# planning: pure, so the CLI can validate before touching Kafka


_DELAY_ARITY = {"fixed": 1, "exponential": 1, "uniform": 2, "lognormal": 2}


def parse_label_delay(text: str) -> tuple[Any, ...]:
    """Parse ``--label-delay`` into a :data:`driftline.scenarios.LabelDelay` tuple.

    The command line wants one short token; the generator wants a tuple.
    All numbers are seconds (a lognormal takes its median and sigma).

    >>> parse_label_delay("lognormal:5:1")
    ('lognormal', 5.0, 1.0)
    >>> parse_label_delay("fixed:2"), parse_label_delay("2.5")
    (('fixed', 2.0), ('fixed', 2.5))
    >>> parse_label_delay("exponential:3"), parse_label_delay("uniform:1:4")
    (('exponential', 3.0), ('uniform', 1.0, 4.0))
    >>> parse_label_delay("lognormal:5")
    Traceback (most recent call last):
    ...
    ValueError: label delay 'lognormal:5': lognormal takes 2 numbers (lognormal:MEDIAN:SIGMA)
    """
    forms = "fixed:S, exponential:MEAN, uniform:LOW:HIGH or lognormal:MEDIAN:SIGMA (seconds)"
    kind, *raw = (part.strip() for part in text.strip().split(":"))
    if not raw:
        kind, raw = "fixed", [kind]
    kind = kind.lower()
    if kind not in _DELAY_ARITY:
        raise ValueError(f"label delay {text!r}: use a number of seconds, {forms}")
    try:
        args = [float(x) for x in raw]
    except ValueError:
        raise ValueError(f"label delay {text!r}: not a number in it; use {forms}") from None
    if len(args) != _DELAY_ARITY[kind]:
        usage = {
            "fixed": "fixed:S",
            "exponential": "exponential:MEAN",
            "uniform": "uniform:LOW:HIGH",
            "lognormal": "lognormal:MEDIAN:SIGMA",
        }[kind]
        n = _DELAY_ARITY[kind]
        raise ValueError(f"label delay {text!r}: {kind} takes {n} number{'s' * (n > 1)} ({usage})")
    if any(not (math.isfinite(a) and a >= 0) for a in args):
        raise ValueError(f"label delay {text!r}: numbers must be finite and non-negative")
    if kind == "lognormal" and args[0] <= 0:
        raise ValueError(f"label delay {text!r}: the lognormal median must be positive")
    if kind == "uniform" and args[1] < args[0]:
        raise ValueError(f"label delay {text!r}: uniform needs LOW <= HIGH")
    return (kind, *args)


def format_label_delay(spec: tuple[Any, ...]) -> str:
    """The ``--label-delay`` token of a parsed spec, for messages.

    >>> format_label_delay(("lognormal", 5.0, 1.0))
    'lognormal:5:1'
    """
    return ":".join([spec[0], *(f"{x:g}" for x in spec[1:])])


def new_run_id() -> str:
    """Six random hex digits: short enough to read in a request id, enough for reruns."""
    return secrets.token_hex(3)


@dataclass(frozen=True)
class SimulationPlan:
    """What a run will send, decided before anything is sent.

    ``events`` is generous: Poisson arrivals put a random number of
    predictions in ``duration`` seconds, so the scenario is generated with
    six standard deviations to spare and cut at ``duration`` (except for
    ``recurring``, see :func:`make_plan`). Times in ``info`` are seconds
    from the start of the run.
    """

    scenario: str
    models: int
    rate: float
    duration: float
    change_at: float
    change_index: int
    events: int
    seed: int
    info: ScenarioInfo

    @property
    def rate_per_model(self) -> float:
        return self.rate / self.models


def make_plan(
    scenario: str,
    *,
    models: int,
    rate: float,
    duration: float,
    change_at: float | None = None,
    seed: int = 0,
) -> SimulationPlan:
    """Turn the command line's seconds into the generator's prediction indices.

    ``rate`` is predictions per second over all models (what an operator
    sizes a topic by); the generator wants a rate per model. ``change_at``
    is seconds from the start; the drift is placed at the prediction index
    each model reaches at that time on average (default: half way).
    """
    from driftline.scenarios import SCENARIOS, describe

    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r}; choose one of {', '.join(SCENARIOS)}")
    if models < 1:
        raise ValueError(f"--models must be at least 1, got {models}")
    if not (math.isfinite(rate) and rate > 0):
        raise ValueError(f"--rate must be positive, got {rate}")
    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"--duration must be positive, got {duration}")
    per_model = rate / models
    expected = per_model * duration
    if expected < 2:
        raise ValueError(
            f"--rate {rate:g}/s over {models} models for {duration:g} s is under 2 predictions"
            " per model; raise --rate or --duration"
        )
    events = math.ceil(expected + 6 * math.sqrt(expected) + 20)
    at = duration / 2 if change_at is None else change_at
    if not 0 < at < duration:
        raise ValueError(f"--change-at must be between 0 and --duration ({duration:g} s), got {at}")
    index = min(max(1, round(at * per_model)), events - 2)
    if scenario == "recurring":
        # The old concept returns half way through the predictions after the
        # change; with the spare events that would be after the end of the
        # run. Without them it lands half way between --change-at and the end
        # (the traffic may then run dry a moment before --duration).
        events = max(math.ceil(expected), index + 2)
    info = describe(
        scenario,
        models=models,
        events=events,
        seed=seed,
        start_time=0.0,
        rate=per_model,
        change_at=index,
    )
    return SimulationPlan(scenario, models, rate, duration, at, index, events, seed, info)


# --------------------------------------------------------------------------
# Kafka


async def topic_partitions(
    broker: str,
    names: list[str],
    timeout: float = CONNECT_TIMEOUT,
    *,
    security: SecurityConfig | None = None,
) -> dict[str, int]:
    """Partition counts of the topics among ``names`` that exist (missing ones are absent).

    Lists the topics before describing any: a metadata request naming a
    topic makes a broker with ``auto.create.topics.enable`` (the default,
    and the local one) create it with one partition, which would break
    co-partitioning for good instead of failing with a useful message.
    ``security``: the ``[security]`` settings to connect with (default: none).
    """
    security = security or SecurityConfig()
    servers = bootstrap_servers(broker)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=servers,
        request_timeout_ms=int(timeout * 1000),
        **aiokafka_auth(security),
    )
    await start_client(admin, security, servers, timeout)
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in dict.fromkeys(names) if n in existing]
        described = await admin.describe_topics(wanted) if wanted else []
    finally:
        await admin.close()
    return {
        t["topic"]: len(t["partitions"])
        for t in described
        if t.get("error_code", 0) == 0 and t.get("partitions")
    }


# --------------------------------------------------------------------------
# the run


@dataclass
class SimulationStats:
    """What a run sent. Counts are records the broker acknowledged."""

    predictions: int = 0
    outcomes: int = 0
    prediction_messages: int = 0
    outcome_messages: int = 0
    elapsed: float = 0.0
    interrupted: str | None = None
    """The signal that stopped the run early (``"SIGINT"``), if one did."""
    errors: list[str] = field(default_factory=list)
    by_model: dict[tuple[str, str], dict[str, int]] = field(default_factory=dict)
    """Acknowledged records per (model id, version): ``{"predictions": n, "outcomes": n}``.
    The ground truth a worker's ``/models`` counts are checked against."""

    def truth(self) -> dict[str, Any]:
        """What ``--truth FILE`` writes: the totals and the per-model counts, as JSON."""
        return {
            "predictions": self.predictions,
            "outcomes": self.outcomes,
            "elapsed": round(self.elapsed, 3),
            "interrupted": self.interrupted,
            "errors": self.errors,
            "models": [
                {"model_id": model, "model_version": version, **counts}
                for (model, version), counts in sorted(self.by_model.items())
            ],
        }

    def summary(self) -> str:
        """The last line a run prints; tests and scripts parse it, so keep it stable."""
        rate = self.predictions / self.elapsed if self.elapsed > 0 else 0.0
        how = f"stopped by {self.interrupted}" if self.interrupted else "done"
        return (
            f"{how}: sent {self.predictions} predictions in {self.prediction_messages} messages"
            f" and {self.outcomes} outcomes in {self.outcome_messages} messages"
            f" in {self.elapsed:.1f} s ({rate:.1f} predictions/s)"
        )


def _clock(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%H:%M:%SZ")


class _Console:
    """Progress output: one line redrawn in place on a terminal, plain lines otherwise.

    A log file or a pipe gets a line every ``line_every`` seconds; carriage
    returns there would turn into one endless line.
    """

    def __init__(self, out: IO[str], tty: bool | None = None, line_every: float = 10.0) -> None:
        self.out = out
        self.tty = out.isatty() if tty is None else tty
        self.every = 0.5 if self.tty else line_every
        self.next_at = self.every
        self.drawn = False
        self.last_n = 0
        self.last_t = 0.0

    def say(self, line: str) -> None:
        if self.drawn:
            self.out.write("\r\033[K")
            self.drawn = False
        self.out.write(line + "\n")
        self.out.flush()

    def progress(self, elapsed: float, stats: _Counters, force: bool = False) -> None:
        if not force and elapsed < self.next_at:
            return
        self.next_at = elapsed + self.every
        span = elapsed - self.last_t
        recent = (stats.predictions - self.last_n) / span if span > 0 else 0.0
        self.last_n, self.last_t = stats.predictions, elapsed
        line = (
            f"[{elapsed:6.1f}s] predictions {stats.predictions:>7}  outcomes {stats.outcomes:>7}"
            f"  {recent:6.1f} predictions/s"
        )
        if self.tty:
            self.out.write("\r\033[K" + line)
            self.drawn = True
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def close(self) -> None:
        if self.drawn:
            self.out.write("\n")
            self.out.flush()
            self.drawn = False


@dataclass
class _Counters:
    """Records handed to the producer (the live view), as opposed to acknowledged ones."""

    predictions: int = 0
    outcomes: int = 0


class _Sender:
    """Encodes records, batches them per partition, and counts acknowledgements."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        topics: dict[str, str],
        partitions: int,
        batch: int,
        stats: SimulationStats,
    ) -> None:
        self.producer = producer
        self.topics = topics  # kind -> topic name
        self.parts = list(range(partitions))
        self.batch = batch
        self.stats = stats
        self.sent = _Counters()
        self.failed: BaseException | None = None
        self.pending = 0
        self._partitioner = DefaultPartitioner()
        self._buffers: dict[tuple[str, int], list[tuple[bytes, bytes, Model]]] = {}
        self._deadlines: dict[tuple[str, int], float] = {}
        # request id -> model of each prediction whose outcome has not been sent yet
        self._model_of: dict[str, Model] = {}

    def _acked(self, kind: str, models: Counter[Model], fut: asyncio.Future[Any]) -> None:
        self.pending -= 1
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is not None:
            if self.failed is None:
                self.failed = exc
            self.stats.errors.append(f"{self.topics[kind]}: {type(exc).__name__}: {exc}")
            return
        records = sum(models.values())
        if kind == "prediction":
            self.stats.predictions += records
            self.stats.prediction_messages += 1
        else:
            self.stats.outcomes += records
            self.stats.outcome_messages += 1
        field_name = f"{kind}s"
        for model, n in models.items():
            counts = self.stats.by_model.setdefault(model, {"predictions": 0, "outcomes": 0})
            counts[field_name] += n

    async def _send(
        self, kind: str, key: bytes, value: bytes, models: Counter[Model], part: int | None
    ) -> None:
        fut = await self.producer.send(self.topics[kind], value=value, key=key, partition=part)
        self.pending += 1
        fut.add_done_callback(lambda f: self._acked(kind, models, f))

    def _model(self, kind: str, record: dict[str, Any]) -> Model:
        """The model a record counts for; an outcome's is its prediction's (it names none)."""
        rid = record["request_id"]
        if kind == "prediction":
            model = (record["model_id"], record.get("model_version") or "unversioned")
            self._model_of[rid] = model
            return model
        return self._model_of.pop(rid, (record.get("model_id") or "", "unversioned"))

    async def settled(self, timeout: float = 30.0) -> None:
        """Wait until every acknowledgement has been counted.

        ``producer.flush()`` returns once the delivery futures are done, but
        their callbacks (which count) run on a later turn of the loop.
        """
        deadline = time.monotonic() + timeout
        while self.pending > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def add(self, kind: str, record: dict[str, Any], now: float) -> None:
        key = record["request_id"].encode()
        value = orjson.dumps(record)
        model = self._model(kind, record)
        if kind == "prediction":
            self.sent.predictions += 1
        else:
            self.sent.outcomes += 1
        if self.batch == 1:
            await self._send(kind, key, value, Counter([model]), None)
            return
        part = self._partitioner(key, self.parts, self.parts)
        slot = (kind, part)
        buf = self._buffers.setdefault(slot, [])
        if not buf:
            self._deadlines[slot] = now + BATCH_LINGER
        buf.append((key, value, model))
        if len(buf) >= self.batch:
            await self._flush(slot)

    async def _flush(self, slot: tuple[str, int]) -> None:
        kind, part = slot
        if kind == "outcome":
            # Predictions of this partition first: an outcome never overtakes its prediction.
            await self._flush(("prediction", part))
        buf = self._buffers.pop(slot, None)
        self._deadlines.pop(slot, None)
        if not buf:
            return
        value = b"[" + b",".join(v for _, v, _ in buf) + b"]"
        await self._send(kind, buf[0][0], value, Counter(m for _, _, m in buf), part)

    async def flush_due(self, now: float) -> None:
        """Send partial batches that have waited :data:`BATCH_LINGER`."""
        for slot in [s for s, d in self._deadlines.items() if d <= now]:
            await self._flush(slot)

    async def flush_all(self) -> None:
        for slot in sorted(self._buffers, key=lambda s: s[0] != "prediction"):
            await self._flush(slot)


def _drift_notes(plan: SimulationPlan) -> list[tuple[float, str]]:
    """(seconds from start, line) for each change the scenario makes, in time order."""
    notes = []
    per = plan.rate_per_model
    for m in plan.info.drifting:
        assert m.change_time is not None
        what = {
            "abrupt": "its concept switches abruptly",
            "gradual": f"its concept slides to a new one over ~{m.width / per:.0f} s",
            "recurring": "its concept switches (the old one returns later)",
            "improvement": "a labelling fault is fixed, accuracy rises (nothing should page)",
            "score_shift": f"input {m.feature!r} shifts by one standard deviation",
            "feature_break": f"input {m.feature!r} starts arriving broken",
        }.get(m.kind, m.kind)
        if m.feature and m.kind in ("abrupt", "gradual", "recurring"):
            what += f"; input {m.feature!r} shifts"
        expect = ", ".join(m.alert_kinds) or "none"
        notes.append(
            (
                m.change_time,
                f"drift: {m.model_id} {m.model_version} now: {what}"
                f" (prediction #{m.change_index}; expected alerts: {expect})",
            )
        )
        if m.end_time is not None:
            notes.append(
                (m.end_time, f"drift: {m.model_id} {m.model_version} now: the old concept returns")
            )
    notes.sort(key=lambda n: n[0])
    return notes


def _header(
    plan: SimulationPlan,
    start: float,
    topics: dict[str, str],
    servers: str,
    partitions: int,
    label_delay: tuple[Any, ...],
    missing_labels: float,
    batch: int,
    run_id: str,
) -> list[str]:
    info = plan.info
    names = ", ".join(f"{m.model_id} {m.model_version} ({m.task})" for m in info.models)
    lines = [
        f"driftline simulate: scenario {plan.scenario!r}, {plan.models} model(s),"
        f" {plan.rate:g} predictions/s in total ({plan.rate_per_model:.3g}/s per model)"
        f" for {plan.duration:g} s from {datetime.fromtimestamp(start, UTC).isoformat()[:19]}Z",
        f"  {info.description}",
        f"  models: {names}",
    ]
    stable = [f"{m.model_id} {m.model_version}" for m in info.models if m.kind == "none"]
    for m in info.drifting:
        assert m.change_time is not None
        line = (
            f"  drift: {m.model_id} {m.model_version} {m.kind} at prediction #{m.change_index},"
            f" about {_clock(start + m.change_time)} ({m.change_time:.0f} s in)"
        )
        if m.end_time is not None:
            line += f", back at {_clock(start + m.end_time)} ({m.end_time:.0f} s in)"
        lines.append(line)
    if stable:
        lines.append(f"  stable: {', '.join(stable)}")
    if info.has_outcomes:
        lines.append(
            f"  outcomes: label delay {format_label_delay(label_delay)} s,"
            f" {missing_labels:.0%} never come"
        )
    else:
        lines.append("  outcomes: none in this scenario")
    lines.append(
        f"  sending to {topics['prediction']!r} and {topics['outcome']!r} at {servers}"
        f" ({partitions} partitions), {batch} record(s) per message,"
        f" request ids {run_id}-<model>-<n>"
    )
    return lines


class StopOnSignals:
    """SIGINT/SIGTERM set an event instead of raising, so a run can flush and report.

    Installed for the whole run, setup included: a Ctrl-C while the models
    train must not leave a traceback or an unflushed producer behind.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.event = asyncio.Event()
        self.signal: str | None = None
        self._installed: list[signal.Signals] = []

    def _on(self, sig: signal.Signals) -> None:
        self.signal = self.signal or sig.name
        self.event.set()

    def __enter__(self) -> StopOnSignals:
        if self.enabled:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                try:
                    loop.add_signal_handler(sig, self._on, sig)
                    self._installed.append(sig)
                except (ValueError, RuntimeError, NotImplementedError):
                    pass  # not the main thread, or no signals here: the caller stops us
        return self

    def __exit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in self._installed:
            loop.remove_signal_handler(sig)


async def simulate(
    config: Config,
    *,
    scenario: str,
    models: int = 4,
    rate: float = 100.0,
    duration: float = 60.0,
    label_delay: tuple[Any, ...] = ("lognormal", 5.0, 1.0),
    missing_labels: float = 0.0,
    seed: int = 0,
    change_at: float | None = None,
    batch: int = 1,
    run_id: str | None = None,
    out: IO[str] | None = None,
    tty: bool | None = None,
    handle_signals: bool = True,
    truth: str | None = None,
) -> SimulationStats:
    """Send a scenario's traffic to ``config``'s topics in real time; return what was sent.

    Raises :class:`~driftline.streaming.kafka.KafkaSetupError` (broker
    unreachable, topics missing or not co-partitioned) before sending
    anything, :class:`ValueError` for bad arguments, and
    :class:`SimulationError` when the broker refuses records mid-run (after
    flushing what it can). SIGINT and SIGTERM stop the run cleanly: pending
    batches are sent and the producer flushed before it returns.

    ``truth``: a file to write :meth:`SimulationStats.truth` to once the run
    ends (also when it fails), so a check can compare a worker's per-model
    counts with what the broker acknowledged.
    """
    if not 1 <= batch <= MAX_BATCH:
        raise ValueError(f"--batch must be between 1 and {MAX_BATCH}, got {batch}")
    if not 0.0 <= missing_labels <= 1.0:
        raise ValueError(f"--missing-labels must be in [0, 1], got {missing_labels}")
    plan = make_plan(
        scenario, models=models, rate=rate, duration=duration, change_at=change_at, seed=seed
    )
    with StopOnSignals(handle_signals) as stop:
        return await _simulate(
            config,
            plan,
            label_delay=label_delay,
            missing_labels=missing_labels,
            batch=batch,
            run_id=run_id or new_run_id(),
            console=_Console(out or sys.stdout, tty=tty),
            stop=stop,
            truth=truth,
        )


async def _simulate(
    config: Config,
    plan: SimulationPlan,
    *,
    label_delay: tuple[Any, ...],
    missing_labels: float,
    batch: int,
    run_id: str,
    console: _Console,
    stop: StopOnSignals,
    truth: str | None = None,
) -> SimulationStats:
    from driftline.scenarios import generate

    topics = {"prediction": config.topics.predictions, "outcome": config.topics.outcomes}
    servers = bootstrap_servers(config.broker)

    counts = await topic_partitions(config.broker, list(topics.values()), security=config.security)
    missing = [t for t in topics.values() if t not in counts]
    if missing:
        raise KafkaSetupError(
            f"topic(s) {', '.join(missing)} do not exist at {servers};"
            " run `driftline topics create` first"
        )
    n_pred, n_out = counts[topics["prediction"]], counts[topics["outcome"]]
    if n_pred != n_out:
        raise KafkaSetupError(
            f"topics {topics['prediction']} ({n_pred} partitions) and {topics['outcome']}"
            f" ({n_out} partitions) are not co-partitioned: the worker could never join"
            " outcomes to their predictions"
        )

    # Generation starts now: training the frozen models takes a moment, and
    # happens before the clock starts so the first seconds are not a burst.
    records: Iterator[dict[str, Any]] = generate(
        plan.scenario,
        models=plan.models,
        events=plan.events,
        seed=plan.seed,
        start_time=0.0,
        rate=plan.rate_per_model,
        label_delay=label_delay,
        missing_labels=missing_labels,
        change_at=plan.change_index,
    )
    first = next(records, None)
    if stop.event.is_set():
        return SimulationStats(interrupted=stop.signal)

    producer = AIOKafkaProducer(
        bootstrap_servers=servers, **_PRODUCER_OPTIONS, **aiokafka_auth(config.security)
    )
    await start_client(producer, config.security, servers, CONNECT_TIMEOUT)

    stats = SimulationStats()
    sender = _Sender(producer, topics, n_pred, batch, stats)
    loop = asyncio.get_running_loop()
    start_wall = time.time()
    t0 = loop.time()
    for line in _header(
        plan, start_wall, topics, servers, n_pred, label_delay, missing_labels, batch, run_id
    ):
        console.say(line)
    notes = _drift_notes(plan)
    prefix = f"{run_id}-"

    async def housekeeping(now: float) -> None:
        elapsed = now - t0
        while notes and notes[0][0] <= elapsed:
            _, line = notes.pop(0)
            console.say(f"{_clock(start_wall + elapsed)} {line}")
        await sender.flush_due(now)
        console.progress(elapsed, sender.sent)

    async def wait_until(due: float) -> bool:
        """Sleep until ``due`` (loop time); False if the run must stop first."""
        while True:
            now = loop.time()
            await housekeeping(now)
            if stop.event.is_set() or sender.failed is not None:
                return False
            if now >= due:
                return True
            await asyncio.sleep(min(due - now, 0.1))

    try:
        n = 0
        rec = first
        while rec is not None:
            rel = rec["timestamp"]
            if rel > plan.duration or not await wait_until(t0 + rel):
                break
            rec["request_id"] = prefix + rec["request_id"]
            rec["timestamp"] = round(start_wall + rel, 3)
            kind = "prediction" if "prediction" in rec else "outcome"
            await sender.add(kind, rec, loop.time())
            n += 1
            if n % 256 == 0:
                await asyncio.sleep(0)  # let the producer's sender task run when behind
            rec = next(records, None)
        await wait_until(t0 + plan.duration)  # the quiet end of the run, if any is left
    except KafkaError as exc:
        stats.errors.append(f"send: {type(exc).__name__}: {exc}")
    finally:
        try:
            await sender.flush_all()
            await asyncio.wait_for(producer.flush(), 30)
            await sender.settled()
        except (TimeoutError, KafkaError) as exc:
            stats.errors.append(f"flush: {type(exc).__name__}: {exc or 'timed out'}")
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 30)
        stats.elapsed = loop.time() - t0
        stats.interrupted = stop.signal
        console.progress(stats.elapsed, sender.sent, force=True)
        console.close()
        if truth is not None:
            with open(truth, "wb") as f:
                f.write(orjson.dumps(stats.truth(), option=orjson.OPT_INDENT_2))
    if stats.errors:
        raise SimulationError(
            f"{len(stats.errors)} send(s) failed, first: {stats.errors[0]}; {stats.summary()}"
        )
    console.say(stats.summary())
    return stats

"""Add a second worker mid-run, then stop the first: every model on one worker, counts exact.

Why: a deployment scales out by starting one more worker of the same app
and scales in by stopping one (SIGTERM, as Kubernetes does). Both are
rebalances: model-events partitions, and the monitors of the models on
them, move between processes. The worker hands a model's monitors over
through the compacted checkpoint topic (``docs/architecture.md``, section
5): the old owner writes a checkpoint before the rebalance and forgets the
models it no longer owns, the new one resumes them from that checkpoint
and drops the events at or under their high-water marks. Only a run at
full rate, with records in flight while the partitions move, shows that no
model is ever counted on two workers at once (which would double its
alerts and split its figures), that none loses a count on the way, and how
long the handovers stop counting. The CI test
(``tests/integration/test_worker.py::test_a_second_worker_takes_over_models_and_each_lives_on_one_worker``)
checks the same at small scale, with no traffic during the moves.

:func:`run_scale_out` starts everything itself, from the pieces of the
``kill -9`` harness (:mod:`driftline.bench.crash_recovery`):

- a broker of its own (:class:`~driftline.bench.broker_restart.LocalBroker`
  on :attr:`ScaleOptions.port`, never the shared 9092), the worker's topics
  with :attr:`ScaleOptions.partitions` partitions (8: two workers get four
  model-events partitions each, so the models really split);
- worker A (``driftline worker``, with ``--instance-id <prefix>a`` if asked, its own data
  directory and web port, a short label TTL), ``driftline bridge webhook``
  posting to a :class:`~driftline.bench.broker_restart.Receiver` in this
  process, and ``driftline simulate --scenario covid`` (8 models, 5% missing
  labels, a lognormal label delay, batched messages, ``--truth``);
- at :attr:`ScaleOptions.scale_out_at` of the traffic, worker B (its own
  data directory and port): the scale-out;
- at :attr:`ScaleOptions.scale_in_at` (once the split has settled), SIGTERM
  to worker A: the scale-in. B runs to the end.

Every :attr:`ScaleOptions.sample_interval` it asks both workers for
``/models`` at the same moment (and reads the group's committed lag), and
from these samples it measures:

(a) the scale-out rebalance: from B's start to the first sample where both
    answer and the models are split between them, each on exactly one;
(b) from B's start until the summed counts (predictions + outcomes, each
    model's latest figure on whichever worker lists it) grow again after the
    longest pause of the rebalance;
(c) the scale-in: from A's SIGTERM until B lists every model (and how long
    A's models counted nothing);
(d) every sample where a model was listed on both workers, by phase: during
    the scale-out rebalance (reported), once the split had settled (a
    problem), while A shut down (reported);
(e) per model at the end (B alone, caught up, one label TTL later):
    ``predictions`` == sent predictions, ``joined`` == sent outcomes,
    ``expired`` == the difference, ``duplicates`` == ``late`` == 0;
(f) the alerts: the ``pricing`` concept-drift alert on the topic, no
    condition under two dedup keys, every alert delivered.

Per model it also shows each handover: the last count on the old worker and
the first on the new one (the count went on: the state moved with it). From
the workers' logs it shows the rebalance events (checkpoints restored, models
forgotten, groups joined) on the same clock, and every warning and error.

Everything it started (processes, the broker and its data, the workers' data
directories) is stopped and removed at the end, also on Ctrl-C and on
failure; with :attr:`ScaleOptions.workdir` given, the logs stay there.
``scripts/scale_out.py`` prints :func:`report`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from driftline.bench.broker_restart import (
    SHARED_PORT,
    Background,
    LocalBroker,
    Receiver,
    _counted,
    _read_topic,
)
from driftline.bench.crash_recovery import (
    DRIFT_MONITOR,
    DRIFTING_MODEL,
    SCENARIO,
    CrashableWorker,
    CrashOptions,
    CrashResult,
    OffsetReader,
    _condition,
    _count_problems,
    _lag,
    _secs,
    _settle,
    alerts_table,
    counts_table,
    on_own_broker,
    start_traffic,
)
from driftline.bench.soak import _worker_env
from driftline.bench.stream import WorkerFailed

__all__ = ["Handover", "ScaleOptions", "ScaleResult", "ScaleSample", "report", "run_scale_out"]

Say = Callable[[str], None]

A, B = "A", "B"
"""The workers: A runs from the start, B joins at the scale-out, A leaves at the scale-in."""

REQUEST_TIMEOUT = 2.0
"""Seconds a worker gets to answer ``/models`` in a sample; slower counts as not answering."""

PHASES = ("rebalance", "settled", "scale-in")
"""Phases of the samples where both workers answer: B's start to the split, the split to
A's SIGTERM, A's SIGTERM to A's exit. A model on both workers in "settled" is a problem."""

_LOG_TIME = re.compile(rb"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})\] \[\d+\] \[(\w+)\] (.*)$")
_EVENTS = re.compile(
    rb"restored from checkpoints|forgotten here|join table restored|outboxes sent again"
    rb"|checkpoint before the rebalance|Joined group|Elected group leader"
    rb"|\[\^Worker\]: (?:Stopping|Starting)|Gathering service tasks"
)
_TROUBLE = re.compile(rb"\[(?:WARNING|ERROR|CRITICAL)\]|Traceback \(most recent|Crashed reason=")


# --------------------------------------------------------------------------- options, results


@dataclass(frozen=True)
class ScaleOptions:
    """What to play, when to scale, and where (seconds are wall-clock)."""

    port: int = 29292
    """The broker's port (its controller on ``port + 1``); never the shared 9092."""
    models: int = 8
    rate: float = 1000.0
    """Predictions per second over all models."""
    duration: float = 150.0
    """Seconds of traffic: 150,000 predictions at the default rate, about 142,500 of them
    with an outcome."""
    batch: int = 20
    """Records per Kafka message."""
    change_at: float | None = None
    """When the drift starts (default: half of ``duration``, between the two moves)."""
    seed: int = 7
    missing_labels: float = 0.05
    label_delay: str = "lognormal:2:0.5"
    label_ttl: float = 30.0
    """The worker's label TTL, seconds: above the largest label delay of the run (see
    :attr:`~driftline.bench.crash_recovery.CrashOptions.label_ttl`)."""
    partitions: int = 8
    """Partitions of every topic: two workers get half each, so the models split."""
    scale_out_at: float = 0.25
    """Share of ``duration`` at which worker B starts."""
    scale_in_at: float = 0.60
    """Share of ``duration`` at which worker A gets SIGTERM (later if the split has not
    settled yet, by at most ``split_timeout``)."""
    split_timeout: float = 90.0
    """Seconds past ``scale_in_at`` the SIGTERM waits for a clean split at most."""
    static_membership: bool = False
    """Run the workers with ``--instance-id`` (static membership). Off by default, like
    the worker: a stopped static member's partitions wait for the session timeout, and
    the stall can miscount a short label TTL (docs/reliability.md, item 2)."""
    sample_interval: float = 0.5
    stop_timeout: float = 60.0
    """Seconds worker A gets to exit after its SIGTERM before it is killed (a problem)."""
    catch_up_timeout: float = 300.0
    """Seconds worker B gets, after the simulator ends, to catch up."""
    config_text: str | None = None
    """A ``driftline.toml`` for the workers."""
    workdir: Path | None = None
    """Logs and the truth file go here (default: a temporary directory, removed)."""
    keep: bool = False
    """Keep the broker's data as well."""

    @property
    def drift_at(self) -> float:
        return self.duration / 2 if self.change_at is None else self.change_at

    def check(self) -> None:
        """Raise ValueError for options the run cannot honour."""
        if self.port in (SHARED_PORT, SHARED_PORT + 1):
            raise ValueError(f"port {self.port} belongs to the shared broker; pick another")
        if self.label_ttl <= 0 or self.rate <= 0 or self.duration <= 0:
            raise ValueError("label_ttl, rate and duration must be positive")
        if not 0 < self.scale_out_at < self.scale_in_at < 1:
            raise ValueError(
                "need 0 < scale_out_at < scale_in_at < 1, got"
                f" {self.scale_out_at:g} and {self.scale_in_at:g}"
            )
        if self.partitions < 2 or self.models < 2:
            raise ValueError("partitions and models must be at least 2 for a split")
        if self.sample_interval <= 0:
            raise ValueError("sample_interval must be positive")


@dataclass
class ScaleSample:
    """Both workers at one moment: model id -> predictions + outcomes, or None (no answer)."""

    t: float  # seconds since the first record counted
    a: dict[str, int] | None
    b: dict[str, int] | None
    lag: int | None = None  # the group's summed committed lag on its input topics
    flags: dict[str, dict[str, tuple[int, int, int]]] = field(default_factory=dict)
    """worker -> model id -> (expired, late, duplicates), for the workers that answered."""

    def on(self, worker: str) -> dict[str, int] | None:
        return self.a if worker == A else self.b

    def both(self) -> set[str]:
        """Models listed on both workers (empty unless both answered)."""
        if self.a is None or self.b is None:
            return set()
        return set(self.a) & set(self.b)


@dataclass(frozen=True)
class Handover:
    """A model showing up on ``to`` after it was last listed on ``source``."""

    model: str
    source: str
    to: str
    last_t: float  # last sample listing it on ``source``
    last_count: int  # predictions + outcomes there
    first_t: float  # first sample listing it on ``to``
    first_count: int

    @property
    def gap(self) -> float:
        return self.first_t - self.last_t


@dataclass
class Pause:
    """The longest stretch of samples over which a sum of counts did not grow."""

    last_growth: float  # the sample before the stretch (the last that grew)
    resumed: float | None  # the first sample that grew again (None: never)

    @property
    def seconds(self) -> float | None:
        return None if self.resumed is None else self.resumed - self.last_growth


@dataclass
class ScaleResult:
    """What happened, what it should have been, and what is wrong (``problems``)."""

    options: ScaleOptions
    bootstrap: str = ""
    prefix: str = ""
    truth: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)  # B's /models at the end
    samples: list[ScaleSample] = field(default_factory=list)
    wall0: float = 0.0  # time.time() of the first record counted
    pids: dict[str, int] = field(default_factory=dict)
    # events, seconds since the first record counted
    b_started_at: float | None = None
    b_ready_at: float | None = None  # B's /healthz ok
    a_sigterm_at: float | None = None
    a_sigterm_delay: float = 0.0  # after the planned moment (waiting for the split)
    a_exited_at: float | None = None
    a_exit_code: int | None = None
    a_killed: bool = False  # A did not exit within stop_timeout: SIGKILLed
    simulate_exit: int | None = None
    simulate_output: str = ""
    simulator_seconds: float | None = None  # first record -> simulator exited
    caught_up_after_end: float | None = None  # simulator exited -> its topics committed
    settled_after_end: float | None = None  # ... -> a TTL later, lag 0, counts steady
    final_lag: int | None = None
    final_lag_by_topic: dict[str, int] = field(default_factory=dict)
    lag_peak: int = 0
    # derived from the samples (analyse())
    all_models: list[str] = field(default_factory=list)
    split_at: float | None = None  # (a) the first clean split
    split: dict[str, list[str]] = field(default_factory=dict)  # worker -> models, at A's SIGTERM
    out_pause: Pause | None = None  # (b) all models, from B's start
    out_pause_moved: Pause | None = None  # the models that moved to B
    out_pause_stayed: Pause | None = None  # the models that stayed on A
    scale_in_at: float | None = None  # (c) B lists every model
    in_pause: Pause | None = None  # A's models, from A's SIGTERM
    overlaps: dict[str, list[tuple[float, list[str]]]] = field(default_factory=dict)  # (d)
    handovers: list[Handover] = field(default_factory=list)
    first_late: tuple[float, str, str] | None = None  # (t, worker, model) of the first late
    first_duplicate: tuple[float, str, str] | None = None
    # alerts (f)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    alerts_on_topic: Counter[str] = field(default_factory=Counter)
    alert_ids_on_topic: Counter[str] = field(default_factory=Counter)
    keys_by_condition: dict[tuple[Any, ...], set[str]] = field(default_factory=dict)
    delivered: Counter[str] = field(default_factory=Counter)
    delivered_ids: Counter[str] = field(default_factory=Counter)
    drift_alert_at: float | None = None
    drift_alert_on: str | None = None  # the worker listing pricing then
    # the workers' logs
    log_events: dict[str, list[tuple[float | None, str]]] = field(default_factory=dict)
    log_trouble: dict[str, Counter[str]] = field(default_factory=dict)
    crashes: list[str] = field(default_factory=list)
    aborted: str | None = None
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- analysis


def _by_model(
    listing: list[dict[str, Any]],
) -> tuple[dict[str, int], dict[str, tuple[int, int, int]]]:
    """``/models`` (one entry per model version) -> model id -> predictions + outcomes,
    and model id -> (expired, late, duplicates)."""
    counted: dict[str, int] = {}
    flags: dict[str, tuple[int, int, int]] = {}
    for m in listing:
        key = m["model_id"]
        counted[key] = counted.get(key, 0) + _counted([m])
        e, la, d = flags.get(key, (0, 0, 0))
        flags[key] = (
            e + int(m.get("expired") or 0),
            la + int(m.get("late") or 0),
            d + int(m.get("duplicates") or 0),
        )
    return counted, flags


def _is_split(s: ScaleSample, models: set[str]) -> bool:
    """Both answer, B has models, every model is on exactly one of them."""
    if s.a is None or s.b is None or not s.b:
        return False
    return set(s.a) | set(s.b) >= models and not set(s.a) & set(s.b)


def _totals(samples: list[ScaleSample], models: set[str]) -> list[tuple[float, int]]:
    """(t, summed counts of ``models``): each model's latest figure on whichever worker
    lists it (the higher if both), kept from earlier samples while neither does."""
    last: dict[str, int] = {}
    out = []
    for s in samples:
        for m in models:
            values = [w[m] for w in (s.a, s.b) if w is not None and m in w]
            if values:
                last[m] = max(values)
        out.append((s.t, sum(last.values())))
    return out


def _flag_totals(samples: list[ScaleSample]) -> list[tuple[float, tuple[int, int, int]]]:
    """(t, summed (expired, late, duplicates)), each model's latest figures as in
    :func:`_totals`."""
    last: dict[str, tuple[int, int, int]] = {}
    out = []
    for s in samples:
        models = {m for per in s.flags.values() for m in per}
        for m in models:
            last[m] = max(per[m] for per in s.flags.values() if m in per)
        sums = [sum(v[i] for v in last.values()) for i in range(3)]
        out.append((s.t, (sums[0], sums[1], sums[2])))
    return out


def _first_flag(samples: list[ScaleSample], index: int) -> tuple[float, str, str] | None:
    """(t, worker, model) of the first sample with a late (1) or duplicate (2) count."""
    for s in samples:
        for w in (A, B):
            for m, values in sorted(s.flags.get(w, {}).items()):
                if values[index]:
                    return s.t, w, m
    return None


def _longest_pause(series: list[tuple[float, int]], start: float, end: float) -> Pause | None:
    """The longest run of non-growing samples whose last growth is in [start, end]."""
    best: Pause | None = None
    best_len = -1.0
    i = 1
    while i < len(series):
        if series[i][1] > series[i - 1][1]:
            i += 1
            continue
        j = i
        while j < len(series) and series[j][1] <= series[j - 1][1]:
            j += 1
        last_growth = series[i - 1][0]
        resumed = series[j][0] if j < len(series) else None
        stop = series[-1][0] if resumed is None else resumed
        if start <= last_growth <= end and stop - last_growth > best_len:
            best, best_len = Pause(last_growth, resumed), stop - last_growth
        i = j + 1
    return best


def _handovers(samples: list[ScaleSample]) -> list[Handover]:
    """Every time a model newly listed on one worker was last listed on the other."""
    listed: dict[tuple[str, str], bool] = {}
    seen: dict[tuple[str, str], tuple[float, int]] = {}
    out = []
    for s in samples:
        for w, other in ((A, B), (B, A)):
            listing = s.on(w)
            if listing is None:
                continue
            for m, count in listing.items():
                if not listed.get((w, m)):
                    before, mine = seen.get((other, m)), seen.get((w, m))
                    if before is not None and (mine is None or mine[0] < before[0]):
                        out.append(Handover(m, other, w, before[0], before[1], s.t, count))
                listed[(w, m)] = True
                seen[(w, m)] = (s.t, count)
            for key in [k for k in listed if k[0] == w and k[1] not in listing]:
                listed[key] = False
    return out


def analyse(r: ScaleResult) -> None:
    """Derive (a)-(d) and the handovers from the samples and the moments of the run."""
    o = r.options
    truth_models = {t["model_id"] for t in r.truth.get("models", [])}
    seen = {m for s in r.samples for w in (s.a, s.b) if w for m in w}
    models = truth_models or seen
    r.all_models = sorted(models)
    r.handovers = _handovers(r.samples)
    r.first_late = _first_flag(r.samples, 1)
    r.first_duplicate = _first_flag(r.samples, 2)
    r.lag_peak = max((s.lag or 0 for s in r.samples), default=0)
    if r.b_started_at is None:
        return
    b0 = r.b_started_at
    a_term = r.a_sigterm_at if r.a_sigterm_at is not None else float("inf")
    r.split_at = next((s.t for s in r.samples if s.t >= b0 and _is_split(s, models)), None)
    before_term = [s for s in r.samples if s.t < a_term and s.a is not None and s.b is not None]
    if before_term:
        last = before_term[-1]
        assert last.a is not None and last.b is not None
        r.split = {A: sorted(last.a), B: sorted(last.b)}
    moved = set(r.split.get(B, []))
    stayed = models - moved
    settled = r.split_at if r.split_at is not None else a_term
    # A pause of the rebalance begins between B's start and the split it leads to.
    window_end = min(a_term - o.sample_interval, settled)
    r.out_pause = _longest_pause(_totals(r.samples, models), b0, window_end)
    if moved:
        r.out_pause_moved = _longest_pause(_totals(r.samples, moved), b0, window_end)
    if stayed:
        r.out_pause_stayed = _longest_pause(_totals(r.samples, stayed), b0, window_end)
    r.overlaps = {phase: [] for phase in PHASES}
    for s in r.samples:
        both = s.both()
        if not both or s.t < b0:
            continue
        phase = "rebalance" if s.t < settled else "settled" if s.t < a_term else "scale-in"
        r.overlaps[phase].append((s.t, sorted(both)))
    if r.a_sigterm_at is None:
        return
    r.scale_in_at = next(
        (s.t for s in r.samples if s.t >= a_term and s.b is not None and set(s.b) >= models),
        None,
    )
    a_models = set(r.split.get(A, [])) or models
    end = r.scale_in_at if r.scale_in_at is not None else r.samples[-1].t
    r.in_pause = _longest_pause(_totals(r.samples, a_models), a_term - o.sample_interval, end)


def _log_lines(log: bytes, wall0: float) -> tuple[list[tuple[float | None, str]], Counter[str]]:
    """The rebalance events of a worker's log (seconds since ``wall0``) and its troubles.

    Troubles (warnings, errors, tracebacks, crashes) are counted by their
    message with the numbers masked, so a repeated one shows once.
    """
    events: list[tuple[float | None, str]] = []
    trouble: Counter[str] = Counter()
    for raw in log.splitlines():
        m = _LOG_TIME.match(raw)
        at: float | None = None
        text = raw
        if m is not None:
            stamp = time.mktime(time.strptime(m.group(1).decode(), "%Y-%m-%d %H:%M:%S"))
            at = stamp + int(m.group(2)) / 1000 - wall0
            text = b"[" + m.group(3) + b"] " + m.group(4)
        line = text.decode(errors="replace").strip()
        if _TROUBLE.search(raw):
            trouble[re.sub(r"\d+", "#", line)[:200]] += 1
        elif _EVENTS.search(raw):
            events.append((at, line[:180]))
    return events, trouble


# --------------------------------------------------------------------------- checks


def _check(r: ScaleResult) -> None:
    o = r.options
    for line in dict.fromkeys(r.crashes):
        r.problems.append(f"a worker logged a crash: {line}")
    if r.aborted is not None:
        r.problems.append(f"the run stopped early: {r.aborted}")
        return
    if r.simulate_exit is None:
        r.problems.append("the simulator's end was not seen")
    if not r.truth:
        r.problems.append("the simulator wrote no truth file")
    else:
        if r.truth.get("errors"):
            r.problems.append(f"the simulator reported send errors: {r.truth['errors'][:3]}")
        r.problems.extend(_count_problems(r.truth, r.models))
    if r.b_started_at is None:
        r.problems.append("worker B was never started")
    elif r.split_at is None:
        r.problems.append("the models never split cleanly between workers A and B")
    if r.split and not r.split.get(A):
        r.problems.append("after the scale-out worker A had no model left: no real split")
    for t, both in r.overlaps.get("settled", []):
        r.problems.append(f"at {t:.1f} s, after the split had settled, {both} on both workers")
    if r.a_sigterm_at is None:
        r.problems.append("worker A was never stopped")
    else:
        if r.a_killed:
            r.problems.append(
                f"worker A did not exit within {o.stop_timeout:g} s of its SIGTERM: killed"
            )
        elif r.a_exit_code not in (0, None):
            r.problems.append(f"worker A exited with {r.a_exit_code} after its SIGTERM")
        if r.scale_in_at is None:
            r.problems.append("after A stopped, worker B never listed every model")
    if r.final_lag != 0:
        r.problems.append(
            f"the workers' committed lag is {r.final_lag}, not 0 ({r.final_lag_by_topic})"
        )
    if r.caught_up_after_end is None:
        r.problems.append(
            f"worker B did not catch up within {o.catch_up_timeout:g} s of the run's end"
        )
    elif r.settled_after_end is None:
        r.problems.append("worker B's counts did not settle after the label TTL")
    if not any(
        a.get("model_id") == DRIFTING_MODEL
        and a.get("monitor") == DRIFT_MONITOR
        and a.get("status") == "firing"
        for a in r.alerts
    ):
        r.problems.append(f"no {DRIFT_MONITOR} alert for {DRIFTING_MODEL} on the alert topic")
    for cond, keys in sorted(r.keys_by_condition.items(), key=str):
        if len(keys) > 1:
            r.problems.append(f"condition {cond} on the alert topic under keys {sorted(keys)}")
    lost = [i for i in r.alert_ids_on_topic if not r.delivered_ids[i]]
    if lost:
        r.problems.append(f"{len(lost)} alert(s) on the topic never delivered: {lost[:5]}")


# --------------------------------------------------------------------------- the run


async def run_scale_out(options: ScaleOptions, *, say: Say = print) -> ScaleResult:
    """Start a broker, play the scenario, add worker B, stop worker A; check (see the module).

    Raises :class:`~driftline.bench.broker_restart.BrokerError` if the
    broker cannot be started or something already answers on its port;
    everything else that goes wrong is a problem of the result.
    """
    result = await on_own_broker(
        options,
        "driftline-scale-",
        lambda bootstrap: ScaleResult(options, bootstrap=bootstrap),
        _run,
        say,
    )
    analyse(result)
    _check(result)
    return result


def _raise_on_crash(workers: Iterable[CrashableWorker], result: ScaleResult) -> None:
    """Raise :class:`WorkerFailed` (with the traceback) once a worker's log shows a crash."""
    for worker in workers:
        crashes = worker.new_crashes()
        result.crashes.extend(crashes)
        if crashes:
            raise WorkerFailed(f"a worker crashed:\n{worker.excerpt(crashes[0])}")


async def _listing(
    worker: CrashableWorker,
) -> tuple[dict[str, int], dict[str, tuple[int, int, int]]] | None:
    """``/models`` of ``worker`` by model id (:func:`_by_model`), or None if it is down or
    does not answer."""
    import aiohttp

    if not worker.running() or worker._session is None:
        return None
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError, orjson.JSONDecodeError):
        return _by_model(await asyncio.wait_for(worker._get("/models"), REQUEST_TIMEOUT))
    return None


async def _stop_gracefully(
    worker: CrashableWorker, timeout: float
) -> tuple[int | None, bool, float]:
    """After its SIGTERM: wait for the exit, SIGKILL after ``timeout``.

    Returns (exit code, killed, ``time.monotonic()`` of the exit).
    """
    assert worker.proc is not None
    try:
        code: int | None = await asyncio.wait_for(worker.proc.wait(), timeout)
        return code, False, time.monotonic()
    except TimeoutError:
        await worker.kill()
        return worker.proc.returncode, True, time.monotonic()


async def _run(
    broker: LocalBroker, o: ScaleOptions, workdir: Path, result: ScaleResult, say: Say
) -> None:
    prefix = f"so-{uuid.uuid4().hex[:8]}-"
    result.prefix = prefix
    bootstrap = broker.bootstrap
    config_path: str | None = None
    if o.config_text is not None:
        path = workdir / f"{prefix}driftline.toml"
        path.write_text(o.config_text)
        config_path = str(path)
    workers: dict[str, CrashableWorker] = {}
    for name in (A, B):
        w = CrashableWorker(
            bootstrap, prefix, partitions=o.partitions, loglevel="info", config_path=config_path
        )
        _worker_env(w, {"DRIFTLINE_LABEL_TTL": f"{o.label_ttl:g}s"})
        if o.static_membership:
            w.instance_id = f"{prefix}{name.lower()}"
        workers[name] = w
    a, b = workers[A], workers[B]
    config = a.config
    inputs = [config.topics.predictions, config.topics.outcomes, config.model_events_topic]
    tps = [TopicPartition(t, p) for t in inputs for p in range(o.partitions)]
    receiver = Receiver()
    reader = OffsetReader(bootstrap, config.app_id, tps)
    bridge: Background | None = None
    sim: Background | None = None
    watcher: asyncio.Task[None] | None = None
    sim_done: asyncio.Task[tuple[int | None, float]] | None = None
    a_exit: asyncio.Task[tuple[int | None, bool, float]] | None = None
    truth_path = workdir / f"{prefix}truth.json"
    try:
        await a.create_topics()
        await a.start()
        await a.wait_ready()
        result.pids[A] = a.pid
        await reader.start()
        await receiver.start()
        env = dict(a.env)
        bridge, sim = start_traffic(o, receiver.url, env, workdir, prefix, truth_path)
        say(
            f"worker A (pid {a.pid}, port {a.port}), bridge and simulator started on"
            f" {bootstrap} (topics {prefix}*, {o.partitions} partitions)"
        )

        deadline = time.monotonic() + 120
        while _counted(await a.models()) == 0:
            if sim.proc.poll() is not None or time.monotonic() > deadline:
                raise WorkerFailed(f"no traffic reached worker A:\n{sim.log_tail()}")
            await asyncio.sleep(0.2)
        t0 = time.monotonic()
        result.wall0 = time.time()

        def now() -> float:
            return time.monotonic() - t0

        async def sample() -> None:
            t = now()

            async def lag() -> int | None:
                with contextlib.suppress(TimeoutError, KafkaError):
                    return _lag(*await reader.read(timeout=REQUEST_TIMEOUT))
                return None

            sa, sb, sl = await asyncio.gather(_listing(a), _listing(b), lag())
            flags = {w: got[1] for w, got in ((A, sa), (B, sb)) if got is not None}
            result.samples.append(
                ScaleSample(
                    t, None if sa is None else sa[0], None if sb is None else sb[0], sl, flags
                )
            )
            if result.b_started_at is not None and result.b_ready_at is None and await b.healthy():
                result.b_ready_at = now()

        async def watch() -> None:
            while True:
                started = time.monotonic()
                await sample()
                await asyncio.sleep(max(0.0, o.sample_interval - (time.monotonic() - started)))

        watcher = asyncio.create_task(watch())

        async def simulator_exit() -> tuple[int | None, float]:
            assert sim is not None
            rc = await sim.wait(o.duration + 300)
            return rc, time.monotonic()

        sim_done = asyncio.create_task(simulator_exit())

        async def wait_until(moment: float, done: Callable[[], bool] = lambda: False) -> None:
            while now() < moment and not done():
                _raise_on_crash(workers.values(), result)
                if not a.running() and result.a_sigterm_at is None:
                    raise WorkerFailed(f"worker A exited on its own:\n{a.log_tail()}")
                if result.b_started_at is not None and not b.running():
                    raise WorkerFailed(f"worker B exited:\n{b.log_tail()}")
                await asyncio.sleep(min(0.25, max(0.0, moment - now())))

        # Scale out.
        await wait_until(o.scale_out_at * o.duration)
        models = {m for s in result.samples if s.a for m in s.a}
        await b.start()
        result.b_started_at = b_start = now()
        result.pids[B] = b.pid
        say(
            f"[{now():5.1f}s] worker B started (pid {b.pid}, port {b.port});"
            f" {len(models)} models on A"
        )

        def first_split() -> ScaleSample | None:
            return next(
                (s for s in result.samples if s.t >= b_start and _is_split(s, models)), None
            )

        def split_seen() -> bool:
            return first_split() is not None

        planned = o.scale_in_at * o.duration
        await wait_until(planned, split_seen)
        if not split_seen():
            say(f"[{now():5.1f}s] no clean split yet: A's SIGTERM waits for it")
            await wait_until(planned + o.split_timeout, split_seen)
        split = first_split()
        if split is not None:
            assert split.a is not None and split.b is not None
            say(
                f"[{split.t:5.1f}s] split {split.t - b_start:.1f} s after B's start:"
                f" A {sorted(split.a)}, B {sorted(split.b)}"
            )
        else:
            say(f"[{now():5.1f}s] still no clean split: stopping A anyway")
        await wait_until(planned)

        # Scale in.
        if sim_done.done():
            say(f"[{now():5.1f}s] the simulator ended before the scale-in")
        assert a.proc is not None
        with contextlib.suppress(ProcessLookupError):
            a.proc.send_signal(signal.SIGTERM)
        result.a_sigterm_at = a_term = now()
        result.a_sigterm_delay = max(0.0, result.a_sigterm_at - planned)
        say(f"[{now():5.1f}s] SIGTERM to worker A (pid {a.pid})")
        a_exit = asyncio.create_task(_stop_gracefully(a, o.stop_timeout))

        def all_on_b() -> bool:
            last = result.samples[-1] if result.samples else None
            return bool(last and last.t > a_term and last.b and set(last.b) >= models)

        while True:
            if a_exit.done() and result.a_exited_at is None:
                result.a_exit_code, result.a_killed, exited = a_exit.result()
                result.a_exited_at = exited - t0
                say(
                    f"[{result.a_exited_at:5.1f}s] worker A exited ({result.a_exit_code}"
                    f"{', killed' if result.a_killed else ''})"
                )
            if a_exit.done() and (all_on_b() or sim_done.done()):
                break
            await wait_until(now() + 0.5)
        if all_on_b():
            say(f"[{now():5.1f}s] worker B lists all {len(models)} models")

        rc, sim_end = await sim_done
        _raise_on_crash(workers.values(), result)
        result.simulator_seconds = sim_end - t0
        result.simulate_exit = rc
        result.simulate_output = sim.log_tail(4000)
        if rc != 0:
            result.problems.append(f"driftline simulate exited with {rc}:\n{sim.log_tail(1500)}")
        say(f"[{now():5.1f}s] simulator finished (exit {rc}); waiting for B to catch up")
        if truth_path.exists():
            result.truth = orjson.loads(truth_path.read_bytes())

        # B alone from here: crash_recovery's settle loop, with its own options and result.
        shim = CrashResult(
            CrashOptions(
                port=o.port,
                label_ttl=o.label_ttl,
                catch_up_timeout=o.catch_up_timeout,
                partitions=o.partitions,
            )
        )
        sources = (config.topics.predictions, config.topics.outcomes)
        try:
            await _settle(b, reader, shim, sim_end, shim.options, sources)
        finally:
            result.crashes.extend(shim.crashes)
        result.caught_up_after_end = shim.caught_up_after_end
        result.settled_after_end = shim.settled_after_end
        result.models = shim.models
        say(
            f"[{now():5.1f}s] B read all the simulator wrote {_secs(result.caught_up_after_end)}"
            f" after it ended, settled after {_secs(result.settled_after_end)}"
        )
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        watcher = None
        ends, committed = await reader.read()
        result.final_lag = _lag(ends, committed)
        for tp, end in ends.items():
            lag = max(0, end - committed.get(tp, 0))
            result.final_lag_by_topic[tp.topic] = result.final_lag_by_topic.get(tp.topic, 0) + lag
        result.models = await b.models()

        # Alerts: every one on the topic delivered (the bridge is given time to finish).
        result.alerts = await _read_topic(bootstrap, config.topics.alerts, o.partitions)
        for alert in result.alerts:
            result.alerts_on_topic[alert["dedup_key"]] += 1
            result.alert_ids_on_topic[alert["alert_id"]] += 1
            result.keys_by_condition.setdefault(_condition(alert), set()).add(alert["dedup_key"])
            if (
                result.drift_alert_at is None
                and alert.get("model_id") == DRIFTING_MODEL
                and alert.get("monitor") == DRIFT_MONITOR
                and alert.get("status") == "firing"
            ):
                result.drift_alert_at = float(alert.get("emitted_at") or 0.0) - result.wall0
                result.drift_alert_on = _holder(
                    result.samples, DRIFTING_MODEL, result.drift_alert_at
                )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
            receiver.deliveries[i] for i in result.alert_ids_on_topic
        ):
            await asyncio.sleep(0.2)
        result.delivered = Counter(receiver.by_key)
        result.delivered_ids = Counter(receiver.deliveries)
        if not bridge.alive():
            result.problems.append(f"the bridge exited:\n{bridge.log_tail(1500)}")
    except WorkerFailed as exc:
        result.aborted = str(exc)
    except asyncio.CancelledError:
        # Interrupted: their data goes anyway, so the workers need not shut down politely.
        for w in workers.values():
            if w.running():
                await w.kill()
        raise
    finally:
        for task in (watcher, sim_done, a_exit):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if sim is not None:
            sim.stop()
        if bridge is not None:
            bridge.stop()
        await receiver.stop()
        await reader.stop()
        for name, w in workers.items():
            log = w._read_log()
            with contextlib.suppress(OSError):  # the worker's own directory goes with it
                (workdir / f"worker-{name.lower()}.log").write_bytes(log)
            if result.wall0:
                result.log_events[name], result.log_trouble[name] = _log_lines(log, result.wall0)
            await w.stop()  # removes its data directory


def _holder(samples: list[ScaleSample], model: str, at: float) -> str | None:
    """Which worker listed ``model`` in the last sample at or before ``at``."""
    for s in reversed(samples):
        if s.t <= at:
            on = [w for w in (A, B) if (s.on(w) or {}).get(model) is not None]
            return "+".join(on) or None
    return None


# --------------------------------------------------------------------------- report


def _rel(x: float | None, since: float | None) -> str:
    return "never" if x is None or since is None else f"{x - since:.1f} s"


def _pause(p: Pause | None, since: float, interval: float) -> str:
    if p is None:
        return f"grew at every sample (no pause at {interval:g} s resolution)"
    if p.resumed is None:
        return f"stopped at {p.last_growth - since:+.1f} s and never grew again"
    return (
        f"growing again {p.resumed - since:+.1f} s after it, after a pause of"
        f" {p.seconds:.1f} s from {p.last_growth - since:+.1f} s"
    )


def _names(models: Iterable[str]) -> str:
    return ", ".join(models) or "-"


def _trace(r: ScaleResult, start: float, end: float) -> list[str]:
    """Samples in [start, end] where the picture changed (and one every 5 s otherwise)."""
    totals = dict(_totals(r.samples, set(r.all_models)))
    flags = dict(_flag_totals(r.samples))
    rows: list[str] = []
    shown: tuple[Any, ...] | None = None
    shown_t = -1e9
    prev_total: int | None = None
    for s in r.samples:
        total = totals.get(s.t, 0)
        growing = prev_total is not None and total > prev_total
        prev_total = total
        if not start <= s.t <= end:
            continue
        expired, late, dups = flags.get(s.t, (0, 0, 0))
        state = (
            None if s.a is None else tuple(sorted(s.a)),
            None if s.b is None else tuple(sorted(s.b)),
            growing,
            late,
            dups,
        )
        if state == shown and s.t - shown_t < 5.0:
            continue
        shown, shown_t = state, s.t

        def side(listing: dict[str, int] | None) -> str:
            if listing is None:
                return "(no answer)"
            return f"{len(listing)}: {sum(listing.values())}"

        both = s.both()
        rows.append(
            f"  {s.t:6.1f}s {side(s.a):>16} {side(s.b):>16} {total:>9}"
            f" {'yes' if growing else 'no':>7} {expired:>7} {late:>5} {dups:>5}"
            f" {s.lag if s.lag is not None else '-':>6}  {_names(sorted(both)) if both else ''}"
        )
    return rows


def report(r: ScaleResult) -> str:
    """The figures as text: the moves and their times, handovers, counts, alerts, logs."""
    o = r.options
    sent = r.truth.get("predictions", 0), r.truth.get("outcomes", 0)
    b0 = r.b_started_at
    term = r.a_sigterm_at
    membership = "with --instance-id (static membership)" if o.static_membership else "dynamic"
    lines = [
        f"scale out / scale in: {SCENARIO}, {o.models} models, {o.rate:g} predictions/s for"
        f" {o.duration:g} s in messages of {o.batch}, seed {o.seed}, {o.partitions} partitions,"
        f" {o.missing_labels:.0%} labels missing, label delay {o.label_delay},"
        f" label TTL {o.label_ttl:g} s; broker {r.bootstrap}; workers {membership}",
        f"sent {sent[0]:,} predictions and {sent[1]:,} outcomes (acknowledged); simulator ran"
        f" {_secs(r.simulator_seconds)} after the first record",
        "",
        "timeline (seconds since worker A counted the first record):",
    ]
    events: list[tuple[float, str]] = [(0.0, f"worker A counting (pid {r.pids.get(A, '-')})")]
    if b0 is not None:
        events.append(
            (
                b0,
                f"worker B started (pid {r.pids.get(B, '-')}); /healthz ok"
                f" {_rel(r.b_ready_at, b0)} later",
            )
        )
    if r.split_at is not None:
        events.append((r.split_at, "models split between A and B, none on both"))
    if term is not None:
        delay = f", {r.a_sigterm_delay:.1f} s after planned" if r.a_sigterm_delay > 0.05 else ""
        events.append((term, f"SIGTERM to worker A{delay}"))
    if r.a_exited_at is not None:
        how = "killed after the stop timeout" if r.a_killed else f"exit {r.a_exit_code}"
        events.append((r.a_exited_at, f"worker A exited ({how})"))
    if r.scale_in_at is not None:
        events.append((r.scale_in_at, f"worker B lists all {len(r.all_models)} models"))
    if r.drift_alert_at is not None:
        events.append(
            (
                r.drift_alert_at,
                f"{DRIFTING_MODEL} {DRIFT_MONITOR} alert emitted (on worker"
                f" {r.drift_alert_on or '?'}; drift starts at {o.drift_at:g} s of the"
                " simulator's run)",
            )
        )
    for what, first in (("late outcome", r.first_late), ("duplicate", r.first_duplicate)):
        if first is not None:
            events.append((first[0], f"first {what} counted ({first[2]} on worker {first[1]})"))
    if r.simulator_seconds is not None:
        events.append((r.simulator_seconds, "simulator ended"))
    lines += [f"  {t:6.1f}s  {text}" for t, text in sorted(events, key=lambda e: e[0])]
    lines.append("")
    if r.aborted is not None:
        last = r.samples[-1].t if r.samples else 0.0
        lines += [f"the run stopped early, at {last:.1f} s: see the problems below", ""]

    lines.append("measured:")
    step = o.sample_interval
    if b0 is not None:
        split = r.split
        lines += [
            f"  (a) scale-out rebalance: {_rel(r.split_at, b0)} from B's start to both workers"
            " answering with every model on exactly one",
            f"      before A's SIGTERM: A has {_names(split.get(A, []))};"
            f" B has {_names(split.get(B, []))}",
            "  (b) summed counts (predictions + outcomes, all models) after B's start:"
            f" {_pause(r.out_pause, b0, step)}",
            f"      the models that moved to B: {_pause(r.out_pause_moved, b0, step)}",
            f"      the models that stayed on A: {_pause(r.out_pause_stayed, b0, step)}",
        ]
    if term is not None:
        lines += [
            f"  (c) scale-in: {_rel(r.scale_in_at, term)} from A's SIGTERM to B listing every"
            " model",
            f"      A's models after A's SIGTERM: {_pause(r.in_pause, term, step)}",
        ]
    if r.overlaps:
        lines.append("  (d) samples with a model listed on both workers at once:")
        for phase, label in zip(
            PHASES,
            (
                "during the scale-out rebalance (B's start to the split)",
                "after the split settled (to A's SIGTERM)",
                "while A shut down (A's SIGTERM to its exit)",
            ),
            strict=True,
        ):
            hits = r.overlaps.get(phase, [])
            models = Counter(m for _, both in hits for m in both)
            where = (
                f": {', '.join(f'{m} ({n})' for m, n in sorted(models.items()))},"
                f" from {hits[0][0]:.1f} s to {hits[-1][0]:.1f} s"
                if hits
                else ""
            )
            lines.append(f"      {label}: {len(hits)}{where}")
    for what, first in (("late outcome", r.first_late), ("duplicate", r.first_duplicate)):
        lines.append(
            f"  first {what} counted: "
            + (f"at {first[0]:.1f} s, {first[2]} on worker {first[1]}" if first else "none")
        )
    lines += [
        f"  samples: {len(r.samples)}, every {o.sample_interval:g} s; committed lag peak"
        f" {r.lag_peak} messages, final {r.final_lag}",
        f"  after the simulator ended: B read its topics after {_secs(r.caught_up_after_end)},"
        f" counts settled (a label TTL later, lag 0) after {_secs(r.settled_after_end)}",
        "",
    ]

    if r.handovers:
        lines += [
            "handovers (last sample listing the model on the old worker -> first on the new):",
            f"  {'model':<12} {'move':<6} {'last seen':>9} {'count':>8} {'first seen':>10}"
            f" {'count':>8} {'gap':>6}  count went",
        ]
        for h in r.handovers:
            went = (
                "on"
                if h.first_count >= h.last_count
                else f"back by {h.last_count - h.first_count} (redone from a checkpoint)"
            )
            lines.append(
                f"  {h.model:<12} {h.source}->{h.to:<3} {h.last_t:>8.1f}s {h.last_count:>8}"
                f" {h.first_t:>9.1f}s {h.first_count:>8} {h.gap:>5.1f}s  {went}"
            )
        lines.append("")

    windows = []
    if b0 is not None:
        windows.append((b0 - 1.0, (r.split_at if r.split_at is not None else b0 + 30) + 5.0))
    if term is not None:
        windows.append(
            (term - 1.0, (r.scale_in_at if r.scale_in_at is not None else term + 60) + 5)
        )
    if windows:
        lines += [
            "around the moves (samples where the picture changed, else one per 5 s; per"
            " worker: models listed: their predictions + outcomes; summed over the models,"
            " each once:",
            " predictions + outcomes, growing since the last sample, expired, late,"
            " duplicates; the group's committed lag; models listed on both):",
            f"  {'t':>7} {'worker A':>16} {'worker B':>16} {'summed':>9} {'growing':>7}"
            f" {'expired':>7} {'late':>5} {'dup':>5} {'lag':>6}  on both",
        ]
        for start, end in windows:
            lines += [*_trace(r, start, end), "  ..."]
        lines.append("")

    lines += counts_table(r)
    lines += [""]
    lines += alerts_table(r, "", "a handover")

    for name in (A, B):
        events = r.log_events.get(name, [])
        trouble = r.log_trouble.get(name, Counter())
        if not events and not trouble:
            continue
        lines.append(f"worker {name}'s log: rebalance events (seconds since the first record)")
        for at, text in events:
            lines.append(f"  {'' if at is None else f'{at:6.1f}s':>7} {text}")
        if trouble:
            lines.append(f"  warnings and errors ({sum(trouble.values())}; numbers masked):")
            for text, n in trouble.most_common(12):
                lines.append(f"  {n:>5} x {text}")
        lines.append("")

    if r.problems:
        lines.append(f"FAILED: {len(r.problems)} problem(s)")
        lines += [f"  - {p}" for p in r.problems]
    else:
        lines.append(
            "OK: every model on one worker once split, handed over and back to one worker,"
            " counts exact, each condition under one dedup key, every alert delivered"
        )
    return "\n".join(lines)

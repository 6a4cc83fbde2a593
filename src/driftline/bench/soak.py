"""Bounded resources against a live broker: a soak at a fixed rate, and RSS per pending join.

**Soak** (:func:`run_soak`). A worker that is fine for a minute can still
leak: a dict that only grows, a changelog queue never drained, a tombstone
never forgotten. The soak creates its own topics (a unique prefix, so its
own app id and consumer group too), starts ``driftline worker`` as a
subprocess (:class:`~driftline.bench.stream.WorkerProcess`) and
``driftline simulate`` at a fixed rate, single-record messages and a
realistic label delay, and samples every ``interval`` seconds:

- the worker's RSS (``VmRSS`` of ``/proc/<pid>/status``) and CPU;
- the consumer lag of the input topics: end offsets minus the worker's
  committed offsets, read from the broker (what an operator's lag monitor
  sees; it includes up to one commit interval of work in flight);
- the ``/models`` totals (predictions, joined, expired, pending);
- lines in the worker's log that report an error (:data:`ERROR_LINE`).

Then the traffic stops and the soak waits for the lag to return to zero.
The join keeps an entry up to two label TTLs after it is created (pending,
then a tombstone that recognises a retry), so memory only levels off after
that: the soak sets ``label_ttl`` (default 60 s) so that the join reaches
its steady state within the warm-up. Verdict (:attr:`SoakResult.problems`):
RSS at the end of the traffic at most ``max_growth`` above RSS at the end of
the warm-up; lag never above ``lag_bound`` (default: 10 s of traffic) and
back to 0 after the traffic stops; no error line; the worker alive.

**Pending joins** (:func:`run_pending`). Predictions only, no outcomes,
with a long TTL, so every prediction stays in the join; the worker's RSS
is read once ``/models`` counts each step's predictions, and the growth
per pending prediction is reported.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from driftline.bench.produce import PRODUCER_OPTIONS, PairFactory, encode_pairs
from driftline.bench.stream import (
    WorkerFailed,
    WorkerProcess,
    _die_with_parent,
    _totals,
    delete_topics_with_prefix,
)

__all__ = [
    "ERROR_LINE",
    "PendingResult",
    "SoakResult",
    "SoakSample",
    "pending_report",
    "run_pending",
    "run_soak",
    "soak_report",
]

ERROR_LINE = re.compile(
    rb"\[(?:ERROR|CRITICAL)\]|Traceback \(most recent call last\)|Crashed reason="
)
"""A worker log line that reports an error (Faust's log format, a traceback, a crashed agent)."""

DRAIN_TIMEOUT = 90.0
"""Seconds the soak waits, after the traffic stops, for the lag to return to 0."""

Echo = Callable[[str], None]


def _rss(pid: int) -> int:
    """Current resident set size of ``pid`` in bytes (0 once it is gone)."""
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class LagReader:
    """End offsets minus a group's committed offsets, with clients kept open between reads.

    A fresh admin client and consumer per sample would cost a connection
    and a metadata round trip every ``interval``; these live for the run.
    """

    def __init__(self, bootstrap: str, group: str, topics: Sequence[str], partitions: int):
        self.group = group
        self.tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)

    async def start(self) -> None:
        await self.admin.start()
        await self.consumer.start()

    async def stop(self) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def lag(self) -> int:
        """Messages of the input topics not yet committed by the group, over all partitions."""
        committed = await self.admin.list_consumer_group_offsets(self.group, partitions=self.tps)
        ends = await self.consumer.end_offsets(self.tps)
        total = 0
        for tp in self.tps:
            meta = committed.get(tp)
            done = meta.offset if meta is not None and meta.offset >= 0 else 0
            total += ends[tp] - done
        return total


@dataclass(frozen=True, slots=True)
class SoakSample:
    """One row of the soak table."""

    t: float  # seconds since the traffic started
    rss: int
    cpu: float  # share of one core since the previous sample
    lag: int
    predictions: int
    joined: int
    expired: int
    pending: int
    errors: int
    sending: bool


@dataclass(slots=True)
class SoakResult:
    """The samples and the verdict of one soak."""

    rate: float
    seconds: float
    scenario: str
    label_ttl: str
    label_delay: str
    warmup: float
    max_growth: float
    lag_bound: int
    samples: list[SoakSample] = field(default_factory=list)
    drained_lag: int | None = None
    drain_seconds: float = 0.0
    error_lines: list[str] = field(default_factory=list)
    alive: bool = True
    failure: str | None = None

    def _sending(self) -> list[SoakSample]:
        return [s for s in self.samples if s.sending]

    @property
    def baseline(self) -> SoakSample | None:
        """The first sample at or after the warm-up."""
        return next((s for s in self._sending() if s.t >= self.warmup), None)

    @property
    def end(self) -> SoakSample | None:
        """The last sample while the traffic was on."""
        sending = self._sending()
        return sending[-1] if sending else None

    @property
    def growth(self) -> float:
        """RSS growth from :attr:`baseline` to :attr:`end`, as a fraction."""
        base, end = self.baseline, self.end
        if base is None or end is None or not base.rss:
            return float("nan")
        return end.rss / base.rss - 1.0

    @property
    def max_lag(self) -> int:
        return max((s.lag for s in self._sending()), default=0)

    @property
    def errors(self) -> int:
        return self.samples[-1].errors if self.samples else 0

    @property
    def problems(self) -> list[str]:
        out = []
        if self.failure:
            out.append(self.failure)
        if not self.alive:
            out.append("the worker died")
        if self.baseline is None or self.baseline is self.end:
            out.append(f"too short: no sample after the {self.warmup:g} s warm-up to compare")
        elif not self.growth <= self.max_growth:
            out.append(
                f"RSS grew {self.growth:.1%} after the warm-up (bound {self.max_growth:.0%})"
            )
        if self.max_lag > self.lag_bound:
            out.append(f"lag reached {self.max_lag:,} messages (bound {self.lag_bound:,})")
        if self.drained_lag != 0:
            out.append(
                f"lag did not return to 0 within {DRAIN_TIMEOUT:.0f} s after the traffic stopped"
                f" ({self.drained_lag})"
            )
        if self.errors:
            out.append(f"{self.errors} error lines in the worker log")
        return out


def _worker_env(worker: WorkerProcess, settings: dict[str, str]) -> None:
    """Add ``DRIFTLINE_*`` settings to the worker's environment and reload its config."""
    from driftline.core.config import load_config

    worker.env.update(settings)
    worker.config = load_config(worker.config_path, env=worker.env)


async def run_soak(
    bootstrap: str,
    *,
    seconds: float,
    rate: float,
    scenario: str = "stable",
    models: int = 4,
    label_ttl: str = "60s",
    label_delay: str = "lognormal:5:1",
    partitions: int = 4,
    interval: float = 10.0,
    warmup: float = 120.0,
    max_growth: float = 0.10,
    lag_bound: int | None = None,
    echo: Echo = print,
) -> SoakResult:
    """Soak one worker at ``rate`` predictions/s for ``seconds``; see the module docstring.

    ``lag_bound`` defaults to 10 s of traffic (predictions and outcomes).
    Every topic of the run is deleted at the end.
    """
    prefix = f"dlsoak-{uuid.uuid4().hex[:8]}-"
    result = SoakResult(
        rate=rate,
        seconds=seconds,
        scenario=scenario,
        label_ttl=label_ttl,
        label_delay=label_delay,
        warmup=warmup,
        max_growth=max_growth,
        lag_bound=int(20 * rate) if lag_bound is None else lag_bound,
    )
    worker = WorkerProcess(bootstrap, prefix, partitions=partitions)
    _worker_env(worker, {"DRIFTLINE_LABEL_TTL": label_ttl})
    topics = worker.config.topics
    lag = LagReader(bootstrap, f"{prefix}worker", [topics.predictions, topics.outcomes], partitions)
    sim: asyncio.subprocess.Process | None = None
    sim_log = None
    echo(
        f"soak: prefix {prefix}, {rate:g} predictions/s for {seconds:g} s, {scenario},"
        f" label TTL {label_ttl}, label delay {label_delay}"
    )
    try:
        await worker.create_topics()
        await worker.start()
        await worker.wait_ready()
        await lag.start()
        assert worker._tmp is not None
        log_path = Path(worker._tmp) / "worker.log"
        sim_log = open(Path(worker._tmp) / "simulate.log", "wb")  # noqa: SIM115
        sim = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "driftline.cli", "simulate",
            "--scenario", scenario, "--models", str(models), "--rate", str(rate),
            "--duration", str(seconds), "--label-delay", label_delay,
            "--run-id", prefix.rstrip("-"),
            stdin=asyncio.subprocess.DEVNULL, stdout=sim_log, stderr=sim_log,
            env=worker.env, preexec_fn=_die_with_parent(),
        )  # fmt: skip
        started = time.monotonic()
        cpu_prev, t_prev = worker.cpu_seconds(), started
        drain_started: float | None = None
        while True:
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - t_prev)))
            sending = sim.returncode is None
            totals = _totals(await worker.models())
            now = time.monotonic()
            cpu = worker.cpu_seconds()
            lines = [ln for ln in _read(log_path).splitlines() if ERROR_LINE.search(ln)]
            sample = SoakSample(
                t=now - started,
                rss=_rss(worker.pid),
                cpu=(cpu - cpu_prev) / max(now - t_prev, 1e-9),
                lag=await lag.lag(),
                predictions=totals["predictions"],
                joined=totals["joined"],
                expired=totals["expired"],
                pending=totals["predictions"] - totals["joined"] - totals["expired"],
                errors=len(lines),
                sending=sending,
            )
            result.error_lines = [ln.decode(errors="replace")[:300] for ln in lines[:5]]
            cpu_prev, t_prev = cpu, now
            result.samples.append(sample)
            echo(_row(sample))
            if sending:
                continue
            if drain_started is None:
                drain_started = now
                interval = min(interval, 2.0)  # the drain is watched more closely
            if sample.lag == 0 or now - drain_started > DRAIN_TIMEOUT:
                result.drained_lag = sample.lag
                result.drain_seconds = now - drain_started
                break
        if sim.returncode:
            result.failure = f"driftline simulate exited with status {sim.returncode}"
    except WorkerFailed as exc:
        result.alive = False
        result.failure = str(exc).splitlines()[0]
    finally:
        if sim is not None and sim.returncode is None:
            sim.terminate()
            await sim.wait()
        if sim_log is not None:
            sim_log.close()
        with contextlib.suppress(Exception):
            await lag.stop()
        await worker.stop()
        with contextlib.suppress(Exception):
            await delete_topics_with_prefix(bootstrap, prefix)
    return result


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


_HEADER = (
    f"{'t s':>6} {'RSS MiB':>8} {'CPU':>5} {'lag':>7} {'predictions':>11} {'joined':>9}"
    f" {'expired':>7} {'pending':>7} {'errors':>6}"
)


def _row(s: SoakSample) -> str:
    return (
        f"{s.t:6.0f} {s.rss / 2**20:8.1f} {s.cpu:5.0%} {s.lag:7,} {s.predictions:11,}"
        f" {s.joined:9,} {s.expired:7,} {s.pending:7,} {s.errors:6}"
        + ("" if s.sending else "  (traffic stopped)")
    )


def soak_report(result: SoakResult) -> str:
    """The table and the summary, as ``scripts/soak.py`` prints them."""
    lines = [_HEADER, *map(_row, result.samples), ""]
    base, end = result.baseline, result.end
    if base is not None and end is not None:
        lines.append(
            f"RSS {base.rss / 2**20:.1f} MiB at {base.t:.0f} s (end of warm-up) ->"
            f" {end.rss / 2**20:.1f} MiB at {end.t:.0f} s (end of traffic):"
            f" {result.growth:+.1%} (bound {result.max_growth:.0%})"
        )
    first = result.samples[0] if result.samples else None
    if first is not None and end is not None:
        lines.append(f"RSS at the first sample ({first.t:.0f} s): {first.rss / 2**20:.1f} MiB")
    lines.append(
        f"lag: max {result.max_lag:,} messages while sending (bound {result.lag_bound:,});"
        f" {result.drained_lag} after the traffic stopped (waited {result.drain_seconds:.0f} s)"
    )
    if end is not None:
        lines.append(
            f"joined {result.samples[-1].joined:,} of {result.samples[-1].predictions:,}"
            f" predictions, {result.samples[-1].expired:,} expired"
            f" (label TTL {result.label_ttl}, delay {result.label_delay})"
        )
    lines.append(f"errors in the worker log: {result.errors}")
    lines += [f"  {line}" for line in result.error_lines]
    problems = result.problems
    lines.append("OK" if not problems else "FAIL: " + "; ".join(problems))
    return "\n".join(lines)


# --------------------------------------------------------------------------- pending joins


@dataclass(frozen=True, slots=True)
class PendingResult:
    """Worker RSS with no pending prediction, then at each step."""

    idle_rss: int
    steps: list[tuple[int, int]]  # (pending predictions, RSS bytes)
    features: int
    models: int
    # After the last step, a new worker process takes the partitions over
    # (restored from the changelog): its RSS once ready, and how long that took.
    restart: tuple[int, float] | None = None
    index: list[tuple[int, int]] = field(default_factory=list)  # per step: in memory, on disk

    def per_pending(self, i: int) -> float:
        """Bytes of RSS per pending prediction at step ``i``, counted from the idle worker."""
        pending, rss = self.steps[i]
        return (rss - self.idle_rss) / pending


async def run_pending(
    bootstrap: str,
    *,
    counts: Sequence[int],
    models: int = 10,
    features: int = 20,
    batch: int = 100,
    partitions: int = 4,
    label_ttl: str = "7d",
    timeout: float = 900.0,
    restart: bool = True,
    echo: Echo = print,
) -> PendingResult:
    """Send predictions only, up to each of ``counts`` in turn; read the worker's RSS at each.

    The records are the bench's (:class:`~driftline.bench.produce.PairFactory`),
    ``batch`` per message so the run is quick; the TTL is long, so none
    expires and every one is a pending join. With ``restart``, the worker is
    then replaced by a new process with an empty data directory, which
    restores every pending prediction from the changelog: its RSS once
    ready is the restore's.
    """
    prefix = f"dlpending-{uuid.uuid4().hex[:8]}-"
    worker = WorkerProcess(bootstrap, prefix, partitions=partitions)
    _worker_env(worker, {"DRIFTLINE_LABEL_TTL": label_ttl})
    factory = PairFactory(models=models, features=features, seed=7, id_prefix=prefix)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **PRODUCER_OPTIONS)
    steps: list[tuple[int, int]] = []
    index: list[tuple[int, int]] = []
    restarted: tuple[int, float] | None = None
    try:
        await worker.create_topics()
        await worker.start()
        await worker.wait_ready()
        await asyncio.sleep(2.0)
        idle = _rss(worker.pid)
        echo(f"pending: idle worker RSS {idle / 2**20:.1f} MiB")
        await producer.start()
        topic = worker.config.topics.predictions
        sent = 0
        for target in sorted(counts):
            while sent < target:
                n = min(10_000, target - sent)
                futures = [
                    await producer.send(topic, value, key=key)
                    for key, value, _ in encode_pairs(factory, sent, n, batch, time.time())
                ]
                await asyncio.gather(*futures)
                sent += n
            deadline = time.monotonic() + timeout
            while _totals(await worker.models())["predictions"] < target:
                if time.monotonic() > deadline:
                    raise WorkerFailed(f"the worker did not read {target:,} predictions in time")
                await asyncio.sleep(1.0)
            await asyncio.sleep(3.0)  # let the changelog writes and RocksDB settle
            rss = _rss(worker.pid)
            steps.append((target, rss))
            health = await worker.health()
            index.append((health["join_index_in_memory"], health["join_index_on_disk"]))
            echo(
                f"pending: {target:,} predictions waiting, RSS {rss / 2**20:.1f} MiB"
                f" ({(rss - idle) / target:,.0f} bytes per pending prediction over idle);"
                f" in memory {health['join_entries_in_memory']:,} entries and"
                f" {index[-1][0]:,} index items, {index[-1][1]:,} index items on disk"
            )
        if restart:
            await worker.stop()
            await worker.start()  # a new data directory: everything from the changelog
            ready = await worker.wait_ready(timeout=timeout) - worker.spawned
            await asyncio.sleep(3.0)
            restarted = (_rss(worker.pid), ready)
            health = await worker.health()
            echo(
                f"pending: a new worker restored {health['join_entries']:,} entries in"
                f" {ready:.1f} s, RSS {restarted[0] / 2**20:.1f} MiB"
            )
    finally:
        with contextlib.suppress(Exception):
            await producer.stop()
        await worker.stop()
        with contextlib.suppress(Exception):
            await delete_topics_with_prefix(bootstrap, prefix)
    return PendingResult(
        idle_rss=idle,
        steps=steps,
        features=features,
        models=models,
        restart=restarted,
        index=index,
    )


def pending_report(result: PendingResult) -> str:
    lines = [
        f"idle worker: RSS {result.idle_rss / 2**20:.1f} MiB"
        f" ({result.models} models, {result.features} features per prediction)",
        f"{'pending':>10} {'RSS MiB':>9} {'bytes/pending':>14}",
    ]
    for i, (pending, rss) in enumerate(result.steps):
        line = f"{pending:10,} {rss / 2**20:9.1f} {result.per_pending(i):14,.0f}"
        if i < len(result.index):
            memory, on_disk = result.index[i]
            line += f"   index items: {memory:,} in memory, {on_disk:,} on disk"
        lines.append(line)
    if len(result.steps) >= 2:
        (p0, r0), (p1, r1) = result.steps[0], result.steps[-1]
        lines.append(
            f"marginal: {(r1 - r0) / (p1 - p0):,.0f} bytes per pending prediction"
            f" from {p0:,} to {p1:,}"
        )
    if result.restart is not None:
        rss, ready = result.restart
        lines.append(
            f"restore: a new worker ready in {ready:.1f} s with {result.steps[-1][0]:,} pending,"
            f" RSS {rss / 2**20:.1f} MiB"
        )
    return "\n".join(lines)

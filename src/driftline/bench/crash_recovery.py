"""Kill the worker with SIGKILL mid-run, restart it on the same data: counts must stay exact.

Why: a worker that is stopped politely (SIGTERM) flushes its changelog,
commits its offsets and leaves its consumer group. One that is killed
outright (``kill -9``, the OOM killer, a node lost) does none of that: on
restart it finds its RocksDB store as the kernel left it, the join table's
changelog ahead of or behind the committed input offsets, and the model
events it had sent but not yet fed to its monitors. Only a run that really
kills the process shows whether every prediction is still counted once.

:func:`run_crash_recovery` starts everything itself, as a user would run it:

- a broker of its own (:class:`~driftline.bench.broker_restart.LocalBroker`,
  ``scripts/kafka-local`` on :attr:`CrashOptions.port`, never the shared
  9092), with the worker's topics (4 partitions) on it;
- ``driftline worker`` with a persistent ``--data-dir`` (the default
  RocksDB store) and a short label TTL (``DRIFTLINE_LABEL_TTL``), so the
  predictions whose outcome never comes expire during the run;
- ``driftline bridge webhook`` posting to a
  :class:`~driftline.bench.broker_restart.Receiver` in this process;
- ``driftline simulate --scenario covid`` with 5% missing labels, a
  lognormal label delay (median 2 s) and batched messages, writing what
  the broker acknowledged per model (``--truth``).

While the simulator runs it sends SIGKILL to the worker
:attr:`CrashOptions.kills` times, at seeded random moments spread over the
traffic (one per equal slot of :attr:`CrashOptions.kill_window`), and after
a pause of 1-3 s starts it again with the same command line, port and data
directory. A kill waits until the previous restart has caught up (and
:attr:`CrashOptions.min_gap` more), so that it lands on a worker at work,
with records in flight, and every recovery is measured whole.
Per kill it records when it killed, when it restarted, and the recovery:

- *ready*: from the restart until ``/healthz`` says ``ok`` (partitions
  assigned, join table restored). The worker runs with ``--instance-id``
  (static membership, :attr:`CrashOptions.static_membership`), so the
  restarted process takes the killed one's place in its consumer group at
  once; without it the broker first waits for the killed member's session
  to time out (about a minute), since a killed worker never leaves;
- *caught up*: from the restart until, on every partition of the
  worker's input topics (predictions, outcomes and its model-events
  topic), the group's committed offset has reached the end offset read at
  the moment of the restart: everything written before the restart has
  been processed and committed;
- *lag back*: from the restart until the summed committed lag is back to
  what it was in the 10 s before the kill.

After the simulator ends it waits for the worker to catch up and then one
label TTL more (the worker's idle timer advances event time, so every
prediction without an outcome expires), and checks, per model version,
against what the broker acknowledged to the simulator:

- ``predictions`` == sent predictions, ``joined`` == sent outcomes,
  ``expired`` == sent predictions - sent outcomes, ``duplicates`` == 0 and
  ``late`` == 0: a record processed twice after a kill shows as a
  duplicate (or as a count above the truth), monitor state lost with the
  process as a count below it;
- the committed lag is zero at the end, and the worker's log shows no
  crash (``Crashed reason=``: Faust restarts a crashed agent, but the
  batch it held is lost; the run stops at the first one, with its
  traceback);
- the concept-drift alert of ``pricing`` (the model the covid scenario
  shifts) is on the alert topic, no condition (model, version, monitor,
  segment) is on it under two different dedup keys, and every alert on it
  reached the receiver. An alert sent again after a restart under the same
  dedup key is what the at-least-once contract allows: it is counted and
  shown, not failed.

Everything it started (processes, the broker and its data, the worker's
data directory) is stopped and removed at the end, also on Ctrl-C and on
failure. ``scripts/crash_recovery.py`` prints :func:`report`;
``tests/integration/test_crash_recovery.py`` runs a short version and
asserts :attr:`CrashResult.problems` is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from driftline.bench.broker_restart import (
    SHARED_PORT,
    Background,
    BrokerError,
    LocalBroker,
    Receiver,
    _counted,
    _read_topic,
    count_problems,
)
from driftline.bench.soak import _worker_env
from driftline.bench.stream import WorkerFailed, WorkerProcess, _die_with_parent

__all__ = [
    "CrashOptions",
    "CrashResult",
    "CrashableWorker",
    "KillRecord",
    "report",
    "run_crash_recovery",
]

SCENARIO = "covid"
DRIFTING_MODEL = "pricing"
"""The model the covid scenario shifts (``driftline.scenarios``); the others are the control."""
DRIFT_MONITOR = "concept_drift"

LAG_BEFORE_WINDOW = 10.0
"""Seconds before a kill whose highest committed lag is the "pre-kill level"."""

Say = Callable[[str], None]


# --------------------------------------------------------------------------- the worker


class CrashableWorker(WorkerProcess):
    """A :class:`WorkerProcess` that can be killed with SIGKILL and started again.

    The first :meth:`start` picks the port and the data directory; every
    :meth:`restart` runs the very same command line (same ``--web-port``,
    same ``--data-dir``, same environment) and appends to the same log, as
    a supervisor restarting a crashed process would.
    """

    kills: int = 0
    _crash_scan: int = 0
    instance_id: str | None = None  # --instance-id: Kafka static membership

    def command(self, data_dir: Path) -> list[str]:
        command = super().command(data_dir)
        return [*command, "--instance-id", self.instance_id] if self.instance_id else command

    @property
    def data_dir(self) -> Path:
        assert self._tmp is not None, "start() first"
        return Path(self._tmp) / "data"

    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def kill(self) -> None:
        """SIGKILL the worker process and reap it: no shutdown code of its own runs."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        self.kills += 1

    async def restart(self) -> None:
        """Start the killed worker again with the same command line and data directory."""
        assert self._tmp is not None and self.proc is not None
        if self.proc.returncode is None:
            raise RuntimeError("the worker is still running: kill it first")
        if self._log is not None:
            self._log.close()
        self._log = open(Path(self._tmp) / "worker.log", "ab")  # noqa: SIM115
        self._log.write(f"\n===== restart after kill {self.kills} =====\n".encode())
        self._log.flush()
        self.spawned = time.perf_counter()
        self.proc = await asyncio.create_subprocess_exec(
            *self.command(self.data_dir),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=self.env,
            preexec_fn=_die_with_parent(),
        )

    def new_crashes(self) -> list[str]:
        """Lines of the log, since the last call, where an agent or the app crashed.

        :meth:`WorkerProcess.models` reports a crash only once, and this run
        calls it while the worker may be down on purpose; the log is
        appended across restarts and a killed process writes nothing, so
        every ``Crashed reason=`` line in it is a real crash.
        """
        log = self._read_log()
        end = log.rfind(b"\n") + 1
        chunk, self._crash_scan = log[self._crash_scan : end], max(self._crash_scan, end)
        return [
            line.decode(errors="replace").strip()
            for line in chunk.splitlines()
            if b"Crashed reason=" in line
        ]

    def excerpt(self, text: str, chars: int = 3000) -> str:
        """The log from the line that holds ``text`` on (its traceback), ``chars`` long."""
        log = self._read_log()
        at = log.find(text.encode())
        return "" if at < 0 else log[at : at + chars].decode(errors="replace")

    async def healthy(self) -> bool:
        """True if ``/healthz`` answers ``ok`` now (False while starting or down)."""
        import aiohttp

        if not self.running():
            return False
        with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
            return bool((await self._get("/healthz")).get("status") == "ok")
        return False


# --------------------------------------------------------------------------- kafka reads


class OffsetReader:
    """End offsets and a group's committed offsets, per partition, over one pair of clients.

    The broker stays up in this run, so the clients are opened once
    (:mod:`~driftline.bench.broker_restart` opens them per read because its
    broker goes away).
    """

    def __init__(self, bootstrap: str, group: str, tps: list[TopicPartition]) -> None:
        self.group = group
        self.tps = tps
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=5000
        )
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._admin.start()
        await self._consumer.start()

    async def stop(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._consumer.stop(), 10)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._admin.close(), 10)

    async def read(
        self, timeout: float = 5.0
    ) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
        """(end offsets, committed offsets); a partition never committed counts as 0."""
        async with self._lock:
            committed = await asyncio.wait_for(
                self._admin.list_consumer_group_offsets(self.group, partitions=self.tps), timeout
            )
            ends = await asyncio.wait_for(self._consumer.end_offsets(self.tps), timeout)
        done = {}
        for tp in self.tps:
            meta = committed.get(tp)
            done[tp] = meta.offset if meta is not None and meta.offset >= 0 else 0
        return dict(ends), done


def _lag(ends: dict[TopicPartition, int], committed: dict[TopicPartition, int]) -> int:
    return sum(max(0, end - committed.get(tp, 0)) for tp, end in ends.items())


# --------------------------------------------------------------------------- options, results


@dataclass(frozen=True)
class CrashOptions:
    """What to play, how often to kill, and where (seconds are wall-clock)."""

    port: int = 29192
    """The broker's port (its controller on ``port + 1``); never the shared 9092."""
    models: int = 4
    rate: float = 2000.0
    """Predictions per second over all models."""
    duration: float = 110.0
    """Seconds of traffic: by default 220,000 predictions, 209,000 of them with an outcome.
    Without static membership each recovery takes about 70 s (``wait_recovery``): 3
    kills then need about 240 s."""
    batch: int = 20
    """Records per Kafka message."""
    change_at: float | None = None
    """When the drift starts (default: half of ``duration``)."""
    seed: int = 7
    missing_labels: float = 0.05
    label_delay: str = "lognormal:2:0.5"
    label_ttl: float = 30.0
    """The worker's label TTL, seconds. Above the largest label delay of the run: the
    largest of 200,000 lognormal(median 2 s, sigma 0.5) delays is about 19 s, so a 20 s
    TTL would expire a real outcome (expired + late) in about one run of three."""
    kills: int = 3
    static_membership: bool = True
    """Run the worker with ``--instance-id``, as the README advises: a restarted worker gets
    its partitions back at once. Without it, the broker waits for the session timeout."""
    kill_seed: int | None = None
    """Seed of the kill moments and pauses (default: ``seed``)."""
    pause: tuple[float, float] = (1.0, 3.0)
    """Seconds between a kill and its restart: drawn uniformly from this range."""
    min_gap: float = 5.0
    """Seconds at least between two kills, and (``wait_recovery``) between a restarted
    worker catching up and the next kill."""
    wait_recovery: bool = True
    """Put a kill off until the previous restart has caught up, so that every kill lands
    on a worker at work (not one still waiting for its partitions, with no work in
    flight) and every recovery is measured whole."""
    recovery_timeout: float = 180.0
    """Seconds a restarted worker gets to catch up before no more kills are made."""
    kill_window: tuple[float, float] = (0.05, 0.65)
    """The share of ``duration`` the kill moments are spread over."""
    partitions: int = 4
    catch_up_timeout: float = 300.0
    """Seconds the worker gets, after the simulator ends, to catch up."""
    config_text: str | None = None
    """A ``driftline.toml`` for the worker (a short run may want quicker alerts)."""
    workdir: Path | None = None
    """Logs and the truth file go here (default: a temporary directory, removed)."""
    keep: bool = False
    """Keep the workdir, the worker's data directory and the broker's data."""

    @property
    def drift_at(self) -> float:
        return self.duration / 2 if self.change_at is None else self.change_at

    def check(self) -> None:
        """Raise ValueError for options the run cannot honour."""
        if self.port in (SHARED_PORT, SHARED_PORT + 1):
            raise ValueError(f"port {self.port} belongs to the shared broker; pick another")
        if self.kills < 0:
            raise ValueError(f"kills must be >= 0, got {self.kills}")
        if not 0 <= self.pause[0] <= self.pause[1]:
            raise ValueError(f"pause must be 0 <= low <= high, got {self.pause}")
        if self.label_ttl <= 0 or self.rate <= 0 or self.duration <= 0:
            raise ValueError("label_ttl, rate and duration must be positive")
        lo, hi = self.kill_window
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"kill_window must be shares 0 <= from < to <= 1, got {lo}, {hi}")
        if self.kills and (hi - lo) * self.duration / self.kills < self.min_gap:
            raise ValueError(
                f"{self.kills} kills at least {self.min_gap:g} s apart do not fit in"
                f" {(hi - lo) * self.duration:g} s of the run: lengthen --duration"
            )

    def kill_plan(self) -> list[tuple[float, float]]:
        """(seconds into the traffic, pause before the restart) of every kill, seeded.

        The window ``kill_window`` of the run is cut into ``kills`` equal
        slots and one moment drawn in each, ``min_gap / 2`` clear of the
        slot's edges, so the kills are spread over the run and at least
        ``min_gap`` apart.
        """
        rng = random.Random(self.seed if self.kill_seed is None else self.kill_seed)
        lo, hi = (x * self.duration for x in self.kill_window)
        width = (hi - lo) / self.kills if self.kills else 0.0
        plan = []
        for i in range(self.kills):
            start = lo + i * width + self.min_gap / 2
            at = rng.uniform(start, max(start, lo + (i + 1) * width - self.min_gap / 2))
            plan.append((round(at, 2), round(rng.uniform(*self.pause), 2)))
        return plan


@dataclass
class Sample:
    """One look at the run: seconds since the first record, offsets, what the worker counted."""

    t: float
    counted: int | None = None  # predictions + outcomes in /models (None: worker down)
    end: int | None = None  # sum of end offsets of the worker's input topics
    committed: int | None = None  # the worker's committed offsets on them

    @property
    def lag(self) -> int | None:
        return None if self.end is None or self.committed is None else self.end - self.committed


@dataclass
class KillRecord:
    """One SIGKILL and what followed; seconds since the first record unless named ``*_after``."""

    planned_at: float
    pause: float
    killed_at: float = 0.0
    restarted_at: float = 0.0
    pid_killed: int = 0
    lag_before: int = 0  # highest committed lag (messages) in the 10 s before the kill
    counted_before: int | None = None  # predictions + outcomes in /models just before
    backlog_at_restart: int = 0  # messages written but not committed at the restart
    ready_after: float | None = None  # restart -> /healthz ok
    counted_at_ready: int | None = None  # predictions + outcomes in /models once ready
    caught_up_after: float | None = None  # restart -> committed >= ends at the restart
    lag_back_after: float | None = None  # restart -> lag <= lag_before
    interrupted: bool = False  # the next kill came before it caught up
    ends_at_restart: dict[TopicPartition, int] = field(default_factory=dict, repr=False)


@dataclass
class CrashResult:
    """What happened, what it should have been, and what is wrong (``problems``)."""

    options: CrashOptions
    bootstrap: str = ""
    truth: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    kills: list[KillRecord] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    simulate_exit: int | None = None
    simulate_output: str = ""
    simulator_seconds: float | None = None  # first record -> simulator exited
    caught_up_after_end: float | None = None  # simulator exited -> its topics committed
    settled_after_end: float | None = None  # ... -> a TTL later, lag 0, counts steady
    final_lag: int | None = None
    final_lag_by_topic: dict[str, int] = field(default_factory=dict)
    lag_peak: int = 0
    worker_cpu: tuple[float, float] | None = None  # last process: CPU-s, wall s since spawn
    worker_log_tail: str = ""
    alerts: list[dict[str, Any]] = field(default_factory=list)  # the alert topic, in order
    alerts_on_topic: Counter[str] = field(default_factory=Counter)  # dedup key -> messages
    alert_ids_on_topic: Counter[str] = field(default_factory=Counter)
    keys_by_condition: dict[tuple[Any, ...], set[str]] = field(default_factory=dict)
    delivered: Counter[str] = field(default_factory=Counter)  # dedup key -> deliveries
    delivered_ids: Counter[str] = field(default_factory=Counter)
    drift_alert_at: float | None = None  # pricing's concept-drift alert, s since first record
    crashes: list[str] = field(default_factory=list)  # "Crashed reason=" lines of the log
    aborted: str | None = None  # why the run stopped early
    problems: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- checks


def _expected(t: dict[str, Any]) -> dict[str, int]:
    return {
        "predictions": t["predictions"],
        "joined": t["outcomes"],
        "expired": t["predictions"] - t["outcomes"],
        "duplicates": 0,
        "late": 0,
    }


def _count_problems(truth: dict[str, Any], models: list[dict[str, Any]]) -> list[str]:
    """Every way the worker's per-model counts differ from what was acknowledged."""
    return count_problems(truth, models, _expected)


def _condition(alert: dict[str, Any]) -> tuple[Any, ...]:
    segment = alert.get("segment") or {}
    return (
        alert.get("model_id"),
        alert.get("model_version"),
        alert.get("monitor"),
        tuple(sorted(segment.items())),
    )


def _check(r: CrashResult) -> None:
    o = r.options
    for line in dict.fromkeys(r.crashes):
        r.problems.append(f"the worker logged a crash: {line}")
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
    if len(r.kills) < o.kills:
        r.problems.append(
            f"{len(r.kills)} of {o.kills} kills done while the simulator ran: lengthen the"
            " run or shorten the worker's recovery"
        )
    for i, k in enumerate(r.kills, 1):
        if k.ready_after is None and not k.interrupted:
            r.problems.append(f"kill {i}: the restarted worker never became ready")
        elif k.caught_up_after is None and not k.interrupted:
            r.problems.append(f"kill {i}: the restarted worker never caught up")
    if r.final_lag != 0:
        r.problems.append(
            f"the worker's committed lag is {r.final_lag}, not 0 ({r.final_lag_by_topic})"
        )
    if r.caught_up_after_end is None:
        r.problems.append(
            f"the worker did not catch up within {o.catch_up_timeout:g} s of the run's end;"
            f" the end of its log:\n{r.worker_log_tail}"
        )
    elif r.settled_after_end is None:
        r.problems.append("the worker's counts did not settle after the label TTL")
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


def _worker_config(o: CrashOptions, workdir: Path, prefix: str) -> str | None:
    if o.config_text is None:
        return None
    path = workdir / f"{prefix}driftline.toml"
    path.write_text(o.config_text)
    return str(path)


async def run_crash_recovery(options: CrashOptions, *, say: Say = print) -> CrashResult:
    """Start a broker, play the scenario, kill -9 the worker mid-run; check (see the module).

    Raises :class:`~driftline.bench.broker_restart.BrokerError` if the
    broker cannot be started or something already answers on its port;
    everything else that goes wrong is a problem of the result.
    """
    result = await on_own_broker(
        options,
        "driftline-crash-",
        lambda bootstrap: CrashResult(options, bootstrap=bootstrap),
        _run,
        say,
    )
    _check(result)
    return result


async def on_own_broker(
    o: Any,
    workdir_prefix: str,
    make_result: Callable[[str], Any],
    run: Callable[[LocalBroker, Any, Path, Any, Say], Awaitable[None]],
    say: Say,
) -> Any:
    """Run a harness on a broker of its own: start it on ``o.port``, ``run``, stop and wipe it.

    ``o`` has ``check()``, ``port``, ``workdir`` (None: a temporary one,
    removed afterwards) and ``keep`` (keep the broker's data and the logs).
    Raises :class:`~driftline.bench.broker_restart.BrokerError` if
    something already answers on the port or the broker cannot start; a
    failure to stop it is a problem of the result.
    """
    o.check()
    broker = LocalBroker(o.port)
    if await asyncio.to_thread(broker.running):
        raise BrokerError(
            f"something already answers on {broker.bootstrap}: this run starts and stops"
            " a broker of its own; pick a free port"
        )
    own_workdir = o.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix=workdir_prefix)) if own_workdir else o.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    result = make_result(broker.bootstrap)
    try:
        say(f"starting a broker on {broker.bootstrap}")
        await asyncio.to_thread(broker.start)
        await run(broker, o, workdir, result, say)
    finally:
        try:
            await asyncio.to_thread(broker.stop)
        except BrokerError as exc:
            result.problems.append(f"could not stop the broker: {exc}")
        else:
            if not o.keep:
                broker.wipe()
        if o.keep:
            say(f"kept: logs in {workdir}, broker data in {broker.data_dir}")
        elif own_workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


def start_traffic(
    o: Any, hook_url: str, env: dict[str, str], workdir: Path, prefix: str, truth_path: Path
) -> tuple[Background, Background]:
    """Start ``driftline bridge webhook`` (posting to ``hook_url``) and ``driftline simulate``.

    ``o`` carries the simulator's settings (``models``, ``rate``, ``duration``,
    ``drift_at``, ``seed``, ``missing_labels``, ``label_delay``, ``batch``), as
    :class:`CrashOptions` and the scale-out harness's options both do.
    """
    bridge = Background(
        "bridge",
        ["bridge", "webhook", "--url", hook_url, "--group", f"{prefix}bridge"],
        env,
        workdir,
    )
    sim = Background(
        "simulate",
        [
            "simulate",
            f"--scenario={SCENARIO}",
            f"--models={o.models}",
            f"--rate={o.rate:g}",
            f"--duration={o.duration:g}",
            f"--change-at={o.drift_at:g}",
            f"--seed={o.seed}",
            f"--missing-labels={o.missing_labels:g}",
            f"--label-delay={o.label_delay}",
            f"--batch={o.batch}",
            f"--truth={truth_path}",
        ],
        env,
        workdir,
    )
    return bridge, sim


async def _run(
    broker: LocalBroker, o: CrashOptions, workdir: Path, result: CrashResult, say: Say
) -> None:
    prefix = f"cr-{uuid.uuid4().hex[:8]}-"
    bootstrap = broker.bootstrap
    worker = CrashableWorker(
        bootstrap,
        prefix,
        partitions=o.partitions,
        loglevel="info",
        config_path=_worker_config(o, workdir, prefix),
    )
    _worker_env(worker, {"DRIFTLINE_LABEL_TTL": f"{o.label_ttl:g}s"})
    if o.static_membership:
        worker.instance_id = f"{prefix}worker"
    config = worker.config
    inputs = [config.topics.predictions, config.topics.outcomes, config.model_events_topic]
    tps = [TopicPartition(t, p) for t in inputs for p in range(o.partitions)]
    receiver = Receiver()
    reader = OffsetReader(bootstrap, config.app_id, tps)
    bridge: Background | None = None
    sim: Background | None = None
    watcher: asyncio.Task[None] | None = None
    sim_done: asyncio.Task[tuple[int | None, float]] | None = None
    truth_path = workdir / f"{prefix}truth.json"
    try:
        await worker.create_topics()
        await worker.start()
        await worker.wait_ready()
        await reader.start()
        await receiver.start()
        env = dict(worker.env)
        bridge, sim = start_traffic(o, receiver.url, env, workdir, prefix, truth_path)
        say(
            f"worker (pid {worker.pid}, data dir kept across restarts), bridge and simulator"
            f" started on {bootstrap} (topics {prefix}*)"
        )

        # The first record counted marks the start of the traffic.
        deadline = time.monotonic() + 120
        while _counted(await worker.models()) == 0:
            if sim.proc.poll() is not None or time.monotonic() > deadline:
                raise WorkerFailed(f"no traffic reached the worker:\n{sim.log_tail()}")
            await asyncio.sleep(0.2)
        t0 = time.monotonic()

        def now() -> float:
            return time.monotonic() - t0

        async def sample() -> Sample:
            s = Sample(now())
            result.crashes.extend(worker.new_crashes())
            if worker.running():
                with contextlib.suppress(WorkerFailed):
                    s.counted = _counted(await worker.models())
            with contextlib.suppress(TimeoutError, KafkaError):
                ends, committed = await reader.read()
                s.end, s.committed = sum(ends.values()), sum(committed.values())
            result.samples.append(s)
            return s

        async def watch() -> None:
            while True:
                started = time.monotonic()
                await sample()
                await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - started)))

        watcher = asyncio.create_task(watch())

        async def simulator_exit() -> tuple[int | None, float]:
            rc = await sim.wait(o.duration + 300)
            return rc, time.monotonic()

        sim_done = asyncio.create_task(simulator_exit())
        plan = o.kill_plan()
        if plan:
            say("kills planned at " + ", ".join(f"{at:g} s (pause {p:g} s)" for at, p in plan))
        else:
            say("no kill planned: the control run")
        previous: KillRecord | None = None
        for at, pause in plan:
            record = KillRecord(planned_at=at, pause=pause)
            due = at
            if previous is not None:
                await _track(worker, reader, previous, t0, result, until=t0 + at)
                since = previous.restarted_at
                if o.wait_recovery:
                    # Kill a worker at work, not one still waiting for its partitions.
                    limit = time.monotonic() + o.recovery_timeout
                    await _track(worker, reader, previous, t0, result, until=limit)
                    if previous.caught_up_after is None:
                        say(
                            f"[{now():5.1f}s] the restarted worker has not caught up: no more kills"
                        )
                        break
                    since += previous.caught_up_after
                due = max(at, since + o.min_gap)
                await _track(worker, reader, previous, t0, result, until=t0 + due)
                if previous.caught_up_after is None:
                    previous.interrupted = True
            await asyncio.sleep(max(0.0, due - now()))
            _stop_on_crash(worker, result)
            if sim_done.done():
                say(f"[{now():5.1f}s] the simulator has ended: no more kills")
                break
            window = [s for s in result.samples if s.t >= now() - LAG_BEFORE_WINDOW]
            record.lag_before = max((s.lag or 0 for s in window), default=0)
            record.counted_before = next(
                (s.counted for s in reversed(result.samples) if s.counted is not None), None
            )
            record.pid_killed = worker.pid
            await worker.kill()
            record.killed_at = now()
            result.kills.append(record)
            late = f", {record.killed_at - at:.1f} s after planned" if due > at else ""
            say(f"[{record.killed_at:5.1f}s] kill -9 worker (pid {record.pid_killed}{late})")
            await asyncio.sleep(pause)
            ends, committed = await reader.read()
            record.ends_at_restart = ends
            record.backlog_at_restart = _lag(ends, committed)
            await worker.restart()
            record.restarted_at = now()
            say(
                f"[{record.restarted_at:5.1f}s] worker restarted (pid {worker.pid}),"
                f" {record.backlog_at_restart} messages behind"
            )
            previous = record
        if previous is not None:
            await _track(
                worker, reader, previous, t0, result, until=time.monotonic() + o.catch_up_timeout
            )
            say(
                f"[{now():5.1f}s] last kill: ready after {_secs(previous.ready_after)},"
                f" caught up after {_secs(previous.caught_up_after)}"
            )

        rc, sim_end = await sim_done
        _stop_on_crash(worker, result)
        result.simulator_seconds = sim_end - t0
        result.simulate_exit = rc
        result.simulate_output = sim.log_tail(4000)
        if rc != 0:
            result.problems.append(f"driftline simulate exited with {rc}:\n{sim.log_tail(1500)}")
        say(f"[{now():5.1f}s] simulator finished (exit {rc}); waiting to catch up")
        if truth_path.exists():
            result.truth = orjson.loads(truth_path.read_bytes())

        sources = (config.topics.predictions, config.topics.outcomes)
        await _settle(worker, reader, result, sim_end, o, sources)
        say(
            f"[{now():5.1f}s] read all the simulator wrote {_secs(result.caught_up_after_end)}"
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
        result.worker_log_tail = worker.log_tail(3000)
        with contextlib.suppress(OSError):
            result.worker_cpu = (worker.cpu_seconds(), time.perf_counter() - worker.spawned)
        result.models = await worker.models()  # WorkerFailed if it exited or an agent crashed

        # Alerts: every one on the topic delivered (the bridge is given time to finish).
        result.alerts = await _read_topic(bootstrap, config.topics.alerts, o.partitions)
        wall0 = time.time() - (time.monotonic() - t0)
        for a in result.alerts:
            result.alerts_on_topic[a["dedup_key"]] += 1
            result.alert_ids_on_topic[a["alert_id"]] += 1
            result.keys_by_condition.setdefault(_condition(a), set()).add(a["dedup_key"])
            if (
                result.drift_alert_at is None
                and a.get("model_id") == DRIFTING_MODEL
                and a.get("monitor") == DRIFT_MONITOR
                and a.get("status") == "firing"
            ):
                result.drift_alert_at = float(a.get("emitted_at") or wall0) - wall0
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
        # Interrupted: its data goes anyway, so the worker need not shut down politely
        # (stuck in a group join, it would take up to half a minute).
        if worker.running():
            await worker.kill()
        raise
    finally:
        for task in (watcher, sim_done):
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        result.lag_peak = max((s.lag or 0 for s in result.samples), default=0)
        if sim is not None:
            sim.stop()
        if bridge is not None:
            bridge.stop()
        await receiver.stop()
        await reader.stop()
        with contextlib.suppress(OSError):  # the worker's own directory goes with it
            (workdir / "worker.log").write_text(worker.log_tail(2_000_000))
        if o.keep and worker._tmp is not None:
            with contextlib.suppress(OSError):
                shutil.copytree(worker.data_dir, workdir / "worker-data", dirs_exist_ok=True)
        await worker.stop()  # removes its data directory


def _stop_on_crash(worker: CrashableWorker, result: CrashResult) -> None:
    """Raise :class:`WorkerFailed` (with the traceback) once the worker's log shows a crash.

    Faust restarts a crashed agent, but one that crashed has lost the batch
    it held: waiting on would only end in a timeout, minutes later.
    """
    result.crashes.extend(worker.new_crashes())
    if result.crashes:
        raise WorkerFailed(f"the worker crashed:\n{worker.excerpt(result.crashes[0])}")


async def _track(
    worker: CrashableWorker,
    reader: OffsetReader,
    k: KillRecord,
    t0: float,
    result: CrashResult,
    *,
    until: float,
) -> None:
    """Follow the recovery of kill ``k`` until it has caught up or ``until`` (monotonic)."""
    while time.monotonic() < until and k.caught_up_after is None:
        _stop_on_crash(worker, result)
        since_restart = time.monotonic() - t0 - k.restarted_at
        if worker.proc is not None and worker.proc.returncode is not None:
            raise WorkerFailed(
                f"the worker restarted after kill {worker.kills} exited with"
                f" {worker.proc.returncode}:\n{worker.log_tail()}"
            )
        if k.ready_after is None:
            if await worker.healthy():
                k.ready_after = since_restart
                with contextlib.suppress(WorkerFailed):
                    k.counted_at_ready = _counted(await worker.models())
        else:
            with contextlib.suppress(TimeoutError, KafkaError):
                ends, committed = await reader.read()
                if k.lag_back_after is None and _lag(ends, committed) <= max(k.lag_before, 1):
                    k.lag_back_after = since_restart
                if all(committed[tp] >= end for tp, end in k.ends_at_restart.items()):
                    k.caught_up_after = since_restart
                    if k.lag_back_after is None:
                        k.lag_back_after = since_restart
        await asyncio.sleep(0.1 if k.ready_after is None else 0.25)


async def _settle(
    worker: CrashableWorker,
    reader: OffsetReader,
    result: CrashResult,
    sim_end: float,
    o: CrashOptions,
    sources: tuple[str, str],
) -> None:
    """Wait for the worker to read all the simulator wrote, then a TTL, until counts hold still.

    Caught up: the committed offsets of the ``sources`` topics (predictions,
    outcomes) at their ends. Event time only moves on an idle worker once it
    has processed every record, so the last predictions without an outcome
    expire a label TTL after that, each sending a model event: settled is
    a TTL after caught up, committed lag 0 on every input topic (model
    events too) and the counts the same three polls in a row. Polls once a
    second, until ``o.catch_up_timeout`` after the simulator's end.
    """
    deadline = sim_end + o.catch_up_timeout
    caught_up: float | None = None
    steady = 0
    last: list[dict[str, Any]] | None = None
    while time.monotonic() < deadline:
        _stop_on_crash(worker, result)
        try:
            ends, committed = await reader.read()
        except (TimeoutError, KafkaError):
            await asyncio.sleep(1.0)
            continue
        models = await worker.models()
        now = time.monotonic()
        lag = _lag(ends, committed)
        if caught_up is None and not _lag(
            {tp: end for tp, end in ends.items() if tp.topic in sources}, committed
        ):
            caught_up = now
            result.caught_up_after_end = now - sim_end
            deadline = now + o.label_ttl + 60.0
        counts = [
            {k: m.get(k) for k in ("predictions", "joined", "expired", "duplicates", "late")}
            for m in models
        ]
        steady = steady + 1 if (lag == 0 and counts == last) else 0
        last = counts
        if caught_up is not None and now >= caught_up + o.label_ttl + 3.0 and steady >= 3:
            result.settled_after_end = now - sim_end
            result.models = models
            return
        await asyncio.sleep(1.0)
    result.models = await worker.models()


# --------------------------------------------------------------------------- report


def _secs(x: float | None) -> str:
    return "never" if x is None else f"{x:.1f} s"


def _num(x: object) -> str:
    return f"{x:.3f}" if isinstance(x, float) else str(x)


def run_with_own_broker(
    port: int,
    keep: bool,
    run: Callable[[Say], Awaitable[Any]],
    render: Callable[[Any], str],
) -> int:
    """What a script around a run with a broker of its own does; returns its exit status.

    Refuses a port something already answers on (2), runs ``run`` printing
    its progress, prints ``render(result)`` and returns 1 if the result has
    problems. SIGTERM and Ctrl-C interrupt it (130); a broker that cannot
    start is 2. The run stops and wipes its broker itself; this also catches
    a start still under way in its thread when the run was interrupted.
    """
    broker = LocalBroker(port)
    if broker.running():
        print(
            f"something already answers on {broker.bootstrap}: this script starts and stops"
            " a broker of its own; pick a free --port",
            file=sys.stderr,
        )
        return 2
    # Members that die or leave make aiokafka (in this process's offset
    # readers) log what the report already says.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

    async def main() -> int:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        result = await run(lambda line: print(line, flush=True))
        print()
        print(render(result))
        return 1 if result.problems else 0

    try:
        return asyncio.run(main())
    except BrokerError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        try:
            broker.stop()
        except BrokerError as exc:
            print(exc, file=sys.stderr)
        if not keep:
            broker.wipe()


def counts_table(r: Any) -> list[str]:
    """Per model, the worker's counts against the truth, then the drifting model's detector.

    ``r`` is a :class:`CrashResult` or any result with its ``truth`` and ``models``.
    """
    lines = [
        f"{'model':<10} {'version':<8} {'sent pred':>9} {'predictions':>11} {'sent outc':>9}"
        f" {'joined':>7} {'want exp':>8} {'expired':>7} {'late':>5} {'dup':>5}  ok"
    ]
    seen = {(m["model_id"], m["model_version"]): m for m in r.models}
    for t in r.truth.get("models", []):
        m = seen.get((t["model_id"], t["model_version"]), {})
        ok = all(m.get(k) == v for k, v in _expected(t).items())
        lines.append(
            f"{t['model_id']:<10} {t['model_version']:<8} {t['predictions']:>9}"
            f" {m.get('predictions', '-')!s:>11} {t['outcomes']:>9} {m.get('joined', '-')!s:>7}"
            f" {t['predictions'] - t['outcomes']:>8} {m.get('expired', '-')!s:>7}"
            f" {m.get('late', '-')!s:>5} {m.get('duplicates', '-')!s:>5}  {'yes' if ok else 'NO'}"
        )
    for m in r.models:
        cd = m.get("concept_drift") or {}
        if m["model_id"] == DRIFTING_MODEL and cd:
            lines.append(
                f"{m['model_id']} {m['model_version']} concept drift ({cd.get('detector')}):"
                f" {cd.get('detections')} detections, {cd.get('degradations')} degradations,"
                f" loss baseline {_num(cd.get('baseline_loss'))},"
                f" recent {_num(cd.get('recent_loss'))}"
            )
    return lines


def alerts_table(r: Any, drift_note: str, resent_after: str) -> list[str]:
    """The alerts on the topic per dedup key: firing, sent again, delivered, lost.

    ``drift_note`` follows the drift alert's time; ``resent_after`` says what
    makes an alert go out again ("a restart", "a handover").
    """
    firing = Counter(a["dedup_key"] for a in r.alerts if a.get("status") == "firing")
    lines = [
        f"alerts: {sum(r.alerts_on_topic.values())} on the topic"
        f" ({len(r.alert_ids_on_topic)} distinct ids), {sum(r.delivered.values())} deliveries;"
        f" {DRIFTING_MODEL} {DRIFT_MONITOR} first fired at {_secs(r.drift_alert_at)}{drift_note}",
        f"  {'dedup key':<48} {'on topic':>8} {'firing':>6} {'repeats':>7}"
        f" {'delivered':>9} {'lost':>5}",
    ]
    for key in sorted(set(r.alerts_on_topic) | set(r.delivered)):
        ids = [a["alert_id"] for a in r.alerts if a["dedup_key"] == key]
        repeats = len(ids) - len(set(ids))
        lost = sum(1 for i in set(ids) if not r.delivered_ids[i])
        lines.append(
            f"  {key:<48} {r.alerts_on_topic[key]:>8} {firing[key]:>6} {repeats:>7}"
            f" {r.delivered[key]:>9} {lost:>5}"
        )
    lines += [
        "  repeats: messages on the topic with an alert id already there (sent again after",
        f"    {resent_after}; allowed by the at-least-once contract, same dedup key)",
        "",
    ]
    return lines


def report(r: CrashResult) -> str:
    """The figures as text: kills and recoveries, per model counts against the truth, alerts."""
    o = r.options
    sent = r.truth.get("predictions", 0), r.truth.get("outcomes", 0)
    lines = [
        f"crash recovery: {SCENARIO}, {o.models} models, {o.rate:g} predictions/s for"
        f" {o.duration:g} s in messages of {o.batch}, seed {o.seed}, {o.partitions} partitions,"
        f" {o.missing_labels:.0%} labels missing, label delay {o.label_delay},"
        f" label TTL {o.label_ttl:g} s; broker {r.bootstrap}",
        f"sent {sent[0]:,} predictions and {sent[1]:,} outcomes (acknowledged);"
        f" {len(r.kills)} of {o.kills} kill -9 done; simulator ran"
        f" {_secs(r.simulator_seconds)} after the first record",
        "",
    ]
    if r.kills:
        lines += [
            "kills (seconds since the first record counted; recovery from the restart):",
            f"  {'#':>2} {'killed':>7} {'pause':>5} {'restart':>7} {'backlog':>8}"
            f" {'ready':>7} {'caught up':>9} {'lag back':>8} {'lag pre':>7}"
            f" {'counted before':>14} {'at ready':>9}",
        ]
        for i, k in enumerate(r.kills, 1):
            caught = (
                "killed"
                if k.interrupted and k.caught_up_after is None
                else _secs(k.caught_up_after)
            )
            lines.append(
                f"  {i:>2} {k.killed_at:>6.1f}s {k.pause:>4.1f}s {k.restarted_at:>6.1f}s"
                f" {k.backlog_at_restart:>8} {_secs(k.ready_after):>7} {caught:>9}"
                f" {_secs(k.lag_back_after):>8} {k.lag_before:>7}"
                f" {k.counted_before if k.counted_before is not None else '-':>14}"
                f" {k.counted_at_ready if k.counted_at_ready is not None else '-':>9}"
            )
        lines += [
            "  backlog: messages on the input topics (predictions, outcomes, model events)",
            "    written but not committed by the group at the restart;",
            "  ready: restart -> /healthz ok (partitions assigned, join table restored);",
            "  caught up: restart -> the committed offset of every input partition at or past",
            "    its end offset read at the restart (everything written before it processed);",
            "  lag back: restart -> summed committed lag <= its highest in the"
            f" {LAG_BEFORE_WINDOW:g} s before the kill (lag pre);",
            "  counted before / at ready: predictions + outcomes in /models just before the",
            "    kill and once the new process was ready (monitor state kept if close);",
            "  'killed': the next kill came before it caught up.",
            "",
        ]
    if r.aborted is not None:
        last = r.samples[-1].t if r.samples else 0.0
        lines += [f"the run stopped early, at {last:.1f} s: see the problems below", ""]
    lines += [
        f"after the simulator ended: its topics read and committed after"
        f" {_secs(r.caught_up_after_end)}; counts settled (a label TTL later, committed lag 0)"
        f" after {_secs(r.settled_after_end)}; final committed lag {r.final_lag},"
        f" peak {r.lag_peak} messages",
        "  the worker process at the end: "
        + (
            f"{r.worker_cpu[0]:.1f} CPU-s in the {r.worker_cpu[1]:.0f} s since it started"
            f" ({r.worker_cpu[0] / max(r.worker_cpu[1], 1e-9):.0%} of a core)"
            if r.worker_cpu
            else "-"
        ),
        "",
    ]
    lines += counts_table(r)
    lines += [""]
    lines += alerts_table(
        r,
        f" (drift starts at {o.drift_at:g} s of the simulator's run)",
        "a restart",
    )
    if r.problems:
        lines.append(f"FAILED: {len(r.problems)} problem(s)")
        lines += [f"  - {p}" for p in r.problems]
    else:
        lines.append(
            f"OK: counts exact across {len(r.kills)} kill -9, each condition under one"
            " dedup key, every alert delivered"
        )
    return "\n".join(lines)

"""``driftline bench`` against a running broker: the worker beside its two ceilings.

For each batch size (records per Kafka message) the bench creates fresh,
uniquely named topics, pre-produces ``pairs`` predictions and outcomes
(:func:`~driftline.bench.produce.preproduce`), and reads the very same
messages three times:

(a) raw aiokafka ``getmany`` + ``orjson``
    (:func:`~driftline.bench.baselines.raw_aiokafka_rate`);
(b) a bare Faust agent that iterates and decodes
    (:func:`~driftline.bench.baselines.bare_faust_rate_async`);
(c) ``driftline worker`` itself, started as a subprocess with a unique app id
    and topic names, until its ``/models`` reports every pair joined.

The worker's window runs from ready (``/healthz`` says ``ok``: partitions
assigned and the join table recovered, so rebalance and recovery are out of
it, as the baselines exclude their group join) to the first ``/models`` poll
whose ``joined`` counts sum to ``pairs``: every pair read, joined, sent over
the internal model-events topic and fed to the monitors. Serving ``/models``
costs the worker a few milliseconds (every model's rolling metrics are
computed), so the polls adapt: every :data:`PROGRESS_POLL` seconds until
progress shows, then half the estimated time left, between
:data:`PROGRESS_POLL_MIN` and :data:`PROGRESS_POLL_MAX`: few polls in a long
run, and the end is seen within about :data:`PROGRESS_POLL_MIN` seconds. The
worker's CPU time over the same window comes from ``/proc/<pid>/stat``, its
peak RSS from ``VmHWM`` in ``/proc/<pid>/status``.

Then a latency phase on fresh topics and a fresh worker: pairs are produced
at a fixed offered rate, each outcome right after its prediction, both
stamped with the send time. "Outcome produced -> pair processed" is read off
``/models`` polled every :data:`LATENCY_POLL` seconds: the k-th pair sent
counts as processed at the first poll whose summed ``joined`` reaches k. A
poll bounds the moment from above (response received) and the previous poll
from below (request sent), so each latency is known to about one poll period
plus one request; the reported figures are the upper bounds. The count is
global, not per request: with several partitions pair k may finish a little
after pair k+1, which at a steady offered load shifts a percentile by
well under a poll period. As a cross-check with no such resolution limit, a
plain consumer of the worker's model-events topic timestamps each joined
pair by request id when it arrives there: that is "outcome produced -> pair
joined and handed to the monitor stage", i.e. everything but the monitors'
own work on it.

Every topic the run created (its unique prefix) is deleted at the end; the
consumer groups are left for the broker to expire (aiokafka has no API to
delete them).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from driftline.bench import per_second
from driftline.bench.baselines import Rate, bare_faust_rate_async, raw_aiokafka_rate
from driftline.bench.produce import PairFactory, ProduceStats, preproduce
from driftline.core.config import Config, SecurityConfig, load_config
from driftline.streaming.kafka import aiokafka_auth

__all__ = [
    "BatchResult",
    "LatencyResult",
    "StreamBenchResult",
    "WorkerFailed",
    "WorkerProcess",
    "WorkerRun",
    "floor_checks",
    "report",
    "run_stream_bench",
]

PROGRESS_POLL = 0.2
"""Seconds between ``/models`` polls until the worker shows progress."""

PROGRESS_POLL_MIN = 0.05
PROGRESS_POLL_MAX = 1.0
"""Bounds of the adaptive poll period once progress shows (see the module docstring)."""

LATENCY_POLL = 0.05
"""Seconds between ``/models`` polls during the latency phase (its resolution)."""

STALL_TIMEOUT = 60.0
"""Give up on a worker whose joined count has not moved for this many seconds."""

READY_TIMEOUT = 90.0
"""Seconds a worker gets from spawn to ``/healthz`` ok."""

STOP_TIMEOUT = 30.0
"""Seconds a worker gets after SIGTERM before it is killed."""

SINGLE_FLOOR_DIVISOR = 4
"""Single-record floor: pairs/s >= bare Faust msgs/s / 4 (two messages per pair, half of it)."""

BATCHED_FLOOR = 20_000.0
"""Batched floor (100 records per message): pairs/s."""

BATCHED_FLOOR_SIZE = 100

_SRC_DIR = Path(__file__).resolve().parents[2]
_CLK_TCK = os.sysconf("SC_CLK_TCK")

Echo = Callable[[str], None]


class WorkerFailed(RuntimeError):
    """The worker under test crashed, exited, stalled or never became ready."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True, slots=True)
class WorkerRun:
    """How fast one ``driftline worker`` drained ``pairs`` pre-produced pairs.

    ``seconds``: ready to every pair joined. ``progress_seconds``: first poll
    showing any progress to every pair joined (it starts up to one poll late,
    so it flatters the worker by up to :data:`PROGRESS_POLL`). ``polls``:
    how many times ``/models`` was fetched in the window.
    ``cpu_seconds``: the worker's user+system time over ``seconds``.
    """

    pairs: int
    messages: int
    records: int
    seconds: float
    progress_seconds: float
    startup_seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    joined: int
    expired: int
    duplicates: int
    dead_letters: int
    polls: int = 0

    @property
    def pairs_per_second(self) -> float:
        return per_second(self.pairs, self.seconds)

    @property
    def messages_per_second(self) -> float:
        return per_second(self.messages, self.seconds)

    @property
    def records_per_second(self) -> float:
        return per_second(self.records, self.seconds)

    @property
    def pairs_per_cpu_second(self) -> float:
        return per_second(self.pairs, self.cpu_seconds)


@dataclass(frozen=True, slots=True)
class BatchResult:
    """One batch size: what was produced and how fast each reader read it."""

    batch: int
    produced: ProduceStats
    raw: Rate
    faust: Rate
    worker: WorkerRun | None
    error: str | None = None

    @property
    def ratio_raw(self) -> float:
        """c/a on records/s (predictions + outcomes); NaN if the worker failed."""
        if self.worker is None:
            return float("nan")
        return self.worker.records_per_second / self.raw.records_per_second

    @property
    def ratio_faust(self) -> float:
        """c/b on records/s (predictions + outcomes); NaN if the worker failed."""
        if self.worker is None:
            return float("nan")
        return self.worker.records_per_second / self.faust.records_per_second

    def floor(self) -> tuple[float, str] | None:
        """The issue's floor for this batch size in pairs/s, and how it was derived."""
        if self.batch == 1:
            rate = self.faust.messages_per_second
            return rate / SINGLE_FLOOR_DIVISOR, (
                f"bare Faust {rate:,.0f} msgs/s / {SINGLE_FLOOR_DIVISOR}"
            )
        if self.batch == BATCHED_FLOOR_SIZE:
            return BATCHED_FLOOR, "fixed"
        return None


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (``q`` in 0..100).

    >>> _percentile([1, 2, 3, 4], 50), _percentile([1, 2, 3, 4], 99), _percentile([5], 0)
    (2, 4, 5)
    """
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


@dataclass(frozen=True, slots=True)
class LatencyResult:
    """Outcome produced -> pair processed at a fixed offered load (seconds)."""

    offered_rate: float
    seconds: float
    sent: int
    send_seconds: float
    joined: int
    upper: list[float] = field(repr=False)
    lower: list[float] = field(repr=False)
    handoff: list[float] = field(repr=False)
    poll_period: float = LATENCY_POLL
    poll_seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_bytes: int = 0

    @property
    def achieved_rate(self) -> float:
        return per_second(self.sent, self.send_seconds)

    def pct(self, which: str, q: float) -> float:
        return _percentile(sorted(getattr(self, which)), q)


@dataclass(frozen=True, slots=True)
class StreamBenchResult:
    bootstrap: str
    pairs: int
    models: int
    features: int
    partitions: int
    batches: list[BatchResult]
    latency: LatencyResult | None
    seconds: float
    latency_error: str | None = None


# --------------------------------------------------------------------------- helpers


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` (its threads included)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name (field 2) may hold spaces and parentheses: split after it.
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK  # utime, stime (fields 14, 15)


def _proc_peak_rss(pid: int) -> int:
    """Peak resident set size of ``pid`` in bytes (``VmHWM``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that has Linux SIGTERM the child when the bench process dies.

    A bench killed outright (SIGKILL, a CI timeout) must not leave a worker
    behind, consuming and serving its port. The libc function is looked up
    here, in the parent: the child, between fork and exec, only calls it.
    ``None`` where there is no ``prctl``.
    """
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def set_parent_death_signal() -> None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG

    return set_parent_death_signal


def _kafka_url(bootstrap: str) -> str:
    return ";".join(f"kafka://{host}" for host in bootstrap.split(","))


async def _admin(bootstrap: str, security: SecurityConfig) -> AIOKafkaAdminClient:
    from driftline.streaming.kafka import start_client

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=30_000, **aiokafka_auth(security)
    )
    await start_client(admin, security, bootstrap, 30.0)
    return admin


async def _wait_for_leaders(
    bootstrap: str,
    names: Sequence[str],
    timeout: float = 30.0,
    *,
    security: SecurityConfig | None = None,
) -> None:
    """Return once every partition of ``names`` has a leader (topics just created)."""
    admin = await _admin(bootstrap, security or SecurityConfig())
    try:
        deadline = time.monotonic() + timeout
        while True:
            described = await admin.describe_topics(list(names))
            if all(
                t.get("error_code", 0) == 0
                and t.get("partitions")
                and all(p.get("leader", -1) >= 0 for p in t["partitions"])
                for t in described
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics {list(names)} have no leader after {timeout:.0f} s")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def check_broker(
    bootstrap: str, timeout: float = 10.0, *, security: SecurityConfig | None = None
) -> None:
    """Fail fast, with what to do, when no broker answers at ``bootstrap`` (or refuses us)."""
    from driftline.streaming.kafka import start_client

    security = security or SecurityConfig()
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        request_timeout_ms=int(timeout * 1000),
        **aiokafka_auth(security),
    )
    await start_client(admin, security, bootstrap, timeout)
    await admin.close()


async def delete_topics_with_prefix(
    bootstrap: str, prefix: str, *, security: SecurityConfig | None = None
) -> list[str]:
    """Delete every topic whose name starts with ``prefix``; return their names."""
    admin = await _admin(bootstrap, security or SecurityConfig())
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()


# --------------------------------------------------------------------------- the worker


class WorkerProcess:
    """``driftline worker`` as a subprocess, with its own app id, topics, port and data dir.

    The environment names everything (``DRIFTLINE_APP_ID``,
    ``DRIFTLINE_TOPICS__*``, ``DRIFTLINE_BROKER``) on top of the caller's, so
    the worker sees exactly the :attr:`config` the bench used to create the
    topics. Its console goes to a log file whose tail is shown if it fails.
    """

    def __init__(
        self,
        bootstrap: str,
        prefix: str,
        *,
        partitions: int,
        config_path: str | None = None,
        loglevel: str = "warning",
    ) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self.config_path = config_path
        self.loglevel = loglevel
        self.env = dict(os.environ)
        self.env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(_SRC_DIR), self.env.get("PYTHONPATH")) if p
        )
        self.env.update(
            {
                "DRIFTLINE_BROKER": _kafka_url(bootstrap),
                "DRIFTLINE_APP_ID": f"{prefix}worker",
                "DRIFTLINE_TOPICS__PREDICTIONS": f"{prefix}predictions",
                "DRIFTLINE_TOPICS__OUTCOMES": f"{prefix}outcomes",
                "DRIFTLINE_TOPICS__ALERTS": f"{prefix}alerts",
                "DRIFTLINE_TOPICS__DEAD_LETTER": f"{prefix}dead-letter",
                "DRIFTLINE_TOPICS__MODEL_EVENTS": f"{prefix}model-events",
                "DRIFTLINE_TOPICS__PARTITIONS": str(partitions),
            }
        )
        # What the worker will load: the same file and the same environment.
        self.config: Config = load_config(config_path, env=self.env)
        self.port = 0
        self.proc: asyncio.subprocess.Process | None = None
        self.spawned = 0.0
        self._tmp: str | None = None
        self._log: Any = None
        self._session: Any = None
        self._log_checked = 0

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def create_topics(self) -> None:
        from driftline.streaming.kafka import create_topics, planned_topics

        await create_topics(self.config)
        await _wait_for_leaders(
            self.bootstrap,
            [p.name for p in planned_topics(self.config)],
            security=self.config.security,
        )

    def command(self, data_dir: Path) -> list[str]:
        """The worker's command line (``driftline worker``, on :attr:`port`)."""
        command = [sys.executable, "-m", "driftline.cli", "worker"]
        if self.config_path:
            command += ["--config", self.config_path]
        return [
            *command,
            "--web-port",
            str(self.port),
            "--data-dir",
            str(data_dir),
            "--loglevel",
            self.loglevel,
        ]

    async def start(self) -> None:
        import aiohttp

        self._tmp = tempfile.mkdtemp(prefix="driftline-bench-worker-")
        self._log = open(Path(self._tmp) / "worker.log", "wb")  # noqa: SIM115
        self.port = _free_port()
        command = self.command(Path(self._tmp) / "data")
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10))
        self.spawned = time.perf_counter()
        self.proc = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            env=self.env,
            preexec_fn=_die_with_parent(),
        )

    def _read_log(self) -> bytes:
        if not self._tmp:
            return b""
        try:
            return (Path(self._tmp) / "worker.log").read_bytes()
        except OSError:
            return b""

    def log_tail(self, chars: int = 4000) -> str:
        return self._read_log()[-chars:].decode(errors="replace")

    def _check_alive(self) -> None:
        """Raise :class:`WorkerFailed` if the worker exited or one of its agents crashed.

        Faust logs a crashed agent ("Crashed reason=...") and keeps the
        process up, serving /healthz, with nothing consuming: without this
        check the bench would only notice through its stall timeout.
        """
        if self.proc is not None and self.proc.returncode is not None:
            raise WorkerFailed(
                f"driftline worker exited with status {self.proc.returncode}:\n{self.log_tail()}"
            )
        log = self._read_log()
        at = log.find(b"Crashed reason=", self._log_checked)
        self._log_checked = max(self._log_checked, len(log) - 64)
        if at >= 0:
            line_start = log.rfind(b"\n", 0, at) + 1
            line_end = log.find(b"\n", at)
            line = log[line_start : line_end if line_end >= 0 else None].decode(errors="replace")
            m = re.search(r"Agent\*: (.*?)\]: Crashed reason=(.*)$", line.strip())
            what = f"agent {m.group(1)} crashed: {m.group(2)}" if m else line.strip()
            raise WorkerFailed(
                f"driftline worker {what}\n"
                f"{log[line_start : line_start + 6000].decode(errors='replace')}"
            )

    async def _get(self, path: str) -> Any:
        async with self._session.get(self.base_url + path) as response:
            response.raise_for_status()
            return orjson.loads(await response.read())

    async def wait_ready(self, timeout: float = READY_TIMEOUT) -> float:
        """Poll ``/healthz`` until ``ok``; return the moment (``perf_counter``)."""
        import aiohttp

        deadline = time.perf_counter() + timeout
        while True:
            self._check_alive()
            with contextlib.suppress(aiohttp.ClientError, OSError, asyncio.TimeoutError):
                if (await self._get("/healthz")).get("status") == "ok":
                    return time.perf_counter()
            if time.perf_counter() > deadline:
                raise WorkerFailed(
                    f"driftline worker not ready after {timeout:.0f} s:\n{self.log_tail()}"
                )
            await asyncio.sleep(0.05)

    async def health(self) -> dict[str, Any]:
        """``/healthz`` of the worker."""
        self._check_alive()
        return await self._get("/healthz")

    async def models(self) -> list[dict[str, Any]]:
        """``/models`` of the worker; :class:`WorkerFailed` if it is gone or crashed."""
        import aiohttp

        self._check_alive()
        try:
            return await self._get("/models")
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            await asyncio.sleep(0.5)  # let a dying worker exit, to report why
            self._check_alive()
            raise WorkerFailed(f"GET /models failed: {exc!r}\n{self.log_tail()}") from exc

    def cpu_seconds(self) -> float:
        return _proc_cpu_seconds(self.pid)

    def peak_rss(self) -> int:
        return _proc_peak_rss(self.pid)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), STOP_TIMEOUT)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None


@contextlib.asynccontextmanager
async def running_worker(
    bootstrap: str, prefix: str, *, partitions: int, config_path: str | None
) -> AsyncIterator[WorkerProcess]:
    worker = WorkerProcess(bootstrap, prefix, partitions=partitions, config_path=config_path)
    try:
        yield worker
    finally:
        await worker.stop()


def _totals(models: list[dict[str, Any]]) -> dict[str, int]:
    keys = ("predictions", "outcomes", "joined", "expired", "duplicates", "dead_letters")
    return {k: sum(int(m.get(k) or 0) for m in models) for k in keys}


async def measure_worker(worker: WorkerProcess, pairs: int, produced: ProduceStats) -> WorkerRun:
    """Start ``worker`` on pre-produced topics; time it until every pair is joined."""
    await worker.start()
    ready = await worker.wait_ready()
    cpu_ready = worker.cpu_seconds()
    first_progress = None
    last_joined, last_change = -1, time.perf_counter()
    polls = 0
    while True:
        totals = _totals(await worker.models())
        now = time.perf_counter()
        polls += 1
        if first_progress is None and (totals["predictions"] or totals["joined"]):
            first_progress = now
        if totals["joined"] >= pairs:
            cpu_done = worker.cpu_seconds()
            break
        if totals["joined"] != last_joined:
            last_joined, last_change = totals["joined"], now
        elif now - last_change > STALL_TIMEOUT:
            raise WorkerFailed(
                f"driftline worker stuck at {totals['joined']} of {pairs} pairs joined"
                f" for {STALL_TIMEOUT:.0f} s ({totals}):\n{worker.log_tail()}"
            )
        delay = PROGRESS_POLL
        if totals["joined"] and first_progress is not None and now > first_progress:
            left = (pairs - totals["joined"]) * (now - ready) / totals["joined"]
            delay = min(PROGRESS_POLL_MAX, max(PROGRESS_POLL_MIN, left / 2))
        await asyncio.sleep(delay)
    return WorkerRun(
        pairs=pairs,
        messages=produced.messages,
        records=produced.records,
        seconds=now - ready,
        progress_seconds=now - (first_progress or ready),
        startup_seconds=ready - worker.spawned,
        cpu_seconds=cpu_done - cpu_ready,
        peak_rss_bytes=worker.peak_rss(),
        joined=totals["joined"],
        expired=totals["expired"],
        duplicates=totals["duplicates"],
        dead_letters=totals["dead_letters"],
        polls=polls,
    )


# --------------------------------------------------------------------------- latency


async def _watch_handoffs(
    bootstrap: str,
    topic: str,
    arrived: dict[str, float],
    started: asyncio.Event,
    security: SecurityConfig,
) -> None:
    """Record when each joined pair shows up on the model-events topic, by request id."""
    from driftline.core.events import Joined
    from driftline.core.wire import WireError, decode_tagged

    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **aiokafka_auth(security),
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        while not partitions:
            await consumer._client.force_metadata_update()  # fresh topic: metadata may lag
            partitions = consumer.partitions_for_topic(topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        for tp in tps:
            await consumer.position(tp)
        started.set()
        while True:
            batches = await consumer.getmany(timeout_ms=100)
            now = time.time()
            for batch in batches.values():
                for message in batch:
                    try:
                        events, _ = decode_tagged(message.value)
                    except WireError:
                        continue
                    for ev in events:
                        if type(ev) is Joined:
                            arrived.setdefault(ev.prediction.request_id, now)
    finally:
        await consumer.stop()


async def measure_latency(
    worker: WorkerProcess,
    *,
    rate: float,
    seconds: float,
    models: int,
    features: int,
    drain_timeout: float = 60.0,
) -> LatencyResult:
    """Offer ``rate`` pairs/s for ``seconds`` to a ready worker; see the module docstring."""
    bootstrap = worker.bootstrap
    config = worker.config
    total = max(1, round(rate * seconds))
    factory = PairFactory(models=models, features=features, seed=1, id_prefix="lat-")
    arrived: dict[str, float] = {}
    watching = asyncio.Event()
    watcher = asyncio.create_task(
        _watch_handoffs(bootstrap, config.model_events_topic, arrived, watching, config.security)
    )
    polls: list[tuple[float, float, int]] = []  # (request sent, response received, joined)
    stop_polling = asyncio.Event()

    async def poll() -> None:
        while not stop_polling.is_set():
            t0 = time.time()
            joined = _totals(await worker.models())["joined"]
            polls.append((t0, time.time(), joined))
            await asyncio.sleep(max(0.0, LATENCY_POLL - (time.time() - t0)))

    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=0, **aiokafka_auth(config.security)
    )
    await producer.start()
    poller: asyncio.Task[None] | None = None
    sent_at: list[float] = []
    request_ids: list[str] = []
    try:
        await asyncio.wait_for(watching.wait(), 30)
        poller = asyncio.create_task(poll())
        cpu_begin = worker.cpu_seconds()
        dumps = orjson.dumps
        pending: list[asyncio.Future[Any]] = []
        pred_topic, out_topic = config.topics.predictions, config.topics.outcomes
        begin = time.time()
        i = 0
        while i < total:
            due = min(total, int((time.time() - begin) * rate) + 1)
            while i < due:
                now = time.time()
                prediction, outcome = factory.pair(i, now)
                key = prediction["request_id"].encode()
                pending.append(await producer.send(pred_topic, dumps(prediction), key=key))
                pending.append(await producer.send(out_topic, dumps(outcome), key=key))
                sent_at.append(time.time())
                request_ids.append(prediction["request_id"])
                i += 1
            if len(pending) > 2000:
                await asyncio.gather(*pending)
                pending.clear()
            await asyncio.sleep(0.002)
        send_seconds = time.time() - begin
        cpu_seconds = worker.cpu_seconds() - cpu_begin
        await asyncio.gather(*pending)
        deadline = time.time() + drain_timeout
        while (not polls or polls[-1][2] < total) and time.time() < deadline:
            if poller.done():
                poller.result()  # the worker died or /models failed: raise it
            await asyncio.sleep(LATENCY_POLL)
        # The watcher may lag the worker's own monitor stage by a fetch.
        while len(arrived) < total and time.time() < deadline:
            await asyncio.sleep(LATENCY_POLL)
    finally:
        stop_polling.set()
        if poller is not None:
            with contextlib.suppress(Exception):
                await poller
        watcher.cancel()
        with contextlib.suppress(BaseException):
            await watcher
        await producer.stop()

    upper: list[float] = []
    lower: list[float] = []
    j = 0
    for k, t_sent in enumerate(sent_at):
        while j < len(polls) and polls[j][2] < k + 1:
            j += 1
        if j == len(polls):
            break  # never seen processed (reported as joined < sent)
        upper.append(polls[j][1] - t_sent)
        lower.append(max(0.0, (polls[j - 1][0] if j else t_sent) - t_sent))
    handoff = [arrived[r] - t for r, t in zip(request_ids, sent_at, strict=True) if r in arrived]
    return LatencyResult(
        offered_rate=rate,
        seconds=seconds,
        sent=len(sent_at),
        send_seconds=send_seconds,
        joined=polls[-1][2] if polls else 0,
        upper=upper,
        lower=lower,
        handoff=handoff,
        cpu_seconds=cpu_seconds,
        peak_rss_bytes=worker.peak_rss(),
        poll_seconds=sum(t1 - t0 for t0, t1, _ in polls) / len(polls) if polls else 0.0,
    )


# --------------------------------------------------------------------------- the run


async def run_stream_bench(
    bootstrap: str,
    *,
    pairs: int,
    models: int,
    features: int,
    batch_sizes: Sequence[int],
    partitions: int,
    latency_rate: float,
    latency_seconds: float,
    config_path: str | None = None,
    security: SecurityConfig | None = None,
    echo: Echo = print,
    timeout: float = 300.0,
) -> StreamBenchResult:
    """Run the whole stream bench; ``echo`` narrates progress. Topics are deleted at the end.

    ``security``: how this process's clients connect (the ``[security]``
    section of the config). The worker and the bare Faust child are other
    processes: they read it themselves from ``config_path`` and the
    ``DRIFTLINE_*`` environment they inherit, so no secret goes on a
    command line.
    """
    security = security or SecurityConfig()
    if pairs < 1:
        raise ValueError(f"pairs must be >= 1, got {pairs}")
    if any(b < 1 for b in batch_sizes):
        raise ValueError(f"batch sizes must be >= 1, got {list(batch_sizes)}")
    run_prefix = f"dlbench-{uuid.uuid4().hex[:8]}-"
    started = time.perf_counter()
    results: list[BatchResult] = []
    latency: LatencyResult | None = None
    latency_error: str | None = None
    echo(f"run prefix {run_prefix} (every topic starting with it is deleted at the end)")
    try:
        for batch in batch_sizes:
            prefix = f"{run_prefix}b{batch}-"
            async with running_worker(
                bootstrap, prefix, partitions=partitions, config_path=config_path
            ) as worker:
                topics = worker.config.topics
                await worker.create_topics()
                produced = await preproduce(
                    bootstrap,
                    topics.predictions,
                    topics.outcomes,
                    pairs=pairs,
                    models=models,
                    features=features,
                    batch=batch,
                    seed=batch,
                    security=security,
                )
                echo(
                    f"batch {batch}: produced {produced.messages:,} messages"
                    f" ({produced.records:,} records, {produced.bytes / 1e6:.0f} MB)"
                    f" in {produced.seconds:.1f} s"
                )
                inputs = [topics.predictions, topics.outcomes]
                raw = await raw_aiokafka_rate(
                    bootstrap, inputs, produced.messages, timeout=timeout, security=security
                )
                echo(f"  (a) raw aiokafka  {raw.messages_per_second:>10,.0f} msgs/s")
                faust = await bare_faust_rate_async(
                    bootstrap, inputs, produced.messages, timeout=timeout, config_path=config_path
                )
                echo(f"  (b) bare Faust    {faust.messages_per_second:>10,.0f} msgs/s")
                try:
                    run = await measure_worker(worker, pairs, produced)
                except WorkerFailed as exc:
                    echo(f"  (c) worker       FAILED: {exc}")
                    results.append(BatchResult(batch, produced, raw, faust, None, _first_line(exc)))
                    continue
                echo(
                    f"  (c) worker       {run.pairs_per_second:>10,.0f} pairs/s"
                    f" (startup {run.startup_seconds:.1f} s)"
                )
                results.append(BatchResult(batch, produced, raw, faust, run))
        if latency_seconds > 0 and latency_rate > 0:
            async with running_worker(
                bootstrap, f"{run_prefix}lat-", partitions=partitions, config_path=config_path
            ) as worker:
                await worker.create_topics()
                echo(
                    f"latency: offering {latency_rate:,.0f} pairs/s for {latency_seconds:g} s"
                    " (single-record messages)"
                )
                try:
                    await worker.start()
                    await worker.wait_ready()
                    latency = await measure_latency(
                        worker,
                        rate=latency_rate,
                        seconds=latency_seconds,
                        models=models,
                        features=features,
                    )
                except WorkerFailed as exc:
                    echo(f"latency: worker FAILED: {exc}")
                    latency_error = _first_line(exc)
    finally:
        try:
            deleted = await delete_topics_with_prefix(bootstrap, run_prefix, security=security)
            echo(f"deleted {len(deleted)} topics")
        except Exception as exc:
            echo(f"could not delete the topics starting with {run_prefix}: {exc!r}")
    return StreamBenchResult(
        bootstrap=bootstrap,
        pairs=pairs,
        models=models,
        features=features,
        partitions=partitions,
        batches=results,
        latency=latency,
        latency_error=latency_error,
        seconds=time.perf_counter() - started,
    )


# --------------------------------------------------------------------------- report


def _n(x: float, digits: int = 0) -> str:
    return "-" if x != x else f"{x:,.{digits}f}"  # NaN: not measured


def _share(cpu: float, wall: float) -> str:
    return f"{cpu / wall:.0%}" if wall > 0 else "-"


def _worker_cell(b: BatchResult, fmt: Callable[[WorkerRun], str]) -> str:
    return "FAILED" if b.worker is None else fmt(b.worker)


def _table(result: StreamBenchResult) -> list[str]:
    bs = result.batches
    rows: list[tuple[str, ...]] = [
        ("", *(f"batch={b.batch}" for b in bs)),
        ("input messages", *(_n(b.produced.messages) for b in bs)),
        ("input records (pred+outcome)", *(_n(b.produced.records) for b in bs)),
        ("(a) raw aiokafka msgs/s", *(_n(b.raw.messages_per_second) for b in bs)),
        ("(a) raw aiokafka records/s", *(_n(b.raw.records_per_second) for b in bs)),
        ("(b) bare Faust msgs/s", *(_n(b.faust.messages_per_second) for b in bs)),
        ("(b) bare Faust records/s", *(_n(b.faust.records_per_second) for b in bs)),
        ("(c) worker pairs/s", *(_worker_cell(b, lambda w: _n(w.pairs_per_second)) for b in bs)),
        ("(c) worker msgs/s", *(_worker_cell(b, lambda w: _n(w.messages_per_second)) for b in bs)),
        (
            "(c) worker records/s",
            *(_worker_cell(b, lambda w: _n(w.records_per_second)) for b in bs),
        ),
        ("c/a (records/s)", *(_n(b.ratio_raw, 3) for b in bs)),
        ("c/b (records/s)", *(_n(b.ratio_faust, 3) for b in bs)),
        (
            "worker seconds (ready->all joined)",
            *(_worker_cell(b, lambda w: _n(w.seconds, 2)) for b in bs),
        ),
        ("worker CPU-s", *(_worker_cell(b, lambda w: _n(w.cpu_seconds, 2)) for b in bs)),
        (
            "worker pairs per CPU-s",
            *(_worker_cell(b, lambda w: _n(w.pairs_per_cpu_second)) for b in bs),
        ),
        (
            "worker peak RSS MB",
            *(_worker_cell(b, lambda w: _n(w.peak_rss_bytes / 2**20, 1)) for b in bs),
        ),
        (
            "worker startup s (spawn->ready)",
            *(_worker_cell(b, lambda w: _n(w.startup_seconds, 1)) for b in bs),
        ),
        (
            "joined/expired/dup/dead letters",
            *(
                _worker_cell(b, lambda w: f"{w.joined}/{w.expired}/{w.duplicates}/{w.dead_letters}")
                for b in bs
            ),
        ),
        (
            "CPU-s raw / bare Faust",
            *(f"{b.raw.cpu_seconds:.2f} / {b.faust.cpu_seconds:.2f}" for b in bs),
        ),
        ("bare Faust msgs per CPU-s", *(_n(b.faust.messages_per_cpu_second) for b in bs)),
        (
            # Well under 100% for a reader means it waited (on the broker, a
            # rebalance, or for CPU taken by other processes): its rate is suspect.
            "CPU use while reading b / c",
            *(
                f"{_share(b.faust.cpu_seconds, b.faust.seconds)} / "
                + _worker_cell(b, lambda w: _share(w.cpu_seconds, w.seconds))
                for b in bs
            ),
        ),
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            c.ljust(w) if i == 0 else c.rjust(w)
            for i, (c, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]


def floor_checks(result: StreamBenchResult) -> list[tuple[bool, str]]:
    """``(passed, line)`` for every batch size that has a floor in the issue."""
    out = []
    for b in result.batches:
        floor = b.floor()
        if floor is None:
            continue
        value, how = floor
        if b.worker is None:
            out.append((False, f"batch={b.batch}: the worker failed (above); floor {value:,.0f}"))
            continue
        ok = b.worker.pairs_per_second >= value
        line = (
            f"batch={b.batch}: worker {b.worker.pairs_per_second:,.0f} pairs/s"
            f" {'>=' if ok else '<'} {value:,.0f} pairs/s ({how})"
        )
        if b.batch == 1:
            # The same comparison per CPU-second, which other load on the box distorts less.
            per_cpu = b.faust.messages_per_cpu_second / SINGLE_FLOOR_DIVISOR
            line += (
                f"; per CPU-s: {b.worker.pairs_per_cpu_second:,.0f} vs {per_cpu:,.0f}"
                f" ({b.worker.pairs_per_cpu_second / per_cpu:.2f}x)"
            )
        out.append((ok, line))
    return out


def report(result: StreamBenchResult) -> str:
    """The table, the floor checks and the latency figures, as printed by ``driftline bench``."""
    lines = [
        f"driftline bench (stream): broker {result.bootstrap}, {result.pairs:,} pairs per batch"
        f" size, {result.models} models, {result.features} features,"
        f" {result.partitions} partitions, {os.cpu_count()} CPUs, {result.seconds:.0f} s in all",
        "",
        *_table(result),
        "",
        "records/s counts predictions + outcomes (2 per pair); c/a and c/b compare records/s.",
        "worker window: /healthz ok -> /models joined == pairs (adaptive polls, end seen"
        f" within ~{PROGRESS_POLL_MIN * 1000:.0f} ms); CPU-s over the same window.",
        "CPU use well under 100% means a reader waited (broker, rebalance, CPU taken by"
        " other processes): its rate then says more about the machine than about the code.",
    ]
    for b in result.batches:
        if b.error:
            lines.append(f"worker FAILED at batch={b.batch}: {b.error}")
    lines += ["", "floor checks (one worker, default monitors):"]
    lines += [f"  {'PASS' if ok else 'FAIL'} {line}" for ok, line in floor_checks(result)]
    lat = result.latency
    if result.latency_error:
        lines += ["", f"latency: worker FAILED: {result.latency_error}"]
    if lat is not None:
        ms = 1000.0
        lines += [
            "",
            f"latency at {lat.offered_rate:,.0f} pairs/s offered for {lat.seconds:g} s"
            f" (single-record messages, fresh worker): sent {lat.sent:,} pairs"
            f" ({lat.achieved_rate:,.0f} pairs/s achieved), {lat.joined:,} joined",
            f"  outcome produced -> pair processed: p50 {lat.pct('upper', 50) * ms:,.0f} ms,"
            f" p99 {lat.pct('upper', 99) * ms:,.0f} ms, max {lat.pct('upper', 100) * ms:,.0f} ms",
            f"    (upper bounds: /models polled every {lat.poll_period * ms:.0f} ms, a poll took"
            f" {lat.poll_seconds * ms:.1f} ms on average; the lower bounds are"
            f" p50 {lat.pct('lower', 50) * ms:,.0f} ms, p99 {lat.pct('lower', 99) * ms:,.0f} ms)",
            f"  outcome produced -> joined pair on the model-events topic (exact, per request"
            f" id, {len(lat.handoff):,} pairs): p50 {lat.pct('handoff', 50) * ms:,.0f} ms,"
            f" p99 {lat.pct('handoff', 99) * ms:,.0f} ms",
            f"  worker while offered: {lat.cpu_seconds:.1f} CPU-s"
            f" ({lat.cpu_seconds / max(lat.send_seconds, 1e-9):.0%} of a core),"
            f" peak RSS {lat.peak_rss_bytes / 2**20:.0f} MB",
        ]
    return "\n".join(lines)

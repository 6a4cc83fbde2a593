"""Stop the broker mid-run and start it again: everything reconnects, counts stay exact.

:func:`run_broker_restart` drives a broker of its own (:class:`LocalBroker`,
``scripts/kafka-local`` on a port that is not the shared 9092), creates
topics on it, and starts the three kinds of client driftline has, each as
the user runs it: ``driftline worker``, ``driftline bridge webhook`` posting
to a :class:`Receiver` in this process, and ``driftline simulate`` playing a
scenario with a drift (so alerts fire) at a fixed rate and seed, writing
what the broker acknowledged per model (``--truth``). Some seconds into the
traffic it stops the broker, waits, and starts it again; nobody touches the
clients. Once the simulator has finished it waits for the worker to catch
up and for the bridge to deliver, then checks:

- per model, the worker's ``predictions`` and ``joined`` equal what the
  broker acknowledged to the simulator (every outcome of the run follows
  its prediction, and the label TTL is a day, so every acknowledged
  outcome joins), with no ``duplicates``, ``expired`` or ``late``: a
  record written twice (a retried send whose first answer was lost) or
  read twice (an offset commit lost with the broker) would show there;
- the worker's committed offsets reach the end of every topic it reads;
- every alert on the alert topic reached the receiver (deliveries counted
  per dedup key; a repeated delivery is allowed by the bridge's at-least-once
  contract and counted), and no alert is on the topic twice;
- the simulator exited 0, and the worker and bridge are still running with
  no crashed agent.

It measures the recovery: from the broker answering again to the
simulator's records landing again, to the worker counting records again,
to the worker's committed lag being back to what it was before the outage.

``scripts/broker_restart.py`` prints :func:`report`;
``tests/integration/test_broker_restart.py`` runs a short version and
asserts :attr:`RestartResult.problems` is empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from driftline.bench.stream import WorkerFailed, WorkerProcess, _die_with_parent

__all__ = ["LocalBroker", "Receiver", "RestartOptions", "RestartResult", "report"]

REPO_ROOT = Path(__file__).resolve().parents[3]
KAFKA_LOCAL = REPO_ROOT / "scripts" / "kafka-local"
SHARED_PORT = 9092
"""The broker other engineers' tests use: never stopped from here."""


# --------------------------------------------------------------------------- broker


class BrokerError(RuntimeError):
    """``scripts/kafka-local`` could not start or stop the broker (its output attached)."""


@dataclass
class LocalBroker:
    """A ``scripts/kafka-local`` broker on ``port`` (controller on ``port + 1``).

    ``start`` and ``stop`` are the script's own commands, so a restart here
    is what an operator's restart is: SIGTERM, a clean shutdown, the same
    data directory read again on start.
    """

    port: int
    start_timeout: float = 90.0
    local_dir: Path = field(default_factory=lambda: REPO_ROOT / ".cache" / "kafka-local")

    def __post_init__(self) -> None:
        if self.port in (SHARED_PORT, SHARED_PORT + 1):
            raise ValueError(
                f"port {self.port} belongs to the shared broker; pick another (e.g. 29092)"
            )

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.local_dir / f"data-{self.port}"

    def _run(self, command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("KAFKA_SECURITY")}
        env.update(
            KAFKA_PORT=str(self.port),
            KAFKA_CONTROLLER_PORT=str(self.port + 1),
            KAFKA_LOCAL_DIR=str(self.local_dir),
            KAFKA_START_TIMEOUT=str(int(self.start_timeout)),
        )
        try:
            proc = subprocess.run(
                [str(KAFKA_LOCAL), command],
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(f"scripts/kafka-local {command} (port {self.port}) hung") from exc
        if proc.returncode != 0:
            raise BrokerError(
                f"scripts/kafka-local {command} (KAFKA_PORT={self.port}) failed"
                f" (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}"
            )
        return proc

    def running(self) -> bool:
        """True if something answers on the port (ours or not)."""
        env = {**os.environ, "KAFKA_PORT": str(self.port), "KAFKA_LOCAL_DIR": str(self.local_dir)}
        proc = subprocess.run(
            [str(KAFKA_LOCAL), "status"],
            cwd=REPO_ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=30,
            check=False,
        )
        return proc.returncode == 0

    def start(self) -> None:
        # A cold start may also apt-get Java and resolve the jars.
        self._run("start", self.start_timeout + 900)

    def stop(self) -> None:
        self._run("stop", 90)

    def wipe(self) -> None:
        """Remove the broker's data directory (only once it is stopped)."""
        shutil.rmtree(self.data_dir, ignore_errors=True)


# --------------------------------------------------------------------------- receiver


class Receiver:
    """A webhook endpoint on 127.0.0.1 that counts deliveries per alert id and dedup key."""

    def __init__(self) -> None:
        self.deliveries: Counter[str] = Counter()  # alert id -> requests
        self.by_key: Counter[str] = Counter()  # dedup key -> requests
        self.times: list[float] = []  # monotonic time of each delivery
        self.port = 0
        self._runner: Any = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            try:
                alert = orjson.loads(await request.read())
                alert_id, key = alert["alert_id"], alert["dedup_key"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return web.Response(status=400, text="not an alert")
            self.deliveries[alert_id] += 1
            self.by_key[key] += 1
            self.times.append(time.monotonic())
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


# --------------------------------------------------------------------------- processes


class Background:
    """A ``driftline`` command running in the background, its output in a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self._log: IO[bytes] = open(self.log_path, "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "driftline.cli", *args],
            env=env,
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent(),
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_bytes()[-chars:].decode(errors="replace")
        except OSError:
            return ""

    async def wait(self, timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        return self.proc.poll()

    def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


# --------------------------------------------------------------------------- kafka reads


async def _offsets(
    bootstrap: str, group: str, topics: list[str], partitions: int, timeout: float = 4.0
) -> tuple[int, int]:
    """(sum of end offsets, sum of the group's committed offsets) over ``topics``."""
    tps = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=3000
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
        await asyncio.wait_for(consumer.start(), timeout)
        committed = await asyncio.wait_for(
            admin.list_consumer_group_offsets(group, partitions=tps), timeout
        )
        ends = await asyncio.wait_for(consumer.end_offsets(tps), timeout)
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), timeout)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(admin.close(), timeout)
    done = 0
    for tp in tps:
        meta = committed.get(tp)
        done += meta.offset if meta is not None and meta.offset >= 0 else 0
    return sum(ends.values()), done


async def _read_topic(bootstrap: str, topic: str, partitions: int) -> list[dict[str, Any]]:
    """Every message of ``topic``, from the start to its end offsets, decoded as JSON."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + 30
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic} to its end within 30 s")
            batches = await consumer.getmany(timeout_ms=500)
            out.extend(orjson.loads(m.value) for ms in batches.values() for m in ms)
    finally:
        await consumer.stop()
    return out


# --------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class RestartOptions:
    """What to play and when to take the broker away (seconds from the first record)."""

    scenario: str = "covid"
    models: int = 4
    rate: float = 100.0
    duration: float = 90.0
    change_at: float = 45.0
    seed: int = 7
    partitions: int = 4
    stop_at: float = 20.0
    down: float = 15.0
    catch_up_timeout: float = 180.0
    workdir: Path | None = None
    config_text: str | None = None
    """A ``driftline.toml`` for the worker (a short run needs quicker alerts)."""


@dataclass
class Sample:
    """One look at the run: seconds since the first record, and what the worker counted."""

    t: float
    counted: int | None = None  # predictions + outcomes in /models
    end: int | None = None  # sum of end offsets of the worker's input topics
    committed: int | None = None  # the worker's committed offsets on them


@dataclass
class RestartResult:
    """What happened, what it should have been, and what is wrong (``problems``)."""

    options: RestartOptions
    truth: dict[str, Any] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    alerts_on_topic: Counter[str] = field(default_factory=Counter)  # dedup key -> alerts
    alert_ids_on_topic: Counter[str] = field(default_factory=Counter)
    alert_keys: dict[str, str] = field(default_factory=dict)  # alert id -> dedup key
    delivered: Counter[str] = field(default_factory=Counter)  # dedup key -> deliveries
    delivered_ids: Counter[str] = field(default_factory=Counter)
    alerts_after_restart: int = 0
    broker_down_at: float = 0.0
    broker_back_at: float = 0.0
    broker_restart_seconds: float = 0.0  # `kafka-local start` until it answered
    producing_again: float | None = None  # seconds after broker_back_at
    counting_again: float | None = None
    lag_back: float | None = None
    lag_before: int = 0
    lag_peak: int = 0
    caught_up_after_end: float | None = None  # seconds after the simulator exited
    final_lag: int | None = None
    samples: list[Sample] = field(default_factory=list)
    simulate_output: str = ""
    problems: list[str] = field(default_factory=list)


def _counted(models: list[dict[str, Any]]) -> int:
    return sum(int(m.get("predictions") or 0) + int(m.get("outcomes") or 0) for m in models)


def _expected_no_expiry(t: dict[str, Any]) -> dict[str, int]:
    """Every prediction sent has its outcome: all join, none expires."""
    return {
        "predictions": t["predictions"],
        "joined": t["outcomes"],
        "duplicates": 0,
        "expired": 0,
        "late": 0,
    }


def count_problems(
    truth: dict[str, Any],
    models: list[dict[str, Any]],
    expected: Callable[[dict[str, Any]], dict[str, int]] = _expected_no_expiry,
) -> list[str]:
    """Every way the worker's per-model counts differ from ``expected(truth of the model)``."""
    seen = {(m["model_id"], m["model_version"]): m for m in models}
    problems = []
    for t in truth.get("models", []):
        key = (t["model_id"], t["model_version"])
        m = seen.pop(key, None)
        if m is None:
            problems.append(f"{key[0]} {key[1]}: not in /models")
            continue
        for name, value in expected(t).items():
            if m.get(name) != value:
                problems.append(f"{key[0]} {key[1]}: {name} {m.get(name)}, expected {value}")
    for key in seen:
        problems.append(f"{key[0]} {key[1]}: in /models but the simulator sent none")
    return problems


async def run_broker_restart(
    broker: LocalBroker, options: RestartOptions, *, say: Any = print
) -> RestartResult:
    """Play the scenario, restart ``broker`` mid-run, and check the counts (see the module).

    ``broker`` must be running; it is running again when this returns
    (unless starting it again failed, which is a problem of the result).
    """
    o = options
    result = RestartResult(o)
    prefix = f"br-{uuid.uuid4().hex[:8]}-"
    workdir = o.workdir or Path.cwd()
    workdir.mkdir(parents=True, exist_ok=True)
    bootstrap = broker.bootstrap
    config_path = None
    if o.config_text is not None:
        config_path = workdir / f"{prefix}driftline.toml"
        config_path.write_text(o.config_text)
    worker = WorkerProcess(
        bootstrap,
        prefix,
        partitions=o.partitions,
        loglevel="info",
        config_path=None if config_path is None else str(config_path),
    )
    config = worker.config
    inputs = [config.topics.predictions, config.topics.outcomes, config.model_events_topic]
    receiver = Receiver()
    bridge: Background | None = None
    sim: Background | None = None
    truth_path = workdir / f"{prefix}truth.json"
    try:
        await worker.create_topics()
        await worker.start()
        await worker.wait_ready()
        await receiver.start()
        env = dict(worker.env)
        bridge = Background(
            "bridge",
            ["bridge", "webhook", "--url", receiver.url, "--group", f"{prefix}bridge"],
            env,
            workdir,
        )
        sim = Background(
            "simulate",
            [
                "simulate",
                f"--scenario={o.scenario}",
                f"--models={o.models}",
                f"--rate={o.rate:g}",
                f"--duration={o.duration:g}",
                f"--change-at={o.change_at:g}",
                f"--seed={o.seed}",
                "--label-delay=lognormal:3:0.5",
                f"--truth={truth_path}",
            ],
            env,
            workdir,
        )
        say(f"worker, bridge and simulator started on {bootstrap} (topics {prefix}*)")

        # The first record counted marks the start of the traffic.
        deadline = time.monotonic() + 120
        while _counted(await worker.models()) == 0:
            if sim.proc.poll() is not None or time.monotonic() > deadline:
                raise WorkerFailed(f"no traffic reached the worker:\n{sim.log_tail()}")
            await asyncio.sleep(0.2)
        t0 = time.monotonic()
        group = config.app_id

        async def sample() -> Sample:
            s = Sample(time.monotonic() - t0)
            with contextlib.suppress(WorkerFailed):
                s.counted = _counted(await worker.models())
            with contextlib.suppress(Exception):
                s.end, s.committed = await _offsets(bootstrap, group, inputs, o.partitions)
            result.samples.append(s)
            return s

        async def watch() -> None:
            while True:
                started = time.monotonic()
                await sample()
                await asyncio.sleep(max(0.0, 0.5 - (time.monotonic() - started)))

        watcher = asyncio.create_task(watch())
        try:
            await asyncio.sleep(max(0.0, o.stop_at - (time.monotonic() - t0)))
            say(f"[{time.monotonic() - t0:5.1f}s] stopping the broker")
            await asyncio.to_thread(broker.stop)
            result.broker_down_at = time.monotonic() - t0
            say(f"[{result.broker_down_at:5.1f}s] broker stopped; down for {o.down:g} s")
            await asyncio.sleep(o.down)
            started = time.monotonic()
            await asyncio.to_thread(broker.start)
            result.broker_restart_seconds = time.monotonic() - started
            result.broker_back_at = time.monotonic() - t0
            say(
                f"[{result.broker_back_at:5.1f}s] broker answering again"
                f" (start took {result.broker_restart_seconds:.1f} s)"
            )
            rc = await sim.wait(o.duration + 180)
            sim_end = time.monotonic()
            result.simulate_output = sim.log_tail(4000)
            if rc != 0:
                result.problems.append(
                    f"driftline simulate exited with {rc}:\n{sim.log_tail(1500)}"
                )
            say(f"[{sim_end - t0:5.1f}s] simulator finished (exit {rc}); waiting to catch up")
            if truth_path.exists():
                result.truth = orjson.loads(truth_path.read_bytes())

            # Caught up: the counts are the truth and the committed lag is zero, twice in a row.
            deadline = time.monotonic() + o.catch_up_timeout
            hits = 0
            while time.monotonic() < deadline:
                result.models = await worker.models()
                s = result.samples[-1] if result.samples else None
                lag0 = s is not None and s.end is not None and s.end == s.committed
                done = result.truth and not count_problems(result.truth, result.models)
                hits = hits + 1 if (done and lag0 and bridge.alive()) else 0
                if hits >= 3:
                    result.caught_up_after_end = time.monotonic() - sim_end
                    break
                await asyncio.sleep(0.5)
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        last = await sample()
        if last.end is not None and last.committed is not None:
            result.final_lag = last.end - last.committed
        result.models = await worker.models()
        _recovery(result)

        # Alerts: every one on the topic delivered (the bridge is given time to finish).
        on_topic = await _read_topic(bootstrap, config.topics.alerts, o.partitions)
        for a in on_topic:
            result.alerts_on_topic[a["dedup_key"]] += 1
            result.alert_ids_on_topic[a["alert_id"]] += 1
            result.alert_keys[a["alert_id"]] = a["dedup_key"]
        back_wall = time.time() - (time.monotonic() - t0 - result.broker_back_at)
        result.alerts_after_restart = sum(1 for a in on_topic if a["emitted_at"] > back_wall)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not all(
            receiver.deliveries[i] for i in result.alert_ids_on_topic
        ):
            await asyncio.sleep(0.2)
        result.delivered = Counter(receiver.by_key)
        result.delivered_ids = Counter(receiver.deliveries)
        if not bridge.alive():
            result.problems.append(f"the bridge exited:\n{bridge.log_tail(1500)}")
        await worker.models()  # WorkerFailed if it exited or an agent crashed
    except WorkerFailed as exc:
        result.problems.append(str(exc))
    finally:
        if sim is not None:
            sim.stop()
        if bridge is not None:
            bridge.stop()
        await receiver.stop()
        with contextlib.suppress(OSError):  # the worker's own directory goes with it
            (workdir / "worker.log").write_text(worker.log_tail(1_000_000))
        await worker.stop()
        if not broker.running():
            with contextlib.suppress(BrokerError):
                await asyncio.to_thread(broker.start)
    _check(result)
    return result


def _recovery(r: RestartResult) -> None:
    """The recovery figures, from the samples taken every half second."""
    before = [s for s in r.samples if s.t < r.broker_down_at and s.end is not None]
    r.lag_before = max(
        ((s.end or 0) - (s.committed or 0) for s in before[len(before) // 2 :]), default=0
    )
    after = [s for s in r.samples if s.t >= r.broker_back_at]
    lags = [(s.end or 0) - (s.committed or 0) for s in r.samples if s.end is not None]
    r.lag_peak = max(lags, default=0)
    end_before = max((s.end for s in before), default=0)
    counted_back = next(
        (s.counted for s in reversed(r.samples) if s.t <= r.broker_back_at and s.counted), 0
    )
    for s in after:
        if r.producing_again is None and s.end is not None and s.end > end_before:
            r.producing_again = s.t - r.broker_back_at
        if r.counting_again is None and s.counted is not None and s.counted > counted_back:
            r.counting_again = s.t - r.broker_back_at
        if (
            r.lag_back is None
            and r.counting_again is not None
            and s.end is not None
            and s.end - (s.committed or 0) <= max(r.lag_before, 1)
        ):
            r.lag_back = s.t - r.broker_back_at


def _check(r: RestartResult) -> None:
    if not r.truth:
        r.problems.append("the simulator wrote no truth file")
    else:
        if r.truth.get("errors"):
            r.problems.append(f"the simulator reported send errors: {r.truth['errors'][:3]}")
        r.problems.extend(count_problems(r.truth, r.models))
    if r.final_lag != 0:
        r.problems.append(f"the worker's committed lag is {r.final_lag}, not 0")
    if r.caught_up_after_end is None:
        r.problems.append(
            f"the worker did not catch up within {r.options.catch_up_timeout:g} s of the run's end"
        )
    if r.producing_again is None:
        r.problems.append("no record reached the broker after it came back")
    if r.counting_again is None:
        r.problems.append("the worker counted no record after the broker came back")
    twice = {i: n for i, n in r.alert_ids_on_topic.items() if n > 1}
    if twice:
        r.problems.append(f"{len(twice)} alert id(s) on the alert topic more than once: {twice}")
    lost = [i for i in r.alert_ids_on_topic if not r.delivered_ids[i]]
    if lost:
        r.problems.append(f"{len(lost)} alert(s) on the topic never delivered: {lost[:5]}")
    if not r.alert_ids_on_topic:
        r.problems.append("no alert fired: the run shows nothing about the bridge")


def report(r: RestartResult) -> str:
    """The figures as text: per model counts against the truth, recovery, alerts."""
    o = r.options
    lines = [
        f"broker restart: {o.scenario}, {o.models} models, {o.rate:g} predictions/s for"
        f" {o.duration:g} s, seed {o.seed}, {o.partitions} partitions; broker stopped at"
        f" {r.broker_down_at:.1f} s, down {o.down:g} s, answering again at"
        f" {r.broker_back_at:.1f} s (start took {r.broker_restart_seconds:.1f} s)",
        "",
        f"{'model':<10} {'version':<8} {'sent pred':>9} {'predictions':>11} {'sent outc':>9}"
        f" {'joined':>7} {'expired':>7} {'late':>5} {'dup':>4}  ok",
    ]
    seen = {(m["model_id"], m["model_version"]): m for m in r.models}
    for t in r.truth.get("models", []):
        m = seen.get((t["model_id"], t["model_version"]), {})
        ok = (
            m.get("predictions") == t["predictions"]
            and m.get("joined") == t["outcomes"]
            and m.get("duplicates") == m.get("expired") == m.get("late") == 0
        )
        lines.append(
            f"{t['model_id']:<10} {t['model_version']:<8} {t['predictions']:>9}"
            f" {m.get('predictions', '-')!s:>11} {t['outcomes']:>9} {m.get('joined', '-')!s:>7}"
            f" {m.get('expired', '-')!s:>7} {m.get('late', '-')!s:>5}"
            f" {m.get('duplicates', '-')!s:>4}  {'yes' if ok else 'NO'}"
        )

    def secs(x: float | None) -> str:
        return "never" if x is None else f"{x:.1f} s"

    lines += [
        "",
        "recovery, from the broker answering again:",
        f"  simulator's records landing again   {secs(r.producing_again)}",
        f"  worker counting records again       {secs(r.counting_again)}",
        f"  committed lag back to pre-outage    {secs(r.lag_back)}"
        f" (pre-outage lag <= {r.lag_before}, peak {r.lag_peak} records)",
        f"  caught up after the simulator ended {secs(r.caught_up_after_end)}"
        f" (final committed lag {r.final_lag})",
        "",
        f"alerts: {sum(r.alerts_on_topic.values())} on the topic"
        f" ({r.alerts_after_restart} emitted after the restart),"
        f" {sum(r.delivered.values())} deliveries",
        f"  {'dedup key':<48} {'on topic':>8} {'delivered':>9} {'lost':>5} {'dup':>4}",
    ]
    for key in sorted(set(r.alerts_on_topic) | set(r.delivered)):
        on, got = r.alerts_on_topic[key], r.delivered[key]
        lost = sum(1 for i, k in r.alert_keys.items() if k == key and not r.delivered_ids[i])
        lines.append(f"  {key:<48} {on:>8} {got:>9} {lost:>5} {max(0, got - on):>4}")
    lines.append("")
    if r.problems:
        lines.append(f"FAILED: {len(r.problems)} problem(s)")
        lines += [f"  - {p}" for p in r.problems]
    else:
        lines.append("OK: counts exact, nothing lost, everything reconnected by itself")
    return "\n".join(lines)

"""Run ``driftline worker`` as a subprocess against the local broker, and talk to it.

The integration tests of the streaming worker drive the real thing: the CLI
entry point in its own process (its own event loop, signal handling and
start-up checks), configured only the way a user configures it, through
``DRIFTLINE_*`` environment variables and a ``driftline.toml``. Each worker
gets a unique app id (so its consumer group, internal topic and changelog
are its own), the test's own topics, a free web port and a scratch data
directory. :func:`running_worker` stops it at the end (SIGTERM, then SIGKILL),
deletes the internal topics Faust declared for it, and prints the tail of its
log when the test body fails, so the failure report shows what the worker said.

The test side uses plain aiokafka clients (:class:`Producer`, :func:`consume`)
rather than anything of driftline's, so a bug in driftline's own Kafka code
cannot hide itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord, RecordMetadata

REPO_ROOT = Path(__file__).resolve().parents[2]
DRIFTLINE = [sys.executable, "-m", "driftline.cli"]
LOG_TAIL_LINES = 300

Models = dict[str, dict[str, Any]]


def free_port() -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without any ``DRIFTLINE_*`` setting, plus ``extra``.

    A developer's own ``DRIFTLINE_CONFIG`` or ``DRIFTLINE_BROKER`` must not leak
    into a test's worker.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def run_cli(
    args: Sequence[str], env: Mapping[str, str], *, cwd: Path, timeout: float = 60.0
) -> tuple[subprocess.CompletedProcess[str], float]:
    """Run ``driftline ARGS`` to completion; return the result and the seconds it took."""
    started = time.monotonic()
    proc = subprocess.run(
        [*DRIFTLINE, *args],
        env=dict(env),
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return proc, time.monotonic() - started


@dataclass(frozen=True)
class WorkerTopics:
    """The four topics a worker is pointed at (the test creates and deletes them)."""

    predictions: str
    outcomes: str
    alerts: str
    dead_letter: str

    def env(self) -> dict[str, str]:
        return {
            "DRIFTLINE_TOPICS__PREDICTIONS": self.predictions,
            "DRIFTLINE_TOPICS__OUTCOMES": self.outcomes,
            "DRIFTLINE_TOPICS__ALERTS": self.alerts,
            "DRIFTLINE_TOPICS__DEAD_LETTER": self.dead_letter,
        }


async def make_topics(
    topic_factory: Callable[..., Any], partitions: int, *, outcomes_partitions: int | None = None
) -> WorkerTopics:
    """Create a fresh set of uniquely named topics with ``topic_factory``."""
    return WorkerTopics(
        predictions=await topic_factory(partitions, prefix="dl-predictions"),
        outcomes=await topic_factory(outcomes_partitions or partitions, prefix="dl-outcomes"),
        alerts=await topic_factory(partitions, prefix="dl-alerts"),
        dead_letter=await topic_factory(partitions, prefix="dl-dead-letter"),
    )


class WorkerError(AssertionError):
    """The worker did not start, or stopped on its own."""


class WorkerProcess:
    """One ``driftline worker`` subprocess and its HTTP status API."""

    def __init__(
        self,
        bootstrap: str,
        topics: WorkerTopics,
        workdir: Path,
        *,
        partitions: int,
        config_text: str | None = None,
        env: Mapping[str, str] | None = None,
        loglevel: str = "info",
        app_id: str | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.extra_args = list(extra_args)
        self.bootstrap = bootstrap
        self.topics = topics
        # Pass the app id of an earlier worker to restart "the same" worker:
        # same consumer group, changelog and data directory.
        self.app_id = app_id or f"dltest-{uuid.uuid4().hex[:12]}"
        self.port = free_port()
        self.workdir = workdir / self.app_id
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "worker.log"
        self.loglevel = loglevel
        extra = {
            "DRIFTLINE_APP_ID": self.app_id,
            "DRIFTLINE_BROKER": f"kafka://{bootstrap}",
            "DRIFTLINE_TOPICS__PARTITIONS": str(partitions),
            **topics.env(),
        }
        if config_text is not None:
            config_path = self.workdir / "driftline.toml"
            config_path.write_text(config_text)
            extra["DRIFTLINE_CONFIG"] = str(config_path)
        extra.update(env or {})
        self.env = clean_env(extra)
        self.proc: subprocess.Popen[bytes] | None = None
        self.base_url = f"http://127.0.0.1:{self.port}"

    # -- process -----------------------------------------------------------

    def command(self) -> list[str]:
        return [
            *DRIFTLINE,
            "worker",
            "--web-port",
            str(self.port),
            "--web-host",
            "127.0.0.1",
            "--data-dir",
            str(self.workdir / "data"),
            "--loglevel",
            self.loglevel,
            *self.extra_args,
        ]

    async def start(self, timeout: float = 120.0) -> None:
        """Spawn the worker; return once ``/healthz`` says the join table is restored."""
        with open(self.log_path, "ab") as log:  # a restarted worker appends
            self.proc = subprocess.Popen(
                self.command(),
                env=self.env,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # our signals reach the worker alone
            )
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WorkerError(f"worker exited with status {self.proc.returncode} at start-up")
            try:
                last = await self.get_json("/healthz")
            except (OSError, ValueError) as exc:  # not listening yet
                last = exc
            else:
                if last.get("status") == "ok":
                    return
            await asyncio.sleep(0.2)
        raise WorkerError(f"worker not ready after {timeout:.0f}s (last /healthz: {last!r})")

    async def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; return the exit status."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if proc.poll() is None:
                print(f"worker {self.app_id} ignored SIGTERM for {timeout:.0f}s: killing it")
                proc.kill()
                await asyncio.to_thread(proc.wait)
        return proc.returncode

    async def delete_internal_topics(self) -> None:
        """Delete what Faust declared for this app id (internal topic, changelog, assignor)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=30_000)
        await admin.start()
        try:
            mine = [t for t in await admin.list_topics() if t.startswith(f"{self.app_id}-")]
            if mine:
                await admin.delete_topics(mine)
        finally:
            await admin.close()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def print_log(self) -> None:
        lines = self.log().splitlines()
        skipped = max(0, len(lines) - LOG_TAIL_LINES)
        print(f"----- driftline worker {self.app_id} (port {self.port}) log -----")
        if skipped:
            print(f"[... {skipped} earlier lines in {self.log_path}]")
        print("\n".join(lines[skipped:]))
        print("----- end of worker log -----")

    # -- HTTP --------------------------------------------------------------

    async def get_json(self, path: str, timeout: float = 10.0) -> Any:
        def fetch() -> Any:
            with urllib.request.urlopen(self.base_url + path, timeout=timeout) as resp:
                return orjson.loads(resp.read())

        return await asyncio.to_thread(fetch)

    async def models(self) -> Models:
        """``/models``, keyed by model id (the tests give each model one version)."""
        return {m["model_id"]: m for m in await self.get_json("/models")}

    async def wait_models(
        self,
        expected: Mapping[str, Mapping[str, Any]] | Callable[[Models], bool],
        *,
        timeout: float = 90.0,
        settle: float = 0.5,
        poll: float = 0.1,
    ) -> Models:
        """Poll ``/models`` until it matches ``expected``; return the last answer.

        ``expected`` maps model id to the fields it must have (``{"fraud":
        {"joined": 40}}``), or is a predicate on the whole answer. Once it
        matches, it must still match ``settle`` seconds later: a count that
        overshoots on the way (a duplicate counted twice) fails rather than
        passing on a lucky poll.
        """

        def matches(models: Models) -> bool:
            if callable(expected):
                return bool(expected(models))
            return all(
                name in models and all(models[name].get(k) == v for k, v in fields.items())
                for name, fields in expected.items()
            )

        deadline = time.monotonic() + timeout
        models: Models = {}
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise WorkerError(f"worker exited with status {self.proc.returncode}")
            models = await self.models()
            if matches(models):
                if settle <= 0:
                    return models
                await asyncio.sleep(settle)
                models = await self.models()
                if matches(models):
                    return models
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(poll)
        raise AssertionError(
            f"/models did not reach {_describe(expected)} within {timeout:.0f}s; last answer:\n"
            + _summary(models)
        )


def _describe(expected: object) -> str:
    if callable(expected):
        return getattr(expected, "__doc__", None) or getattr(expected, "__name__", "the condition")
    return repr(expected)


def _summary(models: Models) -> str:
    keys = (
        "predictions",
        "outcomes",
        "joined",
        "expired",
        "late",
        "duplicates",
        "dead_letters",
    )
    lines = []
    for name, m in sorted(models.items()):
        counts = ", ".join(f"{k}={m.get(k)}" for k in keys)
        firing = [a["dedup_key"] for a in m.get("firing_alerts", [])]
        lines.append(f"  {name} {m.get('model_version')}: {counts}, firing={firing}")
    return "\n".join(lines) or "  (no model)"


@contextlib.asynccontextmanager
async def running_worker(
    bootstrap: str, topics: WorkerTopics, workdir: Path, **kwargs: Any
) -> AsyncIterator[WorkerProcess]:
    """A started worker; stopped (and its internal topics deleted) on exit.

    When the body (or the start) fails, the tail of the worker's log is
    printed, so pytest shows it with the failure.
    """
    worker = WorkerProcess(bootstrap, topics, workdir, **kwargs)
    try:
        await worker.start()
        yield worker
    except BaseException:
        worker.print_log()
        raise
    finally:
        await worker.stop()
        try:
            await worker.delete_internal_topics()
        except Exception as exc:  # cleanup must not mask the test's own outcome
            print(f"could not delete the internal topics of {worker.app_id}: {exc!r}")


# -- plain aiokafka clients -----------------------------------------------


def as_bytes(value: Any) -> bytes | None:
    """A message value: bytes as is, ``None`` (a tombstone) as is, anything else as JSON."""
    if value is None or isinstance(value, bytes):
        return value
    return orjson.dumps(value)


class Producer:
    """A plain aiokafka producer that remembers where each message landed."""

    def __init__(self, bootstrap: str) -> None:
        self.producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5
        )

    async def __aenter__(self) -> Producer:
        await self.producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.producer.stop()

    async def send(
        self,
        topic: str,
        value: Any,
        *,
        key: str | bytes | None = None,
        partition: int | None = None,
    ) -> RecordMetadata:
        """Send one message and wait for the broker's acknowledgement."""
        return await (await self._send(topic, value, key, partition))

    async def send_many(
        self, topic: str, messages: Iterable[tuple[str | bytes | None, Any]]
    ) -> list[RecordMetadata]:
        """Send ``(key, value)`` pairs in order; wait for all acknowledgements."""
        futures = [await self._send(topic, value, key, None) for key, value in messages]
        return list(await asyncio.gather(*futures))

    async def send_records(self, topic: str, records: Iterable[dict[str, Any]]) -> int:
        """Send prediction or outcome dicts keyed by their request id."""
        sent = await self.send_many(topic, ((r["request_id"], r) for r in records))
        return len(sent)

    async def _send(
        self, topic: str, value: Any, key: str | bytes | None, partition: int | None
    ) -> asyncio.Future[RecordMetadata]:
        raw_key = key.encode() if isinstance(key, str) else key
        return await self.producer.send(
            topic, value=as_bytes(value), key=raw_key, partition=partition
        )


async def consume(
    bootstrap: str,
    topic: str,
    *,
    expected: int,
    timeout: float = 60.0,
    linger: float = 2.0,
) -> list[ConsumerRecord]:
    """Read ``topic`` from the start until ``expected`` messages came, then ``linger`` more.

    Returns every message read, so a test sees extra messages as well as
    missing ones.
    """
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"dltest-reader-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    messages: list[ConsumerRecord] = []
    try:
        deadline = time.monotonic() + timeout
        while len(messages) < expected and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            messages.extend(m for batch in batches.values() for m in batch)
        end = time.monotonic() + linger
        while time.monotonic() < end:
            batches = await consumer.getmany(timeout_ms=250)
            messages.extend(m for batch in batches.values() for m in batch)
    finally:
        await consumer.stop()
    return messages

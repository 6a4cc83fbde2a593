"""The loop every bridge runs: consume an alert, deliver it, then commit it. At least once.

Guarantees, and how they are kept:

* **Nothing lost.** Offsets are committed by hand (``enable_auto_commit``
  off), one message at a time, and only once the endpoint accepted the
  alert (2xx) or the alert went to the dead-letter topic. A crash or a stop
  at any moment leaves at most the one in-flight alert of each partition
  uncommitted; it is delivered again on restart (a duplicate PagerDuty and
  well-behaved receivers absorb, since the dedup key and alert id repeat).
* **No reordering of one condition's alerts.** Alerts are keyed by dedup
  key, so the alerts of one key live on one partition. Each partition is
  delivered strictly in offset order, one request at a time, by a task of
  its own; partitions proceed independently, so a slow key does not hold up
  the others more than the endpoint itself does. While its task works, a
  partition is paused: the consumer keeps polling (and so stays in its
  group, however long a retry lasts) without fetching past the alert being
  delivered.
* **Never stuck, never crashed.** Timeouts, refused connections, 429 and
  5xx are retried without end, with capped, jittered exponential backoff
  that honours ``Retry-After`` (:mod:`~driftline.bridges.retry`). A request
  the endpoint refuses for good, and a message that is not an alert, go to
  the dead-letter topic with the reason (the endpoint's status and body)
  and the bridge moves on.
* **Secrets stay secret.** Everything logged or written to a dead letter
  passes through the target's :meth:`~driftline.bridges.alert.Target.redact`;
  the dead letter holds the original alert bytes, never the request (which
  holds the routing key).

On SIGINT/SIGTERM the bridge stops taking new alerts, gives an in-flight
request ``stop_grace`` seconds to be answered (and committed), abandons it
uncommitted otherwise (a backoff wait is abandoned at once), then leaves
its consumer group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from driftline.bridges.alert import AlertError, Request, Target, parse_alert
from driftline.bridges.retry import RetryPolicy, Verdict, classify_status, parse_retry_after
from driftline.core.config import Config
from driftline.simulate import StopOnSignals, topic_partitions
from driftline.streaming.deadletter import dead_letter
from driftline.streaming.kafka import (
    KafkaSetupError,
    aiokafka_auth,
    bootstrap_servers,
    start_client,
)

__all__ = ["Bridge", "BridgeSettings", "BridgeStats", "DeliveryRefused", "Outcome", "post"]

log = logging.getLogger("driftline.bridge")

CONNECT_TIMEOUT = 10.0
"""Seconds to reach the broker at start-up before giving up with a clear message."""

_BODY_LIMIT = 2000  # characters of a response body kept for logs and dead letters


class DeliveryRefused(Exception):
    """The endpoint refused an alert in a way retrying cannot fix (its status and body)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class BridgeSettings:
    """How a bridge consumes: its group, where a new group starts, retry and stop timing.

    ``start_at``: ``earliest`` or ``latest``, where a group with no
    committed offset starts reading (``earliest`` loses nothing).
    ``stop_grace``: seconds an in-flight request may still take at stop.
    """

    group_id: str
    start_at: str = "earliest"
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    stop_grace: float = 5.0
    poll_ms: int = 200
    max_batch: int = 100

    def __post_init__(self) -> None:
        if self.start_at not in ("earliest", "latest"):
            raise ValueError(f"start_at must be 'earliest' or 'latest', got {self.start_at!r}")


@dataclass
class BridgeStats:
    """What a bridge did; ``retry_reasons`` counts retries by cause (``HTTP 503``, ``timeout``)."""

    delivered: int = 0
    dead_letters: int = 0
    malformed: int = 0
    retries: int = 0
    abandoned: int = 0
    retry_reasons: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class Outcome:
    """The result of one HTTP attempt.

    ``kind``: a short cause for counting (``HTTP 429``, ``timeout``,
    ``connection refused``); ``detail``: the readable line for the log.
    """

    verdict: Verdict
    kind: str
    detail: str
    status: int | None = None
    body: str = ""
    retry_after: float | None = None


async def _read_some(resp: aiohttp.ClientResponse, limit: int) -> str:
    """Up to about ``limit`` bytes of a response body: an error page can be large."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in resp.content.iter_any():
        chunks.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(chunks)[:limit].decode("utf-8", "replace")


async def post(session: aiohttp.ClientSession, request: Request, timeout: float) -> Outcome:
    """Send ``request`` once; classify what happened. Never raises for network trouble.

    Redirects are not followed (see :func:`~driftline.bridges.retry.classify_status`).
    """
    try:
        async with session.post(
            request.url,
            data=request.body,
            headers=dict(request.headers),
            allow_redirects=False,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as resp:
            status, reason = resp.status, resp.reason or ""
            retry_after = parse_retry_after(resp.headers.get("Retry-After"))
            body = await _read_some(resp, _BODY_LIMIT)
    except TimeoutError:
        return Outcome(Verdict.RETRY, "timeout", f"no answer within {timeout:g} s")
    except aiohttp.ClientConnectorError as exc:
        refused = isinstance(exc.os_error, ConnectionRefusedError)
        why = exc.os_error.strerror or str(exc.os_error) or type(exc.os_error).__name__
        return Outcome(
            Verdict.RETRY,
            "connection refused" if refused else "connection error",
            f"cannot connect to {exc.host}:{exc.port}: {why}",
        )
    except (aiohttp.ClientError, OSError) as exc:
        return Outcome(Verdict.RETRY, "connection error", f"{type(exc).__name__}: {exc}")
    verdict = classify_status(status)
    detail = f"{status} {reason}".strip()
    if retry_after is not None and verdict is Verdict.RETRY:
        detail += f" (Retry-After {retry_after:g} s)"
    return Outcome(verdict, f"HTTP {status}", detail, status, body.strip(), retry_after)


def _where(msg: ConsumerRecord) -> str:
    return f"{msg.topic}[{msg.partition}]@{msg.offset}"


class _Rebalance(ConsumerRebalanceListener):
    """Abandons (uncommitted) the deliveries of partitions the group takes away."""

    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self.bridge._abandon(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        parts = ", ".join(str(tp.partition) for tp in sorted(assigned, key=lambda tp: tp.partition))
        log.info("assigned partitions [%s] of %s", parts, self.bridge.topic)


class Bridge:
    """One bridge: the alert topic of ``config`` to ``target``, in group ``settings.group_id``.

    ``await Bridge(...).run(stop)`` runs until ``stop`` is set (or, with
    ``handle_signals``, SIGINT/SIGTERM) and returns what it did.
    """

    def __init__(
        self,
        config: Config,
        target: Target,
        settings: BridgeSettings,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.config = config
        self.target = target
        self.settings = settings
        self.topic = config.topics.alerts
        self.dead_topic = config.topics.dead_letter
        self.stats = BridgeStats()
        self._rng = rng
        self._stop = asyncio.Event()
        self._workers: dict[TopicPartition, asyncio.Task[None]] = {}
        self._inflight: dict[TopicPartition, ConsumerRecord] = {}
        self._crash: BaseException | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- life cycle -------------------------------------------------------

    async def run(
        self, stop: asyncio.Event | None = None, *, handle_signals: bool = True
    ) -> BridgeStats:
        """Deliver alerts until stopped; :class:`KafkaSetupError` if Kafka is not usable."""
        await self._start()
        relay = None
        try:
            with StopOnSignals(handle_signals) as signals:
                relay = asyncio.create_task(self._relay([signals.event, stop]))
                await self._loop()
        finally:
            if relay is not None:
                relay.cancel()
            await self._shutdown()
        return self.stats

    async def _relay(self, events: list[asyncio.Event | None]) -> None:
        waits = [asyncio.create_task(e.wait()) for e in events if e is not None]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            self._stop.set()
        finally:
            for w in waits:
                w.cancel()

    async def _start(self) -> None:
        servers = bootstrap_servers(self.config.broker)
        security = self.config.security
        counts = await topic_partitions(
            self.config.broker, [self.topic, self.dead_topic], security=security
        )
        missing = [t for t in (self.topic, self.dead_topic) if t not in counts]
        if missing:
            raise KafkaSetupError(
                f"topic(s) {', '.join(missing)} do not exist at {servers}; run `driftline topics"
                " create` (or check topics.alerts / topics.dead_letter in the config)"
            )
        client_id = self.settings.group_id
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=servers,
            group_id=self.settings.group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset=self.settings.start_at,
            **aiokafka_auth(security),
        )
        self._producer = AIOKafkaProducer(
            bootstrap_servers=servers,
            client_id=client_id,
            acks="all",
            enable_idempotence=True,
            **aiokafka_auth(security),
        )
        for client in (self._consumer, self._producer):
            try:
                await start_client(client, security, servers, CONNECT_TIMEOUT)
            except KafkaSetupError:
                await self._shutdown()
                raise
        self._consumer.subscribe([self.topic], listener=_Rebalance(self))
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": f"driftline/{_version()} (+bridge {self.target.name})"},
            trust_env=True,  # HTTPS_PROXY / NO_PROXY, as curl does
        )
        log.info(
            "bridge %s: %s (%d partitions) at %s, group %s -> %s",
            self.target.name,
            self.topic,
            counts[self.topic],
            servers,
            self.settings.group_id,
            self.target.display_url,
        )

    async def _loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        while not self._stop.is_set():
            if self._crash is not None:
                raise self._crash
            batches = await consumer.getmany(
                timeout_ms=self.settings.poll_ms, max_records=self.settings.max_batch
            )
            assigned = consumer.assignment()
            for tp, messages in batches.items():
                if not messages or tp not in assigned:
                    continue  # revoked meanwhile: its new owner reads from the committed offset
                if tp in self._workers:
                    # Cannot happen while the partition is paused; if it does, fetch these
                    # again after the running batch instead of skipping them.
                    consumer.seek(tp, messages[0].offset)
                    continue
                consumer.pause(tp)
                task = asyncio.create_task(self._drain(tp, messages), name=f"bridge {tp}")
                task.add_done_callback(self._on_worker_done)
                self._workers[tp] = task

    def _on_worker_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None and self._crash is None:
            self._crash = task.exception()

    async def _abandon(self, partitions: set[TopicPartition]) -> None:
        """Cancel the deliveries of ``partitions`` without committing what is in flight."""
        tasks = [self._workers.pop(tp) for tp in partitions if tp in self._workers]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for tp in partitions:
            msg = self._inflight.pop(tp, None)
            if msg is not None:
                self.stats.abandoned += 1
                log.info(
                    "gave up %s (%s) in flight: not committed, it will be delivered again",
                    _where(msg),
                    self.target.redact(_key(msg)),
                )

    async def _shutdown(self) -> None:
        self._stop.set()
        if self._workers:
            tasks = list(self._workers.values())
            _done, pending = await asyncio.wait(tasks, timeout=self.settings.stop_grace)
            await self._abandon({tp for tp, t in self._workers.items() if t in pending})
            await self._abandon(set(self._inflight))
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consumer.stop(), CONNECT_TIMEOUT)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), CONNECT_TIMEOUT)
        if self._session is None:
            return  # never started: nothing to report
        await self._session.close()
        s = self.stats
        log.info(
            "bridge %s stopped: %d delivered, %d retries, %d dead letters (%d malformed),"
            " %d abandoned in flight",
            self.target.name,
            s.delivered,
            s.retries,
            s.dead_letters,
            s.malformed,
            s.abandoned,
        )

    # -- one partition ----------------------------------------------------

    async def _drain(self, tp: TopicPartition, messages: list[ConsumerRecord]) -> None:
        """Deliver one fetched batch of a partition in order, committing after each alert."""
        consumer = self._consumer
        assert consumer is not None
        finished = False
        try:
            for msg in messages:
                if self._stop.is_set():
                    return
                self._inflight[tp] = msg
                if not await self._settle(msg):
                    return  # stopped while waiting to retry: leave it uncommitted
                await self._commit(tp, msg)
                self._inflight.pop(tp, None)
            finished = True
        finally:
            if self._workers.get(tp) is asyncio.current_task():
                del self._workers[tp]
            if finished and tp in consumer.assignment():
                consumer.resume(tp)

    async def _commit(self, tp: TopicPartition, msg: ConsumerRecord) -> None:
        assert self._consumer is not None
        try:
            await self._consumer.commit({tp: msg.offset + 1})
        except KafkaError as exc:
            # The next commit on this partition covers this offset too; until then a
            # restart would deliver it again, which at-least-once allows.
            log.warning("could not commit %s: %s", _where(msg), exc)

    async def _wait(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless stopped first; True if stopped."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def _settle(self, msg: ConsumerRecord) -> bool:
        """Deliver ``msg`` or dead-letter it; False if stopped first."""
        try:
            alert = parse_alert(msg.value)
            request = self.target.request(alert, msg.value or b"")
        except AlertError as exc:
            self.stats.malformed += 1
            log.error(
                "%s is not a deliverable alert: %s", _where(msg), self.target.redact(str(exc))
            )
            return await self._dead_letter(msg, exc)
        except Exception as exc:  # a payload-building bug must not stop every later alert
            self.stats.malformed += 1
            log.exception("%s: cannot build the %s request", _where(msg), self.target.name)
            reason = f"cannot build the {self.target.name} request: {type(exc).__name__}: {exc}"
            return await self._dead_letter(msg, AlertError(self.target.redact(reason)))

        label = self.target.redact(f"{alert['dedup_key']} ({alert['status']})")
        assert self._session is not None
        attempt = 0
        while True:
            attempt += 1
            outcome = await post(self._session, request, self.settings.retry.timeout)
            detail = self.target.redact(outcome.detail)
            if outcome.verdict is Verdict.DELIVERED:
                self.stats.delivered += 1
                log.info(
                    "delivered %s to %s: %s, attempt %d [%s]",
                    label,
                    self.target.name,
                    detail,
                    attempt,
                    _where(msg),
                )
                return True
            if outcome.verdict is Verdict.REFUSED:
                body = self.target.redact(outcome.body)
                reason = f"{self.target.name} refused it: HTTP {detail}" + (
                    f": {body}" if body else ""
                )
                log.error("refused %s, attempt %d [%s]: %s", label, attempt, _where(msg), reason)
                return await self._dead_letter(msg, DeliveryRefused(reason), outcome.status)
            delay = self.settings.retry.delay(attempt, outcome.retry_after, self._rng)
            self.stats.retries += 1
            self.stats.retry_reasons[outcome.kind] += 1
            log.warning(
                "retrying %s to %s: %s, attempt %d; next attempt in %.2f s [%s]",
                label,
                self.target.name,
                detail,
                attempt,
                delay,
                _where(msg),
            )
            if await self._wait(delay):
                return False

    async def _dead_letter(
        self, msg: ConsumerRecord, error: Exception, status: int | None = None
    ) -> bool:
        """Write ``msg`` (its bytes untouched) to the dead-letter topic; False if stopped first.

        Kafka trouble here is retried like an endpoint's: the offset must not
        be committed before the dead letter is safely written.
        """
        dl = dead_letter(
            value=msg.value,
            key=msg.key,
            topic=msg.topic,
            partition=msg.partition,
            offset=msg.offset,
            errors=[error],
            stage=f"bridge-{self.target.name.lower()}",
        )
        if status is not None:
            dl.headers.append(("driftline-http-status", str(status).encode()))
        assert self._producer is not None
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._producer.send_and_wait(
                    self.dead_topic, value=dl.value, key=dl.key, headers=dl.headers
                )
            except KafkaError as exc:
                delay = self.settings.retry.delay(attempt, None, self._rng)
                log.warning(
                    "cannot write the dead letter for %s to %s (%s); next attempt in %.2f s",
                    _where(msg),
                    self.dead_topic,
                    exc,
                    delay,
                )
                if await self._wait(delay):
                    return False
                continue
            self.stats.dead_letters += 1
            log.info("dead-lettered %s to %s: %s", _where(msg), self.dead_topic, dl.reasons()[0])
            return True


def _key(msg: ConsumerRecord) -> str:
    return msg.key.decode("utf-8", "replace") if msg.key else "no key"


def _version() -> str:
    try:
        return metadata.version("driftline")
    except metadata.PackageNotFoundError:
        return "dev"

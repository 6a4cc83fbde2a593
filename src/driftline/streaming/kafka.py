"""Talking to Kafka before the worker starts: reachability, topics, co-partitioning.

Faust retries an unreachable broker forever and happily joins topics of
different partition counts; both leave a user staring at a silent worker.
These checks fail fast with a message that says what to do.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from driftline.core.config import Config


class KafkaSetupError(RuntimeError):
    """The broker or the topics are not as the worker needs them."""


def bootstrap_servers(broker: str) -> str:
    """``kafka://h1:9092;kafka://h2:9092`` or ``h1:9092,h2:9092`` -> ``h1:9092,h2:9092``.

    >>> bootstrap_servers("kafka://127.0.0.1:9092")
    '127.0.0.1:9092'
    >>> bootstrap_servers("kafka://a:1;kafka://b:2")
    'a:1,b:2'
    """
    hosts = []
    for part in broker.replace(";", ",").split(","):
        part = part.strip()
        if "://" in part:
            part = part.split("://", 1)[1]
        if part:
            hosts.append(part)
    if not hosts:
        raise KafkaSetupError(f"no broker address in {broker!r}")
    return ",".join(hosts)


@dataclass(frozen=True)
class TopicPlan:
    name: str
    partitions: int
    compacted: bool = False


def planned_topics(config: Config) -> list[TopicPlan]:
    """The topics driftline uses, with the partition counts it wants."""
    t = config.topics
    return [
        TopicPlan(t.predictions, t.partitions),
        TopicPlan(t.outcomes, t.partitions),
        TopicPlan(config.model_events_topic, t.partitions),
        TopicPlan(t.alerts, t.partitions),
        TopicPlan(t.dead_letter, t.partitions),
    ]


async def _admin(config: Config, timeout: float) -> AIOKafkaAdminClient:
    servers = bootstrap_servers(config.broker)
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
    except (TimeoutError, KafkaError, OSError) as exc:
        await admin.close()
        raise KafkaSetupError(
            f"cannot reach Kafka at {servers} ({type(exc).__name__}: {exc or 'timed out'});"
            " check --broker / DRIFTLINE_BROKER and that the broker is up"
            " (scripts/kafka-local start runs one locally)"
        ) from None
    return admin


async def partition_counts(
    config: Config, names: list[str], timeout: float = 10.0
) -> dict[str, int]:
    """Partition count of each existing topic among ``names`` (missing ones are absent).

    Only topics that exist are described: a metadata request that names a
    missing topic makes a broker with ``auto.create.topics.enable`` (the
    default) create it, with the broker's default partition count.
    """
    admin = await _admin(config, timeout)
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in names if n in existing]
        described = await admin.describe_topics(wanted) if wanted else []
    finally:
        await admin.close()
    out = {}
    for t in described:
        if t.get("error_code", 0) == 0 and t.get("partitions"):
            out[t["topic"]] = len(t["partitions"])
    return out


async def create_topics(
    config: Config, replication_factor: int = 1, timeout: float = 10.0
) -> dict[str, str]:
    """Create driftline's topics; return what happened to each."""
    admin = await _admin(config, timeout)
    result: dict[str, str] = {}
    try:
        existing = set(await admin.list_topics())
        for plan in planned_topics(config):
            if plan.name in existing or plan.name in result:
                result[plan.name] = "exists"
                continue
            try:
                await admin.create_topics(
                    [NewTopic(plan.name, plan.partitions, replication_factor)]
                )
                result[plan.name] = f"created with {plan.partitions} partitions"
            except TopicAlreadyExistsError:
                result[plan.name] = "exists"
    finally:
        await admin.close()
    return result


async def preflight(config: Config, timeout: float = 10.0) -> dict[str, int]:
    """Fail fast unless the broker answers and the input topics are co-partitioned.

    The join relies on a request's prediction and outcome landing on the
    same partition number, which holds only when both topics have the same
    partition count and producers key both by request id. The join table's
    changelog has ``topics.partitions`` partitions, so the inputs may not
    have more. Then makes sure the internal model-event topic exists (see
    :func:`ensure_internal_topic`).
    """
    t = config.topics
    counts = await partition_counts(config, [t.predictions, t.outcomes], timeout)
    missing = [n for n in (t.predictions, t.outcomes) if n not in counts]
    if missing:
        raise KafkaSetupError(
            f"topic(s) {', '.join(missing)} do not exist; run `driftline topics create`"
            " (or create them with the same partition count)"
        )
    if counts[t.predictions] != counts[t.outcomes]:
        raise KafkaSetupError(
            f"topics {t.predictions} ({counts[t.predictions]} partitions) and {t.outcomes}"
            f" ({counts[t.outcomes]} partitions) are not co-partitioned: outcomes could never"
            " meet their predictions. Give both the same partition count and key both by"
            " request id."
        )
    if counts[t.predictions] > t.partitions:
        raise KafkaSetupError(
            f"topics {t.predictions} and {t.outcomes} have {counts[t.predictions]} partitions,"
            f" more than topics.partitions = {t.partitions}, the partition count of the join"
            " table's changelog: the requests of the extra partitions could not be stored."
            f" Set topics.partitions (DRIFTLINE_TOPICS__PARTITIONS) to {counts[t.predictions]}."
        )
    await ensure_internal_topic(config, timeout=timeout)
    return counts


async def ensure_internal_topic(
    config: Config, replication_factor: int = 1, timeout: float = 10.0
) -> None:
    """Create the internal model-event topic unless it exists; wait for its leaders.

    Faust declares it too, but only just before its consumer subscribes: when
    the broker's metadata does not list the new topic yet, the group leader
    ignores it ("Ignoring missing topic") and the monitor agent gets no
    partition until the next metadata refresh, minutes later.
    """
    name = config.model_events_topic
    admin = await _admin(config, timeout)
    try:
        if name not in set(await admin.list_topics()):
            response = await admin.create_topics(
                [NewTopic(name, config.topics.partitions, replication_factor)]
            )
            for entry in response.topic_errors:
                if entry[1] not in (0, TopicAlreadyExistsError.errno):
                    raise KafkaSetupError(f"cannot create topic {name}: {entry}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            described = await admin.describe_topics([name])
            parts = [p for t in described if t.get("error_code") == 0 for p in t["partitions"]]
            if parts and all(p.get("leader", -1) >= 0 for p in parts):
                return
            if loop.time() > deadline:
                raise KafkaSetupError(f"topic {name} has no leader for every partition")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()

"""The bench building blocks against the real broker: what is produced is exactly what is read.

A baseline that miscounts (records inside a batch, a message read twice, one
left behind) would make every ratio ``driftline bench`` prints meaningless, and
a pre-produced batch whose outcomes land in another partition number would
make the join look broken. Small volumes: this checks counts, not speed.
"""

import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer

from driftline.bench.baselines import bare_faust_rate, bare_faust_rate_async, raw_aiokafka_rate
from driftline.bench.produce import preproduce

pytestmark = pytest.mark.kafka

PAIRS = 200
PARTITIONS = 2


async def _read_all(bootstrap: str, topic: str, expected: int) -> list:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"test-bench-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    messages = []
    try:
        while len(messages) < expected:
            batches = await consumer.getmany(timeout_ms=10_000)
            assert batches, f"only {len(messages)} of {expected} messages in {topic}"
            messages.extend(m for batch in batches.values() for m in batch)
    finally:
        await consumer.stop()
    return messages


def _partition_of_request_ids(messages: list) -> dict[str, int]:
    where: dict[str, int] = {}
    for message in messages:
        value = orjson.loads(message.value)
        for record in value if isinstance(value, list) else [value]:
            assert record["request_id"] not in where, "request id produced twice"
            where[record["request_id"]] = message.partition
    return where


@pytest.mark.parametrize("batch", [1, 100])
async def test_preproduce_and_baselines_count_exactly(kafka_bootstrap, topic_factory, batch):
    predictions = await topic_factory(PARTITIONS, prefix=f"bench-pred-b{batch}")
    outcomes = await topic_factory(PARTITIONS, prefix=f"bench-out-b{batch}")
    stats = await preproduce(
        kafka_bootstrap,
        predictions,
        outcomes,
        pairs=PAIRS,
        models=3,
        features=4,
        batch=batch,
        seed=7,
    )
    per_topic = PAIRS // batch
    assert (stats.prediction_messages, stats.outcome_messages) == (per_topic, per_topic)
    assert stats.records == 2 * PAIRS

    # The wire format, and co-partitioning of every record with its outcome,
    # including the records of a batch whose own ids hash elsewhere.
    prediction_messages = await _read_all(kafka_bootstrap, predictions, per_topic)
    outcome_messages = await _read_all(kafka_bootstrap, outcomes, per_topic)
    first = orjson.loads(prediction_messages[0].value)
    record = first[0] if batch > 1 else first
    assert set(record) == {
        "request_id", "model_id", "model_version", "timestamp", "prediction", "score", "features",
    }  # fmt: skip
    assert set(record["features"]) == {"f0", "f1", "f2", "f3"}
    assert prediction_messages[0].key == record["request_id"].encode()
    prediction_partition = _partition_of_request_ids(prediction_messages)
    outcome_partition = _partition_of_request_ids(outcome_messages)
    assert len(prediction_partition) == PAIRS
    assert prediction_partition == outcome_partition

    topics = [predictions, outcomes]
    raw = await raw_aiokafka_rate(kafka_bootstrap, topics, stats.messages, timeout=30)
    assert (raw.messages, raw.records, raw.errors) == (stats.messages, stats.records, 0)

    # The blocking API in one mode, the coroutine in the other: same child process.
    if batch == 1:
        faust = bare_faust_rate(kafka_bootstrap, topics, stats.messages, timeout=60)
    else:
        faust = await bare_faust_rate_async(kafka_bootstrap, topics, stats.messages, timeout=60)
    assert (faust.messages, faust.records, faust.errors) == (stats.messages, stats.records, 0)
    assert faust.seconds >= 0 and faust.cpu_seconds >= 0
    assert faust.shutdown_seconds is not None  # the child stopped cleanly after reporting

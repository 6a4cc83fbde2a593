"""Real round trip through the local broker (scripts/kafka-local): topic, produce, consume."""

import asyncio
import hashlib
import uuid
from collections import Counter

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

pytestmark = pytest.mark.kafka

N_MESSAGES = 100
N_PARTITIONS = 3


def _message(i: int) -> tuple[bytes, bytes]:
    key = f"model-{i % 7}".encode()
    # Binary payload (all byte values, NULs included) so "exact bytes" means something.
    value = i.to_bytes(4, "big") + hashlib.sha256(key + i.to_bytes(4, "big")).digest() + b"\x00\xff"
    return key, value


async def test_produce_consume_round_trip(kafka_bootstrap, topic_factory):
    topic = await topic_factory(N_PARTITIONS)
    sent = [_message(i) for i in range(N_MESSAGES)]

    producer = AIOKafkaProducer(
        bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True, linger_ms=5
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value=value, key=key) for key, value in sent]
        records = await asyncio.gather(*futures)
    finally:
        await producer.stop()
    produced_at = {(r.partition, r.offset): msg for r, msg in zip(records, sent, strict=True)}
    assert len(produced_at) == N_MESSAGES

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"test-round-trip-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    received = []
    try:
        assert consumer.partitions_for_topic(topic) == set(range(N_PARTITIONS))
        deadline = asyncio.get_running_loop().time() + 60
        while len(received) < N_MESSAGES and asyncio.get_running_loop().time() < deadline:
            batches = await consumer.getmany(timeout_ms=1000)
            for batch in batches.values():
                received.extend(batch)
        # Nothing beyond the 100 messages may show up.
        extra = await consumer.getmany(timeout_ms=1000)
        received.extend(m for batch in extra.values() for m in batch)
        await consumer.commit()
    finally:
        await consumer.stop()

    assert len(received) == N_MESSAGES
    assert Counter((m.key, m.value) for m in received) == Counter(sent)
    # Each record is exactly what the producer was acknowledged for, at that position.
    for m in received:
        assert produced_at[(m.partition, m.offset)] == (m.key, m.value)
    # Keyed partitioning: a key always lands on one partition; 7 keys use more than one.
    partitions_by_key: dict[bytes, set[int]] = {}
    for m in received:
        partitions_by_key.setdefault(m.key, set()).add(m.partition)
    assert all(len(parts) == 1 for parts in partitions_by_key.values())
    assert len({m.partition for m in received}) > 1
    # Per partition: offsets 0..n-1 in order.
    for partition in range(N_PARTITIONS):
        offsets = [m.offset for m in received if m.partition == partition]
        assert offsets == list(range(len(offsets)))

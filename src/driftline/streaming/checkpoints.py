"""Monitor checkpoints on a compacted Kafka topic.

The monitor agent writes one record per model (key: the model id, on the
partition of the model-events topic the model's events use) with the
model's monitors and the input they cover (:mod:`driftline.core.checkpoint`).
The topic is compacted, so it keeps the latest checkpoint of every model.
A worker that is assigned a model-events partition it did not have (at
start-up after a crash, or after a rebalance) reads that partition of the
checkpoint topic from the beginning and resumes each model from its record.

Reading uses a consumer of its own with no group: it must see the whole
partition, and must not disturb the worker's group.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

log = logging.getLogger("driftline.worker")


async def read_checkpoints(
    topic: str,
    partitions: set[int],
    *,
    bootstrap_servers: str,
    timeout: float = 60.0,
    **client_options: Any,
) -> dict[bytes, tuple[int, bytes]]:
    """The latest record of each key in ``partitions`` of ``topic``: key -> (partition, value).

    A key whose latest record is a tombstone is left out. Raises
    ``TimeoutError`` if the partitions cannot be read to their end within
    ``timeout`` seconds.
    """
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers,
        enable_auto_commit=False,
        group_id=None,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=1 << 20,
        fetch_max_bytes=64 << 20,
        **client_options,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        latest: dict[bytes, tuple[int, bytes | None]] = {}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        todo = {tp for tp in tps if ends[tp] > 0}
        while todo:
            if loop.time() > deadline:
                raise TimeoutError(f"reading checkpoints of {topic} took over {timeout:.0f} s")
            batches = await consumer.getmany(*todo, timeout_ms=500)
            for tp, records in batches.items():
                for r in records:
                    if r.key is not None:
                        latest[r.key] = (tp.partition, r.value)
            for tp in list(todo):
                if await consumer.position(tp) >= ends[tp]:
                    todo.discard(tp)
        return {k: (p, v) for k, (p, v) in latest.items() if v is not None}
    finally:
        await consumer.stop()

"""Pre-produce synthetic predictions and outcomes for ``driftline bench``.

Throughput is measured on messages that are already in the topics, so that
the producer's speed never limits (or flatters) the consumer being measured.
Each pair is one prediction and one outcome with the same ``request_id``, in
the wire format of ``schemas/prediction.v1.json`` and ``outcome.v1.json``.

Two shapes, because they cost a consumer very differently:

- ``batch == 1``: one record per Kafka message, keyed by its request id;
  per-message overhead (fetch, Faust event, commit bookkeeping) dominates.
- ``batch > 1``: ``batch`` records per message as a JSON array, the cheapest
  way a real producer moves volume; per-record work dominates.

Co-partitioning matters in both: the join relies on a prediction and its
outcome landing in the same partition number of their topics. A batched
message is keyed by its *first* request id, and the outcome batch holding
the same request ids uses that same key, so the whole batch (whatever its
other ids would hash to) stays co-partitioned with its outcomes.

The payload is stationary and calibrated (the outcome is drawn from the
score), so a bench run measures steady-state cost and does not page.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from driftline.bench import per_second
from driftline.core.config import SecurityConfig
from driftline.streaming.kafka import aiokafka_auth

__all__ = ["PairFactory", "ProduceStats", "encode_pairs", "preproduce"]

PENDING_FUTURES = 20_000
"""Await delivery once this many sends are outstanding: enough to keep every
partition's batch full while the broker writes the previous one, few enough
that a broker error surfaces promptly instead of after the whole run."""

PRODUCER_OPTIONS: dict[str, Any] = {
    # acks=1: the bench measures consumers; waiting for the ISR on a single
    # node broker buys nothing.
    "acks": 1,
    # Lingering lets a partition's batch fill up while Python is busy
    # encoding the next chunk; 512 KiB batches cut requests ~30x against the
    # 16 KiB default, which is what makes pre-producing 100k+ messages fast.
    "linger_ms": 20,
    "max_batch_size": 512 * 1024,
    # The broker's default message.max.bytes is ~1 MiB; a single batched
    # message must stay below it (about 100 records of ~1500 features).
    "max_request_size": 1024 * 1024,
}


@dataclass(frozen=True, slots=True)
class ProduceStats:
    """What :func:`preproduce` wrote, and how fast."""

    pairs: int
    prediction_messages: int
    outcome_messages: int
    bytes: int
    seconds: float

    @property
    def messages(self) -> int:
        """Kafka messages over both topics (what a consumer's poll loop iterates)."""
        return self.prediction_messages + self.outcome_messages

    @property
    def records(self) -> int:
        """Predictions plus outcomes (what the join processes)."""
        return 2 * self.pairs

    @property
    def messages_per_second(self) -> float:
        return per_second(self.messages, self.seconds)

    @property
    def records_per_second(self) -> float:
        return per_second(self.records, self.seconds)


class PairFactory:
    """Deterministic synthetic (prediction, outcome) records.

    Pair ``i`` always has request id ``f"{id_prefix}{i:09d}"`` and model
    ``model-{i % models}``; given the seed and the call order, the values are
    reproducible. Kept separate from :func:`preproduce` so a paced producer
    (latency at a fixed offered load) emits exactly the same shape.
    """

    def __init__(
        self, *, models: int, features: int, seed: int = 0, id_prefix: str | None = None
    ) -> None:
        if models < 1:
            raise ValueError(f"models must be >= 1, got {models}")
        if features < 0:
            raise ValueError(f"features must be >= 0, got {features}")
        self.models = models
        self.features = features
        self.id_prefix = f"r{seed}-" if id_prefix is None else id_prefix
        self._rng = random.Random(seed)
        self._model_ids = [f"model-{m}" for m in range(models)]
        self._feature_names = [f"f{j}" for j in range(features)]

    def request_id(self, i: int) -> str:
        return f"{self.id_prefix}{i:09d}"

    def pair(self, i: int, timestamp: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """Prediction and outcome of pair ``i``, both stamped ``timestamp`` (epoch seconds)."""
        rng = self._rng
        request_id = self.request_id(i)
        score = rng.random()
        prediction = {
            "request_id": request_id,
            "model_id": self._model_ids[i % self.models],
            "model_version": "v1",
            "timestamp": timestamp,
            "prediction": int(score >= 0.5),
            "score": score,
            "features": {name: rng.random() for name in self._feature_names},
        }
        outcome = {
            "request_id": request_id,
            # Calibrated: P(outcome = 1) = score, so accuracy stays put.
            "outcome": int(rng.random() < score),
            "timestamp": timestamp,
        }
        return prediction, outcome


def encode_pairs(
    factory: PairFactory, start: int, count: int, batch: int, timestamp: float
) -> list[tuple[bytes, bytes, bytes]]:
    """Encode pairs ``start .. start+count-1`` as ``(key, prediction_value, outcome_value)``.

    With ``batch > 1`` each tuple carries up to ``batch`` records per value as
    a JSON array (the last one may be shorter), keyed by the first request id
    for *both* topics so the batch stays co-partitioned with its outcomes.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    messages: list[tuple[bytes, bytes, bytes]] = []
    dumps = orjson.dumps
    if batch == 1:
        for i in range(start, start + count):
            prediction, outcome = factory.pair(i, timestamp)
            messages.append((prediction["request_id"].encode(), dumps(prediction), dumps(outcome)))
        return messages
    end = start + count
    for first in range(start, end, batch):
        pairs = [factory.pair(i, timestamp) for i in range(first, min(first + batch, end))]
        key = pairs[0][0]["request_id"].encode()
        messages.append((key, dumps([p for p, _ in pairs]), dumps([o for _, o in pairs])))
    return messages


async def preproduce(
    bootstrap: str,
    predictions_topic: str,
    outcomes_topic: str,
    *,
    pairs: int,
    models: int,
    features: int,
    batch: int,
    seed: int = 0,
    id_prefix: str | None = None,
    security: SecurityConfig | None = None,
) -> ProduceStats:
    """Write ``pairs`` predictions and their outcomes; return counts and produce rate.

    Predictions of a chunk are sent before its outcomes, so a consumer that
    reads both topics in parallel mostly sees the prediction first, as in
    production; the join must cope with either order anyway.

    The topics must exist with the same partition count (checked: otherwise
    the pairs would not be co-partitioned and the join could never match).
    """
    if pairs < 0:
        raise ValueError(f"pairs must be >= 0, got {pairs}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    factory = PairFactory(models=models, features=features, seed=seed, id_prefix=id_prefix)
    # Chunks are whole batches, so only the run's very last message is short.
    chunk = max(batch, (5_000 // batch) * batch)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        **PRODUCER_OPTIONS,
        **aiokafka_auth(security or SecurityConfig()),
    )
    await producer.start()
    try:
        p_parts = await producer.partitions_for(predictions_topic)
        o_parts = await producer.partitions_for(outcomes_topic)
        if len(p_parts) != len(o_parts):
            raise ValueError(
                f"{predictions_topic!r} has {len(p_parts)} partitions but {outcomes_topic!r} "
                f"has {len(o_parts)}: predictions and outcomes must be co-partitioned"
            )
        n_pred = n_out = n_bytes = 0
        pending: list[asyncio.Future[Any]] = []
        started = time.perf_counter()
        for start in range(0, pairs, chunk):
            encoded = encode_pairs(factory, start, min(chunk, pairs - start), batch, time.time())
            for key, value, _ in encoded:
                pending.append(await producer.send(predictions_topic, value=value, key=key))
                n_bytes += len(value)
            for key, _, value in encoded:
                pending.append(await producer.send(outcomes_topic, value=value, key=key))
                n_bytes += len(value)
            n_pred += len(encoded)
            n_out += len(encoded)
            if len(pending) >= PENDING_FUTURES:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
        seconds = time.perf_counter() - started
    finally:
        await producer.stop()
    return ProduceStats(
        pairs=pairs,
        prediction_messages=n_pred,
        outcome_messages=n_out,
        bytes=n_bytes,
        seconds=seconds,
    )

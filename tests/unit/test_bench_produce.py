"""Bench payloads: wire format, determinism, and batches that stay co-partitioned."""

import orjson
import pytest

from driftline.bench.produce import PairFactory, encode_pairs


def test_single_record_messages_are_keyed_by_request_id():
    messages = encode_pairs(PairFactory(models=2, features=3, seed=1), 10, 3, 1, 123.5)
    assert len(messages) == 3
    for key, prediction, outcome in messages:
        p, o = orjson.loads(prediction), orjson.loads(outcome)
        assert key == p["request_id"].encode() == o["request_id"].encode()
        assert p["timestamp"] == o["timestamp"] == 123.5
        assert set(p["features"]) == {"f0", "f1", "f2"}
        assert 0 <= p["score"] <= 1 and p["prediction"] in (0, 1) and o["outcome"] in (0, 1)
    assert [orjson.loads(p)["model_id"] for _, p, _ in messages] == [
        "model-0",
        "model-1",
        "model-0",
    ]


def test_partial_last_batch_keeps_every_record_under_the_first_id():
    messages = encode_pairs(PairFactory(models=2, features=1, seed=1), 0, 250, 100, 0.0)
    assert [len(orjson.loads(p)) for _, p, _ in messages] == [100, 100, 50]
    seen = []
    for key, prediction, outcome in messages:
        ids = [r["request_id"] for r in orjson.loads(prediction)]
        assert ids == [r["request_id"] for r in orjson.loads(outcome)]
        assert key == ids[0].encode()  # one key for both topics: co-partitioned
        seen.extend(ids)
    assert len(set(seen)) == 250


def test_same_seed_same_payload():
    def make():
        return encode_pairs(PairFactory(models=3, features=5, seed=42), 0, 20, 4, 1.0)

    assert make() == make()
    other = encode_pairs(PairFactory(models=3, features=5, seed=43), 0, 20, 4, 1.0)
    assert other != make()


@pytest.mark.parametrize("kwargs", [{"models": 0, "features": 1}, {"models": 1, "features": -1}])
def test_factory_rejects_nonsense(kwargs):
    with pytest.raises(ValueError):
        PairFactory(**kwargs)


def test_batch_must_be_positive():
    with pytest.raises(ValueError):
        encode_pairs(PairFactory(models=1, features=0), 0, 1, 0, 0.0)

"""The join's expiry index with a bounded memory: the tail changes what is held where, never
which events come out, nor their order."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.core.events import Expired, Outcome, Prediction
from driftline.core.indextail import MemoryTail
from driftline.core.join import JoinBuffer
from join_traffic import play, traffic


def P(rid, t):
    return Prediction(rid, "m", True, float(t))


def O(rid, t):  # noqa: E743
    return Outcome(rid, True, float(t))


def test_memory_tail_takes_back_in_order_per_partition():
    tail = MemoryTail()
    tail.put(0, [(5.0, "e"), (1.0, "a"), (5.0, "b")])
    tail.put(1, [(0.0, "z")])
    assert tail.take(0, 2) == [(1.0, "a"), (5.0, "b")]
    assert (tail.count(0), tail.count(1)) == (1, 1)
    tail.drop(1)
    assert tail.take(1, 5) == [] and tail.take(0, 5) == [(5.0, "e")]


def bounded(ttl=20.0, **kw):
    """A buffer whose index keeps at most 8 items per partition in memory (chunks of 2)."""
    return JoinBuffer(ttl, index_tail=MemoryTail(), index_memory=8, tail_chunk=2, **kw)


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32), st.booleans(), st.sampled_from([20.0, 45.0, 200.0]))
def test_a_bounded_index_gives_the_same_events_in_the_same_order(seed, sync, ttl):
    records = traffic(seed)
    expected = play(JoinBuffer(ttl, sync_sides=sync), records)
    assert play(bounded(ttl, sync_sides=sync), records) == expected


def test_a_million_style_backlog_keeps_memory_bounded_and_expires_in_order():
    j = bounded(ttl=50.0)
    rng = random.Random(7)
    # Mostly in order, some out of order (a heap), over two partitions.
    for i in range(3000):
        j.partition = i % 2
        j.add_prediction(P(f"r{i}", i / 10 + (rng.random() * 30 if i % 7 == 0 else 0)))
        memory, _ = j.index_size()
        assert memory <= 2 * (8 + 2), (i, memory)  # per partition: the bound and one chunk
    assert j.index_size()[1] > 500 and sum(j.index_size()) >= len(j.store)  # all indexed
    j.expiry_log = []
    evs = j.advance(1e9)
    expired = [e for e in evs if isinstance(e, Expired)]
    per_partition = {}
    for deadline, rid, part in j.expiry_log:
        per_partition.setdefault(part, []).append((deadline, rid))
    assert all(keys == sorted(keys) for keys in per_partition.values())
    assert len(expired) == len(j.expiry_log)
    assert j.pending() == 0
    assert j.index_size() == (0, 0)


def test_a_rebuilt_index_spills_too_and_expires_everything_restored():
    j = JoinBuffer(1000.0)  # nothing expires while they come
    for i in range(500):
        j.partition = i % 3
        j.add_prediction(P(f"r{i}", i))
    restored = bounded(ttl=1000.0, store=dict(j.store))
    memory, tail = restored.index_size()
    assert memory <= 3 * (8 + 2) and memory + tail == 500
    for part in range(3):
        restored.resume(part, 0.0)
    evs = restored.advance(1e9)
    assert sorted(e.prediction.request_id for e in evs) == sorted(f"r{i}" for i in range(500))


def test_forgetting_a_partition_drops_its_tail():
    j = bounded(ttl=1000.0)
    for i in range(40):
        j.partition = i % 2
        j.add_prediction(P(f"r{i}", i))
    j.forget_partitions({1})
    assert j._tail.count(1) == 0 and j._tail.count(0) > 0
    evs = j.advance(1e9)
    assert {e.prediction.request_id for e in evs} == {f"r{i}" for i in range(0, 40, 2)}

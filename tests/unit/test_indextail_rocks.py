"""The worker's on-disk expiry-index tail behaves as the core's in-memory reference."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.core.indextail import MemoryTail
from driftline.core.join import JoinBuffer
from driftline.streaming.indextail import RocksTail, from_key, sort_key
from join_traffic import play, traffic


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 2**31 - 2),
    st.floats(allow_nan=False),
    st.text(max_size=8),
    st.floats(allow_nan=False),
    st.text(max_size=8),
)
def test_keys_sort_as_partition_deadline_id(partition, d1, r1, d2, r2):
    a, b = (d1, r1), (d2, r2)
    if a == b or (d1 == d2 == 0.0):  # 0.0 and -0.0 are equal numbers, two keys
        return
    assert (sort_key(partition, *a) < sort_key(partition, *b)) == (a < b)
    assert sort_key(partition, *a) < sort_key(partition + 1, *b)
    assert from_key(sort_key(partition, *a)) == a


def test_rocks_tail_matches_the_reference(tmp_path):
    rocks, ref = RocksTail(tmp_path / "tail"), MemoryTail()
    rng = random.Random(5)
    for step in range(3000):
        part = rng.randint(0, 3)
        op = rng.random()
        if op < 0.5:  # deadlines tie often; the ids are unique
            items = [
                (rng.randint(-50, 50) / 4, f"r{rng.randint(0, 9)}-{step}-{i}") for i in range(7)
            ]
            rocks.put(part, items)
            ref.put(part, items)
        elif op < 0.97:
            n = rng.randint(1, 9)
            assert rocks.take(part, n) == ref.take(part, n), step
        else:
            rocks.drop(part)
            ref.drop(part)
        assert rocks.count(part) == ref.count(part)
    rocks.clear()
    assert all(rocks.count(p) == 0 and rocks.take(p, 5) == [] for p in range(4))
    rocks.close()
    assert not (tmp_path / "tail").exists()


def test_an_item_put_twice_comes_back_once_and_the_count_settles(tmp_path):
    rocks = RocksTail(tmp_path / "tail")
    rocks.put(0, [(1.0, "a"), (2.0, "b")])
    rocks.put(0, [(1.0, "a")])
    assert rocks.count(0) == 3
    assert rocks.take(0, 5) == [(1.0, "a"), (2.0, "b")]
    assert rocks.count(0) == 0


def test_what_a_previous_process_left_is_gone_on_opening(tmp_path):
    first = RocksTail(tmp_path / "tail")
    first.put(0, [(1.0, "old")])
    first._db.close()  # a crash: the files stay
    second = RocksTail(tmp_path / "tail")
    second.put(0, [(2.0, "new")])
    assert second.take(0, 10) == [(2.0, "new")]


def test_a_join_with_the_tail_on_disk_gives_the_same_events(tmp_path):
    for seed in range(6):
        records = traffic(seed)
        expected = play(JoinBuffer(45.0, sync_sides=True), records)
        tail = RocksTail(tmp_path / f"tail{seed}")
        j = JoinBuffer(45.0, sync_sides=True, index_tail=tail, index_memory=8, tail_chunk=2)
        assert play(j, records) == expected
        assert sum(tail.count(p) for p in range(3)) == 0  # everything expired in the end

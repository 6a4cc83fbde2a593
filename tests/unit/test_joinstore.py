from driftline.core.events import Outcome, Prediction
from driftline.core.join import DONE_JOINED, WAITING_OUTCOME, WAITING_PREDICTION, Entry, JoinBuffer
from driftline.streaming.joinstore import (
    ChangelogDict,
    changelog_topic_config,
    decode_entry,
    encode_entry,
)


class FakeTable:
    """The part of a Faust table the store uses: its local data."""

    def __init__(self):
        self.data = {}


def test_entry_round_trips_through_the_changelog_encoding():
    p = Prediction("r", "m", 1, 5.0, "v2", 0.8, None, {"a": 1.5, "b": None}, {"region": "eu"})
    for e in (
        Entry(WAITING_PREDICTION, 65.0, prediction=p, partition=3),
        Entry(WAITING_OUTCOME, 70.0, outcome=Outcome("r", True, 10.0, "m"), extra_outcomes=2),
        Entry(DONE_JOINED, 99.0, None, None, "m", "v2", 0, 1),
    ):
        assert decode_entry(encode_entry(e)) == e


def test_changes_go_to_the_changelog_partition_of_their_request():
    store = ChangelogDict(FakeTable())
    join = JoinBuffer(60, store=store)
    join.partition = 2
    join.add_prediction(Prediction("r1", "m", 1, 0.0))
    join.partition = 5
    join.add_prediction(Prediction("r2", "m", 1, 1.0))
    first = store.take()
    assert {k: p for k, (p, _) in first.items()} == {b"r1": 2, b"r2": 5}
    assert decode_entry(first[b"r1"][1]).state == WAITING_PREDICTION
    join.advance(70)  # both expire on the timer: tombstones keep their own partitions
    second = store.take()
    assert {k: p for k, (p, _) in second.items()} == {b"r1": 2, b"r2": 5}
    join.advance(200)  # then forgotten: no write, the changelog's retention drops them
    assert store.take() == {}
    assert len(store) == 0 and store.table.data == {}
    assert store.writes == 4


def test_a_request_changed_twice_in_a_batch_is_written_once():
    store = ChangelogDict(FakeTable())
    join = JoinBuffer(60, store=store)
    join.add_prediction(Prediction("r1", "m", 1, 0.0))
    join.add_outcome(Outcome("r1", 1, 3.0))
    (only,) = store.take().values()
    assert decode_entry(only[1]).state == DONE_JOINED


def test_restore_keeps_only_assigned_partitions():
    table = FakeTable()
    store = ChangelogDict(table)
    join = JoinBuffer(60, store=store)
    for part, rid in ((0, "a"), (1, "b")):
        join.partition = part
        join.add_prediction(Prediction(rid, "m", 1, 0.0))
    store.take()  # the worker takes the changes at the end of every batch
    fresh = ChangelogDict(table)
    assert fresh.restore({1}) == 1
    assert list(fresh) == ["b"]
    assert b"a" not in table.data


def test_changelog_keeps_records_three_ttls_and_at_least_a_day():
    assert changelog_topic_config(86_400)["retention.ms"] == str(3 * 86_400_000)
    assert changelog_topic_config(10)["retention.ms"] == str(86_400_000)
    assert changelog_topic_config(10)["cleanup.policy"] == "compact,delete"

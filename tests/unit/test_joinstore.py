from driftline.core.events import Outcome, Prediction
from driftline.core.join import DONE_JOINED, WAITING_OUTCOME, WAITING_PREDICTION, Entry, JoinBuffer
from driftline.streaming.joinstore import ChangelogDict, decode_entry, encode_entry


class FakeTable:
    """Records what would go to the changelog (the table API, not Kafka)."""

    def __init__(self):
        self.data = {}
        self.sent = []

    def send_changelog(self, partition, key, value, key_serializer=None, value_serializer=None):
        self.sent.append((partition, key, value))


def test_entry_round_trips_through_the_changelog_encoding():
    p = Prediction("r", "m", 1, 5.0, "v2", 0.8, None, {"a": 1.5, "b": None}, {"region": "eu"})
    for e in (
        Entry(WAITING_PREDICTION, 65.0, prediction=p, partition=3),
        Entry(WAITING_OUTCOME, 70.0, outcome=Outcome("r", True, 10.0, "m"), extra_outcomes=2),
        Entry(DONE_JOINED, 99.0, None, None, "m", "v2", 0, 1),
    ):
        assert decode_entry(encode_entry(e)) == e


def test_changes_go_to_the_changelog_partition_of_their_request():
    table = FakeTable()
    store = ChangelogDict(table)
    join = JoinBuffer(60, store=store)
    join.partition = 2
    join.add_prediction(Prediction("r1", "m", 1, 0.0))
    join.partition = 5
    join.add_prediction(Prediction("r2", "m", 1, 1.0))
    join.advance(200)  # both expire (tombstones keep their partitions), then are forgotten
    assert [p for p, k, _ in table.sent if k == b"r1"] == [2, 2, 2]
    assert [p for p, k, _ in table.sent if k == b"r2"] == [5, 5, 5]
    assert table.sent[-1][2] is None  # a delete is a changelog tombstone


def test_restore_keeps_only_assigned_partitions():
    table = FakeTable()
    store = ChangelogDict(table)
    join = JoinBuffer(60, store=store)
    for part, rid in ((0, "a"), (1, "b")):
        join.partition = part
        join.add_prediction(Prediction(rid, "m", 1, 0.0))
    fresh = ChangelogDict(table)
    assert fresh.restore({1}) == 1
    assert list(fresh) == ["b"]
    assert b"a" not in table.data

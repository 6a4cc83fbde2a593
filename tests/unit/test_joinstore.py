import pytest

from driftline.core.events import Outcome, Prediction
from driftline.core.join import DONE_JOINED, WAITING_OUTCOME, WAITING_PREDICTION, Entry, JoinBuffer
from driftline.streaming.joinstore import (
    EMPTY_OUTBOX,
    ChangelogDict,
    changelog_topic_config,
    decode_entry,
    decode_outbox,
    encode_entry,
    encode_outbox,
    outbox_change,
    watermark_change,
)


class FakeTable:
    """The part of a Faust table the store uses: its local data."""

    def __init__(self):
        self.data = {}


def end_batch(store: ChangelogDict) -> dict:
    """What the worker does at the end of a batch: take the changes; once the changelog has
    them, store them locally (and spill what is over the memory bound)."""
    changes = store.take()
    store.stored(changes)
    return changes


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
    first = end_batch(store)
    assert {k: p for k, (p, _) in first.items()} == {b"r1": 2, b"r2": 5}
    assert decode_entry(first[b"r1"][1]).state == WAITING_PREDICTION
    join.advance(70)  # both expire on the timer: tombstones keep their own partitions
    second = end_batch(store)
    assert {k: p for k, (p, _) in second.items()} == {b"r1": 2, b"r2": 5}
    join.advance(200)  # then forgotten: no write, the changelog's retention drops them
    assert end_batch(store) == {}
    assert len(store) == 0 and store.table.data == {}
    assert store.writes == 4


def test_a_request_changed_twice_in_a_batch_is_written_once():
    store = ChangelogDict(FakeTable())
    join = JoinBuffer(60, store=store)
    join.add_prediction(Prediction("r1", "m", 1, 0.0))
    join.add_outcome(Outcome("r1", 1, 3.0))
    (only,) = end_batch(store).values()
    assert decode_entry(only[1]).state == DONE_JOINED


def test_restore_keeps_only_assigned_partitions():
    table = FakeTable()
    store = ChangelogDict(table)
    join = JoinBuffer(60, store=store)
    for part, rid in ((0, "a"), (1, "b")):
        join.partition = part
        join.add_prediction(Prediction(rid, "m", 1, 0.0))
    end_batch(store)  # the worker takes the changes at the end of every batch
    fresh = ChangelogDict(table)
    assert fresh.restore({1}) == 1
    assert list(fresh) == ["b"]
    assert b"a" not in table.data


def test_changelog_keeps_records_three_ttls_and_at_least_a_day():
    assert changelog_topic_config(86_400)["retention.ms"] == str(3 * 86_400_000)
    assert changelog_topic_config(10)["retention.ms"] == str(86_400_000)
    assert changelog_topic_config(10)["cleanup.policy"] == "compact,delete"


class RocksTable:
    """A Faust table's RocksDB store as the join store uses it, on real RocksDB files."""

    def __init__(self, path):
        import rocksdict

        self._path = path
        self._dbs = {}
        self._options = rocksdict.Options(raw_mode=True)
        self.data = self  # the store is the table's .data
        self.persisted = {}  # partition -> persisted offset
        self.changelog_topic = self

    def get_topic_name(self):
        return "t-driftline-join-changelog"

    def _db_for_partition(self, partition):
        import rocksdict

        if partition not in self._dbs:
            self._dbs[partition] = rocksdict.Rdict(
                str(self._path / f"p{partition}"), options=self._options
            )
        return self._dbs[partition]

    def set_persisted_offset(self, tp, offset):
        self.persisted[tp.partition] = offset

    def items(self):
        for db in self._dbs.values():
            yield from db.items()


def test_entries_beyond_the_memory_bound_wait_on_disk_and_still_join(tmp_path):
    store = ChangelogDict(RocksTable(tmp_path), max_in_memory=100)
    join = JoinBuffer(3600, store=store)
    for i in range(1000):
        join.partition = i % 3
        join.add_prediction(Prediction(f"r{i}", "m", 1, float(i)))
        if i % 50 == 49:
            end_batch(store)  # a batch ends: on disk, then over-the-bound entries leave memory
    end_batch(store)
    assert store.in_memory() <= 100
    assert len(store) == 1000  # the ones on disk still count
    events = []
    for i in range(1000):
        join.partition = i % 3
        events.extend(join.add_outcome(Outcome(f"r{i}", 1, float(i) + 1)))
    assert [type(e).__name__ for e in events].count("Joined") == 1000
    assert store.spill_reads >= 900  # read back from RocksDB, not kept in memory
    # A retried outcome of a request whose tombstone was spilled is still a duplicate.
    end_batch(store)
    dup = join.add_outcome(Outcome("r5", 1, 7.0))
    assert [type(e).__name__ for e in dup] == ["Duplicate"]


def test_a_restore_keeps_the_bound_in_memory_and_indexes_every_entry(tmp_path):
    """What a worker does on assignment: entries are read back one at a time, the
    bound of them stays in memory, every one is indexed (its index items beyond
    the bound go to the on-disk tail), and all of them still expire."""
    from driftline.streaming.indextail import RocksTail

    table = RocksTable(tmp_path / "table")
    store = ChangelogDict(table, max_in_memory=100)
    join = JoinBuffer(3600, store=store)
    for i in range(1000):
        join.partition = i % 3
        join.add_prediction(Prediction(f"r{i}", "m", 1, float(i)))
    end_batch(store)
    tail = RocksTail(tmp_path / "tail")
    fresh = ChangelogDict(table, max_in_memory=100)
    restored = JoinBuffer(3600, store=fresh, index_tail=tail, index_memory=30, tail_chunk=4)
    restored.clear_index()
    assert fresh.restore({0, 1, 2}, restored.index_entry) == 1000
    restored.finish_index()
    assert fresh.in_memory() == 100 and len(fresh) == 1000
    memory, on_disk = restored.index_size()
    assert memory <= 3 * (16 + 4) and memory + on_disk == 1000
    evs = restored.advance(1e9)
    assert sorted(e.prediction.request_id for e in evs) == sorted(f"r{i}" for i in range(1000))


def test_without_rocksdb_nothing_is_spilled():
    store = ChangelogDict(FakeTable(), max_in_memory=10)
    join = JoinBuffer(3600, store=store)
    for i in range(50):
        join.add_prediction(Prediction(f"r{i}", "m", 1, float(i)))
    end_batch(store)
    assert store.in_memory() == 50 and not store.spilled


def test_entries_keep_their_input_positions_and_old_ones_decode_without():
    e = Entry(DONE_JOINED, 99.0, None, None, "m", "v2", 0, 1, p_pos=1 << 40, o_pos=7)
    back = decode_entry(encode_entry(e))
    assert (back.p_pos, back.o_pos) == (1 << 40, 7)
    # An entry written before positions were kept: 8 fields, untracked (-1).
    old = b'[2,99.0,1,"m","v2",0,null,null]'
    assert (decode_entry(old).p_pos, decode_entry(old).o_pos) == (-1, -1)


def test_restore_reads_the_joins_watermark_and_outbox_apart_from_the_entries():
    table = FakeTable()
    store = ChangelogDict(table)
    join = JoinBuffer(60, store=store)
    join.partition = 1
    join.add_prediction(Prediction("r1", "m", 1, 0.0))
    changes = store.take()
    for key, change in (watermark_change(1, 42.5), outbox_change(1, encode_outbox([]))):
        changes[key] = change
    key, change = watermark_change(2, 99.0)  # another worker's partition
    changes[key] = change
    store.stored(changes)
    assert store.restore({1}) == 1  # the join's own records are not entries
    assert list(store) == ["r1"]
    assert store.watermarks == {1: 42.5}
    assert store.outboxes == {1: EMPTY_OUTBOX}


def test_the_changelog_takes_a_whole_batch_in_one_message():
    assert int(changelog_topic_config(60)["max.message.bytes"]) >= 16 << 20


def test_an_outbox_keeps_its_messages_byte_for_byte():
    messages = [(b"fraud", b'{"tagged":[1]}'), (b"", b"x" * 70_000), (b"m\x00", b"")]
    assert decode_outbox(encode_outbox(messages)) == messages
    assert decode_outbox(EMPTY_OUTBOX) == []
    for bad in (b"", b"{}", encode_outbox(messages)[:-5]):
        with pytest.raises(ValueError):
            decode_outbox(bad)


def test_a_partition_without_event_time_yet_restores_without_a_watermark():
    # With synced sides a partition that saw predictions only has no time
    # yet: its watermark is minus infinity, JSON null in the changelog.
    table = FakeTable()
    store = ChangelogDict(table)
    changes = dict([watermark_change(0, float("-inf")), watermark_change(1, 7.0)])
    store.stored(changes)
    store.restore({0, 1})
    assert store.watermarks == {1: 7.0}


def test_rocksdb_gets_no_outbox_and_its_persisted_offset_stays_below_the_latest_one(tmp_path):
    # The outbox is read back from the changelog at a restart: Faust reads
    # from the persisted offset on, so that offset must never pass it.
    table = RocksTable(tmp_path)
    store = ChangelogDict(table)
    join = JoinBuffer(60, store=store)
    join.partition = 1
    join.add_prediction(Prediction("r1", "m", 1, 0.0))
    changes = store.take()
    for key, change in (watermark_change(1, 1.0), outbox_change(1, encode_outbox([]))):
        changes[key] = change
    store.stored(changes, {1: 12}, outboxes={1})  # offsets 10, 11, 12: entry, watermark, outbox
    assert table.persisted == {1: 11}
    assert store.restore({1}) == 1
    assert store.watermarks == {1: 1.0} and store.outboxes == {}  # not on disk
    # A later write to the partition without an outbox: still below the outbox.
    join.add_outcome(Outcome("r1", 1, 1.0))
    store.stored(store.take(), {1: 13})
    assert table.persisted == {1: 11}
    # With a newer outbox, below that one.
    store.stored(dict([outbox_change(1, encode_outbox([]))]), {1: 20}, outboxes={1})
    assert table.persisted == {1: 19}

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.core.events import (
    Duplicate,
    Expired,
    Joined,
    LateOutcome,
    OrphanOutcome,
    Outcome,
    Prediction,
    PredictionSeen,
)
from driftline.core.join import JoinBuffer, position


def P(rid, t, model="m"):
    return Prediction(rid, model, True, float(t))


def O(rid, t, y=True):  # noqa: E743
    return Outcome(rid, y, float(t))


def kinds(events):
    return [type(e).__name__ for e in events]


def test_prediction_then_outcome_joins_with_outcome_time():
    j = JoinBuffer(ttl=100)
    assert kinds(j.add_prediction(P("a", 10))) == ["PredictionSeen"]
    (ev,) = j.add_outcome(O("a", 50))
    assert isinstance(ev, Joined)
    assert ev.event_time == 50.0
    assert j.pending() == 0


def test_outcome_first_waits_for_its_prediction():
    j = JoinBuffer(ttl=100)
    assert j.add_outcome(O("a", 10)) == []
    assert j.pending() == 1
    evs = j.add_prediction(P("a", 5))
    assert kinds(evs) == ["PredictionSeen", "Joined"]
    assert evs[1].event_time == 10.0


def test_prediction_expires_when_event_time_passes_its_deadline():
    j = JoinBuffer(ttl=100)
    j.add_prediction(P("a", 0))
    assert kinds(j.add_prediction(P("b", 100))) == ["PredictionSeen"]  # deadline not passed yet
    evs = j.add_prediction(P("c", 100.5))
    assert kinds(evs) == ["PredictionSeen", "Expired"]
    assert evs[1].prediction.request_id == "a"
    assert evs[1].event_time == 100.0


def test_timer_expires_pending_joins_on_an_idle_partition():
    j = JoinBuffer(ttl=10)
    j.add_prediction(P("a", 0))
    j.add_outcome(O("orphan", 1))
    evs = j.advance(1000)
    assert sorted(kinds(evs)) == ["Expired", "OrphanOutcome"]
    assert j.advance(500) == []  # the watermark never goes back


def test_outcome_after_expiry_is_late_with_its_delay():
    j = JoinBuffer(ttl=10)
    j.add_prediction(P("a", 0))
    j.advance(20)
    (ev,) = j.add_outcome(O("a", 25))
    assert isinstance(ev, LateOutcome)
    assert ev.delay == 25.0
    assert (ev.model_id, ev.model_version) == ("m", "unversioned")


def test_duplicates_are_reported_not_joined_twice():
    j = JoinBuffer(ttl=100)
    j.add_prediction(P("a", 0))
    assert isinstance(j.add_prediction(P("a", 1))[0], Duplicate)
    j.add_outcome(O("a", 2))
    (dup,) = j.add_outcome(O("a", 3))
    assert isinstance(dup, Duplicate) and dup.side == "outcome"


def test_retried_early_outcome_counts_once_as_duplicate_when_prediction_comes():
    j = JoinBuffer(ttl=100)
    j.add_outcome(O("a", 1))
    assert j.add_outcome(O("a", 2)) == []
    evs = j.add_prediction(P("a", 0, model="fraud"))
    assert kinds(evs) == ["PredictionSeen", "Joined", "Duplicate"]
    assert evs[2].model_id == "fraud"


def test_tombstones_are_forgotten_after_another_ttl():
    j = JoinBuffer(ttl=10)
    j.add_prediction(P("a", 0))
    j.add_outcome(O("a", 1))
    j.advance(5)
    assert len(j) == 1
    j.advance(12)
    assert len(j) == 0


def test_lateness_delays_expiry():
    j = JoinBuffer(ttl=10, lateness=5)
    j.add_prediction(P("a", 0))
    assert kinds(j.add_prediction(P("b", 12))) == ["PredictionSeen"]
    assert kinds(j.add_outcome(O("a", 9))) == ["Joined"]


def test_store_can_be_restored_and_index_rebuilt():
    store = {}
    j = JoinBuffer(ttl=10, store=store)
    j.add_prediction(P("a", 0))
    j2 = JoinBuffer(ttl=10, store=dict(store))
    assert kinds(j2.advance(50)) == ["Expired"]


def summarize(events):
    joined = sorted(e.prediction.request_id for e in events if isinstance(e, Joined))
    expired = sorted(e.prediction.request_id for e in events if isinstance(e, Expired))
    seen = sorted(e.prediction.request_id for e in events if isinstance(e, PredictionSeen))
    orphans = sum(isinstance(e, OrphanOutcome) for e in events)
    return joined, expired, seen, orphans


@st.composite
def traffic(draw):
    n = draw(st.integers(1, 30))
    records = []
    for i in range(n):
        t = draw(st.integers(0, 1000))
        has_pred = draw(st.booleans()) or True
        if has_pred:
            records.append(P(f"r{i}", t))
        if draw(st.booleans()):
            records.append(O(f"r{i}", t + draw(st.integers(0, 40))))
    dups = draw(st.lists(st.sampled_from(records), max_size=10))
    return records, dups, draw(st.randoms(use_true_random=False))


def feed(j, records):
    out = []
    for r in records:
        out.extend(j.add_prediction(r) if isinstance(r, Prediction) else j.add_outcome(r))
    out.extend(j.advance(1e9))
    return out


@settings(max_examples=300, deadline=None)
@given(traffic())
def test_any_interleaving_and_duplication_gives_the_same_join(data):
    """Within the allowed lateness, arrival order and retries change nothing."""
    records, dups, rnd = data
    reference = feed(JoinBuffer(ttl=30, lateness=2000), sorted(records, key=lambda r: r.event_time))
    shuffled = records + dups
    rnd.shuffle(shuffled)
    got = feed(JoinBuffer(ttl=30, lateness=2000), shuffled)
    assert summarize(got) == summarize(reference)
    assert sum(isinstance(e, Duplicate) for e in got) <= len(dups)


def test_ttl_is_event_time_not_arrival_order():
    # An outcome 31 s after its prediction misses a 30 s TTL, whatever the order.
    for order in ([P("a", 0), O("a", 31)], [O("a", 31), P("a", 0)]):
        j = JoinBuffer(ttl=30, lateness=100)
        joined, expired, _, _ = summarize(feed(j, order))
        assert (joined, expired) == ([], ["a"]), order


def test_many_pending_entries_expire_in_deadline_order():
    j = JoinBuffer(ttl=1)
    rng = random.Random(3)
    for i in range(2000):
        j.add_prediction(P(f"r{i}", rng.random() * 100, model="m"))
    evs = [e for e in j.advance(1e6) if isinstance(e, Expired)]
    deadlines = [e.deadline for e in evs]
    assert deadlines == sorted(deadlines)
    # The ones that expired while data arrived are not reported twice.
    assert len(evs) < 2000
    assert j.pending() == 0


# --- crash recovery: positions, expiry order, restored event time -----------------


def at(j, offset, partition=0):
    """Process the next record as if read at ``offset`` of ``partition``."""
    j.partition = partition
    j.position = position(offset, 0, partition)
    return j


def test_a_record_read_again_at_the_same_position_changes_nothing():
    j = JoinBuffer(ttl=60)
    assert kinds(at(j, 0).add_prediction(P("r", 1))) == ["PredictionSeen"]
    assert kinds(at(j, 0).add_prediction(P("r", 1))) == []  # re-read after a crash
    assert kinds(at(j, 5).add_outcome(O("r", 2))) == ["Joined"]
    assert kinds(at(j, 5).add_outcome(O("r", 2))) == []
    # A real retry is a new record (a new position): a duplicate, remembered too.
    assert kinds(at(j, 6).add_outcome(O("r", 2))) == ["Duplicate"]
    assert kinds(at(j, 6).add_outcome(O("r", 2))) == []
    assert kinds(at(j, 7).add_prediction(P("r", 1))) == ["Duplicate"]
    assert kinds(at(j, 7).add_prediction(P("r", 1))) == []
    # The same offset of another partition is another record.
    assert kinds(at(j, 7, partition=1).add_prediction(P("r", 1))) == ["Duplicate"]


def test_an_early_outcome_read_again_is_not_a_second_outcome():
    j = JoinBuffer(ttl=60)
    assert kinds(at(j, 3).add_outcome(O("r", 2))) == []
    assert kinds(at(j, 3).add_outcome(O("r", 2))) == []
    assert kinds(at(j, 4).add_prediction(P("r", 1))) == ["PredictionSeen", "Joined"]


def test_positions_are_untracked_by_default():
    j = JoinBuffer(ttl=60)  # replay: no positions, every record counts
    j.add_prediction(P("r", 1))
    assert kinds(j.add_prediction(P("r", 1))) == ["Duplicate"]


def test_a_prediction_past_its_deadline_on_arrival_expires_at_once():
    j = JoinBuffer(ttl=10)
    j.expiry_log = []
    j.add_prediction(P("new", 100))
    evs = j.add_prediction(P("old", 50))  # deadline 60 < watermark 100
    assert kinds(evs) == ["PredictionSeen", "Expired"]
    assert j.expiry_log == []  # the record's own events, not the watermark's
    assert kinds(j.add_outcome(O("old", 55))) == ["LateOutcome"]


def test_an_outcome_past_its_wait_on_arrival_is_an_orphan_at_once():
    j = JoinBuffer(ttl=10)
    j.add_prediction(P("new", 100))
    assert kinds(j.add_outcome(O("gone", 50))) == ["OrphanOutcome"]
    assert "gone" not in j.store


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 40), st.integers(0, 300)), max_size=120))
def test_the_watermark_expires_in_deadline_then_id_order(records):
    """What makes a re-sent expiry recognisable: advance() emits in (deadline, id) order."""
    j = JoinBuffer(ttl=20)
    j.expiry_log = []
    for is_prediction, rid, t in records:
        if is_prediction:
            j.add_prediction(P(f"r{rid}", t))
        else:
            j.add_outcome(O(f"r{rid}", t))
    j.advance(1e9)
    keys = [(d, rid) for d, rid, _ in j.expiry_log]
    assert keys == sorted(keys)


def test_a_restored_buffer_knows_how_far_event_time_got():
    j = JoinBuffer(ttl=10)
    j.add_prediction(P("a", 100))
    j.add_prediction(P("b", 105))
    restored = JoinBuffer(ttl=10, store=dict(j.store))
    assert restored.clock(0).max_time == 105
    assert restored.watermark == float("-inf")  # nothing expires until time moves on
    assert kinds(restored.advance(restored.clock(0).max_time + 6)) == ["Expired"]  # a, not b


def test_each_partition_has_its_own_event_time():
    # A backlog on partition 1 (a worker taking it over, or catching up) is
    # not expired by the time partition 0 has reached.
    j = JoinBuffer(ttl=10)
    j.partition = 1
    j.add_prediction(P("old", 100))
    j.partition = 0
    j.add_prediction(P("new", 1000))
    assert kinds(j.add_prediction(P("newer", 1020))) == ["PredictionSeen", "Expired"]  # "new"
    assert j.clock(0).watermark == 1020 and j.clock(1).watermark == 100
    j.partition = 1
    assert kinds(j.add_outcome(O("old", 105))) == ["Joined"]
    assert kinds(j.add_prediction(P("late", 102))) == ["PredictionSeen"]  # not past partition 1's
    assert j.store["old"].partition == 1 and j.store["newer"].partition == 0


def test_advance_moves_one_partition_or_all():
    j = JoinBuffer(ttl=10)
    j.expiry_log = []
    for part, rid in ((0, "a"), (1, "b"), (2, "c")):
        j.partition = part
        j.add_prediction(P(rid, 0))
    assert kinds(j.advance(100, 1)) == ["Expired"]
    assert [(rid, part) for _, rid, part in j.expiry_log] == [("b", 1)]
    j.expiry_log.clear()
    assert kinds(j.advance(100)) == ["Expired", "Expired"]  # 0 and 2; 1 has nothing left
    assert [(rid, part) for _, rid, part in j.expiry_log] == [("a", 0), ("c", 2)]


def test_a_resumed_partition_expires_on_arrival_by_its_saved_watermark():
    j = JoinBuffer(ttl=10)
    j.resume(3, 500.0)
    j.resume(3, 400.0)  # never backwards
    assert j.clock(3).watermark == 500.0
    j.partition = 3
    assert kinds(j.add_prediction(P("a", 480))) == ["PredictionSeen", "Expired"]
    j.partition = 4
    assert kinds(j.add_prediction(P("b", 480))) == ["PredictionSeen"]  # partition 4 is fresh


def test_a_restore_rebuilds_each_partitions_index_and_time():
    j = JoinBuffer(ttl=10)
    j.partition = 1
    j.add_prediction(P("a", 100))
    j.partition = 2
    j.add_prediction(P("b", 300))
    restored = JoinBuffer(ttl=10, store=dict(j.store))
    assert restored.clock(1).max_time == 100 and restored.clock(2).max_time == 300
    assert kinds(restored.advance(200, 2)) == []  # b's deadline is 310
    assert kinds(restored.advance(200, 1)) == ["Expired"]
    restored.forget_partitions({1})
    assert 1 not in restored.clocks and 2 in restored.clocks


def test_synced_sides_keep_a_backlog_of_outcomes_from_expiring_its_predictions():
    # The worker reads predictions and outcomes from two topics at their own
    # pace: predictions 100 s ahead must not expire what the outcomes hold.
    for sync, expected in ((False, ["OrphanOutcome"]), (True, ["Joined"])):
        j = JoinBuffer(ttl=10, sync_sides=sync)
        j.add_prediction(P("a", 0))
        j.add_outcome(O("z", 0))  # an outcome of something else, at time 0
        for t in range(1, 100):
            j.add_prediction(P(f"p{t}", t))
        assert kinds(j.add_outcome(O("a", 2))) == expected


def test_synced_sides_move_with_the_older_side_and_a_lift():
    j = JoinBuffer(ttl=10, sync_sides=True)
    j.add_prediction(P("a", 0))
    j.add_prediction(P("b", 50))
    assert j.clock(0).max_time == float("-inf")  # no outcome seen yet
    assert kinds(j.add_outcome(O("x", 20))) == ["Expired"]  # time 20: a's deadline 10 passed
    assert j.clock(0).max_time == 20
    # Outcomes read to their end: time is the predictions' 50, x's wait (to 30) is over.
    assert kinds(j.lift(0, 1, 50)) == ["OrphanOutcome"]
    assert j.clock(0).max_time == 50
    assert kinds(j.lift(0, 0, 70)) == []  # the older side still says 50 < b's deadline 60
    assert kinds(j.lift(0, 1, 70)) == ["Expired"]


def test_a_resume_moves_both_sides():
    j = JoinBuffer(ttl=10, sync_sides=True)
    j.resume(2, 100.0)
    assert j.clock(2).sides == [100.0, 100.0] and j.clock(2).max_time == 100.0


def test_a_time_tied_with_its_sides_newest_is_still_capped_by_the_other_side():
    # Timestamps in milliseconds tie often; a backlog read one topic ahead of
    # the other lost 502 joins in scripts/scale_out.py --instance-id this way.
    j = JoinBuffer(ttl=10, sync_sides=True)
    j.add_prediction(P("a", 0))
    j.add_prediction(P("b", 20))
    assert kinds(j.add_prediction(P("c", 20))) == ["PredictionSeen"]  # not a's expiry
    assert j.watermark == float("-inf")
    j.add_outcome(O("x", 5))
    assert kinds(j.add_outcome(O("y", 5))) == []
    assert j.clock(0).max_time == 5

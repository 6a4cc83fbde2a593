"""The worker's agents read every offset once and in order (streaming/offsets.py)."""

from driftline.streaming.offsets import PROCESS, SKIP, OffsetGuard


def test_in_order_offsets_pass_and_backward_rereads_are_processed():
    guard = OffsetGuard(committed=lambda tp: None)
    assert [guard.admit("t0", o) for o in (5, 6, 7)] == [PROCESS] * 3
    assert guard.admit("t0", 3) == PROCESS  # a re-read after a seek to an older commit
    assert guard.next["t0"] == 4


def test_a_first_record_past_the_commit_is_sought_back_and_the_rest_waits_for_it():
    guard = OffsetGuard(committed=lambda tp: {"a": 346, "b": 0}.get(tp))
    assert guard.admit("a", 408) == 346  # what Faust handed a worker that joined
    assert [guard.admit("a", o) for o in (409, 470)] == [SKIP, SKIP]  # fetched before the seek
    assert guard.admit("b", 0) == PROCESS  # other partitions go on meanwhile
    assert [guard.admit("a", o) for o in range(346, 410)] == [PROCESS] * 64
    assert guard.rewinds == 1 and not guard.rewinding


def test_records_gone_for_good_are_sought_once_then_passed_over():
    now = [0.0]
    guard = OffsetGuard(committed=lambda tp: 10, give_up_after=30.0, clock=lambda: now[0])
    assert guard.admit("a", 50) == 10
    now[0] = 5.0
    assert guard.admit("a", 50) == SKIP  # the seek landed past 10: retention deleted them
    now[0] = 31.0
    assert guard.admit("a", 51) == PROCESS  # given up: from here on
    assert guard.admit("a", 52) == PROCESS
    assert guard.rewinding == {}
    assert guard.admit("a", 60) == 53  # a new hole is sought back again


def test_keep_forgets_partitions_that_left():
    guard = OffsetGuard(committed=lambda tp: None)
    guard.admit("a", 1)
    guard.admit("b", 1)
    guard.keep(lambda tp: tp == "a")
    assert set(guard.next) == {"a"}

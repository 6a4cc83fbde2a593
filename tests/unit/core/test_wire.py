import pytest

from driftline.core.codec import decode_line
from driftline.core.config import load_config
from driftline.core.events import (
    Duplicate,
    LateOutcome,
    OrphanOutcome,
    Prediction,
    PredictionSeen,
    Rejected,
)
from driftline.core.join import JoinBuffer
from driftline.core.monitor import MonitorSet
from driftline.core.wire import WireError, decode_batch, encode_batch, encode_batches
from driftline.scenarios import generate


def test_monitors_see_the_same_thing_through_the_wire():
    """Monitors fed decoded micro-batches raise exactly the alerts of direct feeding."""
    cfg = load_config(env={})
    recs = [decode_line(r, cfg.limits) for r in generate("covid", models=3, events=5000, seed=2)]
    join = JoinBuffer(cfg.label_ttl)
    direct, wired = MonitorSet(cfg), MonitorSet(cfg)
    a, b = [], []
    batch = []
    for i, r in enumerate(recs):
        evs = join.add_prediction(r) if isinstance(r, Prediction) else join.add_outcome(r)
        for ev in evs:
            a.extend(direct.handle(ev))
        batch.extend(evs)
        if i % 37 == 0:
            for ev in decode_batch(encode_batch(batch)):
                b.extend(wired.handle(ev))
            batch = []
    for ev in decode_batch(encode_batch(batch)):
        b.extend(wired.handle(ev))
    assert a and a == b
    assert direct.status() == wired.status()


def test_bookkeeping_events_round_trip():
    evs = [
        Duplicate("m", "v", "outcome", 3.0),
        LateOutcome("m", "v", 90.0, 5.0),
        OrphanOutcome(None, 7.0),
        Rejected("m", "v", 8.0),
    ]
    assert decode_batch(encode_batch(evs)) == evs


@pytest.mark.parametrize("raw", [b"", b"{}", b'[["zz"]]', b'[["j", 1]]', b"[1]", b"\xff"])
def test_foreign_messages_are_a_wire_error(raw):
    with pytest.raises(WireError):
        decode_batch(raw)


def test_big_batches_are_split_under_the_size_limit_in_order():
    feats = {f"feature_{i:03d}": i * 1.5 for i in range(200)}
    evs = [
        PredictionSeen(Prediction(f"r{i}", "m", 1, float(i), features=feats)) for i in range(500)
    ]
    messages = encode_batches(evs, max_bytes=64 * 1024)
    assert len(messages) > 1
    assert all(len(m) <= 64 * 1024 for m in messages)
    back = [ev for m in messages for ev in decode_batch(m)]
    assert back == evs


def test_tagged_events_split_under_the_size_limit_and_keep_their_tags():
    from driftline.core.wire import decode_tagged, encode_tagged

    evs = [Duplicate("m", "v", "outcome", float(i)) for i in range(100)]
    tags = [["o3", i << 32, 0] for i in range(100)]
    messages = encode_tagged(evs, tags, max_bytes=1000)
    assert len(messages) > 1 and all(len(m) <= 1000 for m in messages)
    back = [decode_tagged(m) for m in messages]
    assert [e for es, _ in back for e in es] == evs
    assert [t for _, ts in back for t in ts] == tags
    assert encode_tagged([], []) == []


@pytest.mark.parametrize(
    "raw",
    [b'{"tags":[],"events":[["d","m","v","outcome",1.0]]}', b'{"events":[]}', b"7", b"{"],
)
def test_a_tagged_message_that_does_not_add_up_is_a_wire_error(raw):
    from driftline.core.wire import decode_tagged

    with pytest.raises(WireError):
        decode_tagged(raw)

"""Model events on the wire between the join and the monitors.

The worker's join stage is keyed by request id and its monitor stage by
model, so model events cross an internal topic. They travel in per-model
micro-batches (one message holds many events) because the per-message cost
of a stream processor dwarfs the cost of the events themselves.

Each event is a short JSON array whose first element names its type; only
what the monitors read is sent (a joined pair does not carry the features
again: they were already counted when the prediction was seen).

>>> from driftline.core.events import Prediction, Outcome, Joined
>>> p = Prediction("r1", "fraud", 1, 10.0, score=0.9, model_version="v2")
>>> raw = encode_batch([Joined(p, Outcome("r1", 0, 70.0))])
>>> raw
b'[["j","fraud","v2",1,0.9,null,null,10.0,0,70.0,"r1"]]'
>>> decode_batch(raw)[0].outcome.outcome
0
"""

from __future__ import annotations

from typing import Any

import orjson

from driftline.core.events import (
    Duplicate,
    Expired,
    Joined,
    LateOutcome,
    ModelEvent,
    OrphanOutcome,
    Outcome,
    Prediction,
    PredictionSeen,
    Rejected,
)


class WireError(ValueError):
    """An internal model-event message that cannot be decoded."""


def _prediction(p: Prediction) -> list[Any]:
    return [
        "p",
        p.model_id,
        p.model_version,
        p.prediction,
        p.score,
        p.probabilities,
        p.event_time,
        p.request_id,
        p.features,
        p.segments,
        p.task,
    ]


def _encode(ev: ModelEvent) -> list[Any]:
    t = type(ev)
    if t is PredictionSeen:
        return _prediction(ev.prediction)  # type: ignore[union-attr]
    if t is Joined:
        p, o = ev.prediction, ev.outcome  # type: ignore[union-attr]
        return [
            "j",
            p.model_id,
            p.model_version,
            p.prediction,
            p.score,
            p.probabilities,
            p.task,
            p.event_time,
            o.outcome,
            o.event_time,
            p.request_id,
        ]
    if t is Expired:
        p = ev.prediction  # type: ignore[union-attr]
        return ["x", p.model_id, p.model_version, p.event_time, ev.deadline, p.request_id]  # type: ignore[union-attr]
    if t is Duplicate:
        return ["d", ev.model_id, ev.model_version, ev.side, ev.event_time]  # type: ignore[union-attr]
    if t is LateOutcome:
        return ["l", ev.model_id, ev.model_version, ev.delay, ev.event_time]  # type: ignore[union-attr]
    if t is OrphanOutcome:
        return ["o", ev.model_id, ev.event_time]  # type: ignore[union-attr]
    if t is Rejected:
        return ["r", ev.model_id, ev.model_version, ev.event_time]  # type: ignore[union-attr]
    raise TypeError(f"not a model event: {ev!r}")


def encode_prediction(p: Prediction) -> list[Any]:
    """A prediction as a JSON-able list (also used by the worker's join table)."""
    return _prediction(p)


def decode_prediction(item: list[Any]) -> Prediction:
    """The inverse of :func:`encode_prediction`."""
    _, model, version, pred, score, probs, t, rid, feats, segs, task = item
    return Prediction(rid, model, pred, t, version, score, probs, feats, segs, task)


def encode_batch(events: list[ModelEvent]) -> bytes:
    """One message holding ``events`` in order."""
    return orjson.dumps([_encode(e) for e in events])


def encode_batches(events: list[ModelEvent], max_bytes: int = 512 * 1024) -> list[bytes]:
    """``events`` in order, in as few messages as fit under ``max_bytes`` each.

    A Kafka broker refuses messages over 1 MiB by default, and a batch of
    predictions with many features passes that easily. An event that alone
    exceeds ``max_bytes`` still gets a message of its own.

    >>> from driftline.core.events import Duplicate
    >>> evs = [Duplicate("m", "v", "outcome", float(i)) for i in range(100)]
    >>> [len(decode_batch(m)) for m in encode_batches(evs, max_bytes=1000)]
    [34, 34, 32]
    """
    encoded = [_encode(e) for e in events]
    whole = orjson.dumps(encoded)
    if len(whole) <= max_bytes:  # the usual case: one message, one dumps call
        return [whole] if events else []
    items = [orjson.dumps(item) for item in encoded]
    out: list[bytes] = []
    chunk: list[bytes] = []
    size = 2
    for item in items:
        if chunk and size + len(item) + 1 > max_bytes:
            out.append(b"[" + b",".join(chunk) + b"]")
            chunk, size = [], 2
        chunk.append(item)
        size += len(item) + 1
    if chunk:
        out.append(b"[" + b",".join(chunk) + b"]")
    return out


Tag = list[Any]
"""Where a model event comes from, for the monitor stage to drop one it already has.

``[source, a, b]``, ordered by ``(a, b)`` within a source and a model:
``["p3", position, i]`` for the ``i``-th event caused by the record at
input ``position`` (see :func:`driftline.core.join.position`) of
predictions partition 3 (``"o3"``: outcomes), ``["x3", deadline,
request_id]`` for an expiry of an entry of partition 3 (the join emits
those in that order).
"""


def encode_tagged(
    events: list[ModelEvent], tags: list[Tag], max_bytes: int = 512 * 1024
) -> list[bytes]:
    """Like :func:`encode_batches`, each event with its :data:`Tag`.

    >>> from driftline.core.events import Duplicate
    >>> raw = encode_tagged([Duplicate("m", "v", "outcome", 5.0)], [["o1", 70, 0]])
    >>> raw
    [b'{"tags":[["o1",70,0]],"events":[["d","m","v","outcome",5.0]]}']
    >>> decode_tagged(raw[0])
    ([Duplicate(model_id='m', model_version='v', side='outcome', event_time=5.0)], [['o1', 70, 0]])
    """
    if not events:
        return []
    items = [_encode(e) for e in events]
    whole = orjson.dumps({"tags": tags, "events": items})
    if len(whole) <= max_bytes:  # the usual case: one message, one dumps call
        return [whole]
    out: list[bytes] = []
    chunk_items: list[Any] = []
    chunk_tags: list[Tag] = []
    size = 32
    for item, tag in zip(items, tags, strict=True):
        n = len(orjson.dumps(item)) + len(orjson.dumps(tag)) + 2
        if chunk_items and size + n > max_bytes:
            out.append(orjson.dumps({"tags": chunk_tags, "events": chunk_items}))
            chunk_items, chunk_tags, size = [], [], 32
        chunk_items.append(item)
        chunk_tags.append(tag)
        size += n
    out.append(orjson.dumps({"tags": chunk_tags, "events": chunk_items}))
    return out


def _decode(item: Any) -> ModelEvent:
    tag = item[0]
    if tag == "p":
        _, model, version, pred, score, probs, t, rid, feats, segs, task = item
        return PredictionSeen(
            Prediction(rid, model, pred, t, version, score, probs, feats, segs, task)
        )
    if tag == "j":
        _, model, version, pred, score, probs, task, pt, outcome, ot, rid = item
        p = Prediction(rid, model, pred, pt, version, score, probs, None, None, task)
        return Joined(p, Outcome(rid, outcome, ot))
    if tag == "x":
        _, model, version, pt, deadline, rid = item
        return Expired(Prediction(rid, model, None, pt, version), deadline)  # type: ignore[arg-type]
    if tag == "d":
        return Duplicate(item[1], item[2], item[3], item[4])
    if tag == "l":
        return LateOutcome(item[1], item[2], item[3], item[4])
    if tag == "o":
        return OrphanOutcome(item[1], item[2])
    if tag == "r":
        return Rejected(item[1], item[2], item[3])
    raise WireError(f"unknown model event tag {tag!r}")


def decode_batch(raw: bytes) -> list[ModelEvent]:
    """The events of one message; :class:`WireError` if it is not ours."""
    try:
        items = orjson.loads(raw)
        if not isinstance(items, list):
            raise WireError("bad model-event message: not a JSON array")
        return [_decode(item) for item in items]
    except WireError:
        raise
    except (orjson.JSONDecodeError, TypeError, ValueError, IndexError) as exc:
        raise WireError(f"bad model-event message: {exc}") from None


def decode_tagged(raw: bytes) -> tuple[list[ModelEvent], list[Tag] | list[None]]:
    """The events of one message and their tags (``None`` each for an untagged message)."""
    try:
        obj = orjson.loads(raw)
        if isinstance(obj, list):
            return [_decode(item) for item in obj], [None] * len(obj)
        if not isinstance(obj, dict):
            raise WireError("bad model-event message: neither a JSON array nor tagged events")
        items, tags = obj.get("events"), obj.get("tags")
        if not (isinstance(items, list) and isinstance(tags, list) and len(items) == len(tags)):
            raise WireError("bad model-event message: events and tags do not match")
        return [_decode(item) for item in items], tags
    except WireError:
        raise
    except (orjson.JSONDecodeError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise WireError(f"bad model-event message: {exc}") from None

"""A corpus of hostile Kafka messages: what a monitor must survive, kind by kind.

A monitor that reads other teams' topics sees every way a message can be
wrong: not JSON, not UTF-8, truncated, nested ten thousand deep, megabytes
long, ``NaN``, numbers no double holds, wrong types, control characters in
names, ten thousand features, floods of new model ids and versions. Each
:class:`Kind` here builds such messages and says what must become of them:
dead-lettered, with a reason containing given words, or accepted and joined.

The corpus is pure (no Kafka, no clock): :func:`build_samples` turns it into
concrete :class:`Sample` objects, each a few messages for one input
partition with the request ids that must join and the reason fragments the
dead letter must show. ``scripts/hostile_input.py`` mixes them into good
traffic through a real worker and tallies the outcome;
``tests/integration/test_hostile_input.py`` runs the same corpus in small;
``tests/unit/test_hostile.py`` checks every verdict against the codec.

Two groups depend on context rather than on the record alone:

- *Event time*: a record stamped far ahead of its Kafka message (year 9999
  is a valid RFC 3339 time) would move the worker's event-time clock ahead
  and expire every pending join; the codec refuses it against the message
  timestamp it is given (``limits.max_time_ahead``), which no schema sees.
- *Cardinality floods* (:func:`flood_samples`): every record valid, but
  each names a new model id or version. They are refused at the monitor
  stage once ``limits.max_models`` / ``limits.max_versions_per_model`` are
  reached, so which records are refused depends on arrival order across
  partitions; only the totals are fixed.

>>> kinds = {k.name: k for k in KINDS}
>>> len(KINDS) >= 30
True
>>> s = kinds["nan_literal"].build(Context(now=1_714_564_800.0), "t1-")
>>> s.messages[0].value[:60]
b'{"request_id":"t1-0","model_id":"hostile","model_version":"v'
>>> s.refused, s.accepted
(('not valid JSON',), ())
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from driftline.core.config import LimitsConfig

__all__ = [
    "GOOD_MODEL",
    "HOSTILE_MODEL",
    "KINDS",
    "Context",
    "Kind",
    "Message",
    "Sample",
    "build_samples",
    "flood_samples",
    "good_pair",
]

Topic = Literal["predictions", "outcomes"]

HOSTILE_MODEL = "hostile"
"""Model id of the corpus' records (valid or not) that name a model."""

GOOD_MODEL = "good"
"""Model id of the good traffic :func:`good_pair` makes."""


@dataclass(frozen=True, slots=True)
class Message:
    """One Kafka message to send: its topic (by role), key and value, untouched."""

    topic: Topic
    value: bytes | None
    key: bytes | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """One instance of a kind: messages for one partition and what must become of them.

    ``refused`` holds one fragment per record the dead letter must name, in
    the order of the records' reasons (a message-level fault is one
    record). ``accepted`` lists the request ids whose prediction and
    outcome are both among ``messages`` and must be joined.
    ``duplicates`` counts retried records the join must count as duplicates.
    """

    kind: str
    messages: tuple[Message, ...]
    refused: tuple[str, ...] = ()
    accepted: tuple[str, ...] = ()
    duplicates: int = 0


@dataclass(frozen=True, slots=True)
class Context:
    """What a kind needs to know to build its messages.

    ``now`` is the event time (epoch seconds) stamped on records, close to
    the Kafka timestamp the producer will give the message. ``limits`` are
    the worker's, so size kinds can sit just over or just under them.
    """

    now: float
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    model: str = HOSTILE_MODEL


@dataclass(frozen=True, slots=True)
class Kind:
    """A named way to be hostile, and a builder of samples of it."""

    name: str
    about: str
    build: Callable[[Context, str], Sample]


# --------------------------------------------------------------------------- records


def _prediction(ctx: Context, rid: str, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "request_id": rid,
        "model_id": ctx.model,
        "model_version": "v1",
        "timestamp": ctx.now,
        "prediction": 1,
        "score": 0.8,
        "features": {"amount": 12.5, "country": "NL"},
        "segments": {"region": "eu"},
    }
    record.update(fields)
    return {k: v for k, v in record.items() if v is not _DROP}


def _outcome(ctx: Context, rid: str, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"request_id": rid, "outcome": 1, "timestamp": ctx.now}
    record.update(fields)
    return {k: v for k, v in record.items() if v is not _DROP}


_DROP: Any = object()
"""A field value meaning "leave the field out"."""


def _dumps(obj: object) -> bytes:
    return orjson.dumps(obj)


def _pred_msg(value: bytes | None, key: str | bytes | None) -> Message:
    return Message("predictions", value, key.encode() if isinstance(key, str) else key)


def _out_msg(value: bytes | None, key: str | bytes | None) -> Message:
    return Message("outcomes", value, key.encode() if isinstance(key, str) else key)


def _refuse(name: str, fragment: str, make: Callable[[Context, str], bytes | None]) -> Kind:
    """A kind whose single prediction message is refused as a whole (one reason)."""

    def build(ctx: Context, tag: str) -> Sample:
        return Sample(name, (_pred_msg(make(ctx, tag + "0"), tag + "0"),), refused=(fragment,))

    return Kind(name, fragment, build)


def _bad_field(name: str, fragment: str, **fields: Any) -> Kind:
    """A kind: one prediction, valid but for ``fields``; the reason names the field."""
    return _refuse(name, fragment, lambda ctx, rid: _dumps(_prediction(ctx, rid, **fields)))


def _bad_outcome(name: str, fragment: str, **fields: Any) -> Kind:
    """A kind: one outcome, valid but for ``fields`` (on the outcomes topic)."""

    def build(ctx: Context, tag: str) -> Sample:
        rid = tag + "0"
        return Sample(
            name, (_out_msg(_dumps(_outcome(ctx, rid, **fields)), rid),), refused=(fragment,)
        )

    return Kind(name, fragment, build)


def _raw(name: str, fragment: str, raw: bytes | None) -> Kind:
    return _refuse(name, fragment, lambda ctx, rid: raw)


def _splice(ctx: Context, rid: str, field_name: str, literal: bytes) -> bytes:
    """A valid prediction whose ``field_name`` is the raw JSON text ``literal``.

    For what orjson cannot write (``NaN``, ``1e400``, lone surrogates,
    duplicate keys): the record is written with a placeholder, which is then
    replaced by the literal bytes.
    """
    placeholder = "@@SPLICE@@"
    text = _dumps(_prediction(ctx, rid, **{field_name: placeholder}))
    return text.replace(b'"' + placeholder.encode() + b'"', literal)


def _literal(name: str, fragment: str, field_name: str, literal: bytes) -> Kind:
    return _refuse(name, fragment, lambda ctx, rid: _splice(ctx, rid, field_name, literal))


def _accept(
    name: str, about: str, make: Callable[[Context, str], dict[str, Any]], key: str | None = ""
) -> Kind:
    """A kind whose odd-but-valid prediction is accepted and joins its outcome.

    ``key``: the Kafka key of both messages; ``""`` means the request id,
    ``None`` no key at all.
    """

    def build(ctx: Context, tag: str) -> Sample:
        record = make(ctx, tag + "0")
        rid = record["request_id"]
        k = rid if key == "" else (None if key is None else tag + key)
        return Sample(
            name,
            (_pred_msg(_dumps(record), k), _out_msg(_dumps(_outcome(ctx, rid)), k)),
            accepted=(rid,),
        )

    return Kind(name, about, build)


# --------------------------------------------------------------------------- builders


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _deep_field(ctx: Context, rid: str) -> bytes:
    return _splice(ctx, rid, "context", _nested(10_000))


def _oversized(ctx: Context, rid: str) -> bytes:
    pad = "x" * (3 * ctx.limits.max_message_bytes)
    return _dumps(_prediction(ctx, rid, padding=pad))


def _truncated(ctx: Context, rid: str) -> bytes:
    raw = _dumps(_prediction(ctx, rid))
    return raw[: len(raw) // 2]


def _invalid_utf8(ctx: Context, rid: str) -> bytes:
    return _dumps(_prediction(ctx, rid, segments={"region": "@@"})).replace(b"@@", b"\xff\xfe")


def _overlong_utf8(ctx: Context, rid: str) -> bytes:
    # "/" encoded in two bytes: a classic filter bypass, invalid UTF-8.
    return _dumps(_prediction(ctx, rid, model_version="@@")).replace(b"@@", b"\xc0\xaf")


def _bom(ctx: Context, rid: str) -> bytes:
    return b"\xef\xbb\xbf" + _dumps(_prediction(ctx, rid))


def _utf16(ctx: Context, rid: str) -> bytes:
    return _dumps(_prediction(ctx, rid)).decode().encode("utf-16")


def _duplicate_keys(ctx: Context, rid: str) -> bytes:
    # The decoy request id comes first; JSON parsers disagree on which wins
    # (orjson and json: the last). Documented: the last one.
    return _splice(
        ctx,
        rid,
        "request_id",
        b'"decoy-' + rid.encode() + b'","request_id":"' + rid.encode() + b'"',
    )


def _dup_keys(ctx: Context, tag: str) -> Sample:
    rid = tag + "0"
    return Sample(
        "duplicate_keys",
        (_pred_msg(_duplicate_keys(ctx, rid), rid), _out_msg(_dumps(_outcome(ctx, rid)), rid)),
        accepted=(rid,),
    )


def _batch_sizes(ctx: Context, rid: str, budget: int, bad: bool) -> list[dict[str, Any]]:
    """Valid records (one bad if ``bad``) whose JSON array is just under ``budget`` bytes."""
    filler = "f" * 900
    first = _prediction(ctx, f"{rid}-0", note=filler)
    one = len(_dumps(first)) + 1
    n = max(2, (budget - 64) // one)
    records = [_prediction(ctx, f"{rid}-{i}", note=filler) for i in range(n)]
    if bad:
        records[n // 2]["score"] = 1.7
    raw = _dumps(records)
    while len(raw) > budget - 16:
        records.pop()
        raw = _dumps(records)
    return records


def _under_limit(name: str, bad: bool) -> Kind:
    def build(ctx: Context, tag: str) -> Sample:
        budget = ctx.limits.max_message_bytes
        records = _batch_sizes(ctx, tag + "0", budget, bad)
        good = [r["request_id"] for r in records if r["score"] == 0.8]
        outcomes = [_outcome(ctx, rid) for rid in good]
        return Sample(
            name,
            (_pred_msg(_dumps(records), tag + "0"), _out_msg(_dumps(outcomes), tag + "0")),
            refused=('field "score"',) if bad else (),
            accepted=tuple(good),
        )

    about = "a batch just under limits.max_message_bytes" + (", one record bad" if bad else "")
    return Kind(name, about, build)


def _mixed_batch(ctx: Context, tag: str) -> Sample:
    rids = [f"{tag}{i}" for i in range(6)]
    records: list[object] = [
        _prediction(ctx, rids[0]),
        _prediction(ctx, rids[1], score=1.7),
        _prediction(ctx, rids[2]),
        _prediction(ctx, rids[3], model_id=_DROP),
        "not a record",
        _prediction(ctx, rids[5]),
    ]
    good = (rids[0], rids[2], rids[5])
    return Sample(
        "mixed_batch",
        (
            _pred_msg(_dumps(records), rids[0]),
            _out_msg(_dumps([_outcome(ctx, rid) for rid in good]), rids[0]),
        ),
        refused=('field "score"', 'field "model_id" is missing', "must be a JSON object"),
        accepted=good,
    )


def _non_objects(ctx: Context, tag: str) -> Sample:
    items: list[object] = [1, "two", None, [], True]
    return Sample(
        "array_of_non_objects",
        (_pred_msg(_dumps(items), tag + "0"),),
        refused=("must be a JSON object",) * len(items),
    )


def _too_many(ctx: Context, tag: str) -> Sample:
    n = ctx.limits.max_records_per_message + 1
    return Sample(
        "too_many_records",
        (_pred_msg(b"[" + b",".join([b"{}"] * n) + b"]", tag + "0"),),
        refused=("over the limit",),
    )


def _all_bad(ctx: Context, tag: str) -> Sample:
    n = ctx.limits.max_records_per_message
    record = _dumps({"model_id": ctx.model, "prediction": 1})
    return Sample(
        "ten_thousand_bad_records",
        (_pred_msg(b"[" + b",".join([record] * n) + b"]", tag + "0"),),
        refused=('field "request_id" is missing',) * n,
    )


def _huge_key(bad: bool) -> Callable[[Context, str], Sample]:
    name = "huge_kafka_key_bad_record" if bad else "huge_kafka_key"

    def build(ctx: Context, tag: str) -> Sample:
        rid = tag + "0"
        key = (tag * (600_000 // len(tag) + 1)).encode()
        pred = _pred_msg(_dumps(_prediction(ctx, rid, score=1.7 if bad else 0.8)), key)
        if bad:
            return Sample(name, (pred,), refused=('field "score"',))
        return Sample(name, (pred, _out_msg(_dumps(_outcome(ctx, rid)), key)), accepted=(rid,))

    return build


def _retried(ctx: Context, tag: str) -> Sample:
    rid = tag + "0"
    pred = _pred_msg(_dumps(_prediction(ctx, rid)), rid)
    return Sample(
        "retried_prediction",
        (pred, pred, _out_msg(_dumps(_outcome(ctx, rid)), rid)),
        accepted=(rid,),
        duplicates=1,
    )


def _features(n: int) -> dict[str, float]:
    return {f"f{i:05d}": float(i % 97) for i in range(n)}


def _kinds() -> list[Kind]:
    inf = b"Infinity"
    return [
        # -- the message as a whole
        _raw("tombstone", "message has no value", None),
        _raw("empty_message", "message is empty", b""),
        _raw("whitespace_only", "not valid JSON", b" \n\t\r  "),
        _raw("null_bytes", "not valid JSON", b"\x00" * 64),
        _refuse("invalid_utf8", "not valid UTF-8", _invalid_utf8),
        _refuse("overlong_utf8", "not valid UTF-8", _overlong_utf8),
        _refuse("utf8_bom", "byte order mark", _bom),
        _refuse("utf16_text", "not valid UTF-8", _utf16),
        _refuse("truncated_json", "not valid JSON", _truncated),
        _raw("nesting_10k_deep", "not valid JSON", _nested(10_000)),
        _refuse("nesting_10k_deep_in_a_field", "not valid JSON", _deep_field),
        _refuse("multi_megabyte", "over the limit of", _oversized),
        _under_limit("just_under_the_size_limit", bad=False),
        _under_limit("just_under_the_size_limit_one_bad", bad=True),
        _raw("top_level_number", "must be a JSON object or an array", b"42"),
        _raw("top_level_null", "must be a JSON object or an array", b"null"),
        _raw("empty_object", 'field "request_id" is missing', b"{}"),
        _raw("empty_array", "empty array", b"[]"),
        Kind("array_of_non_objects", "an array of numbers, strings, null", _non_objects),
        Kind("too_many_records", "one record over limits.max_records_per_message", _too_many),
        Kind("mixed_batch", "good and bad records in one array", _mixed_batch),
        Kind(
            "ten_thousand_bad_records", "limits.max_records_per_message records, all bad", _all_bad
        ),
        Kind("huge_kafka_key_bad_record", "a 600 kB key on a bad record", _huge_key(bad=True)),
        # -- numbers JSON cannot hold
        _literal("nan_literal", "not valid JSON", "score", b"NaN"),
        _literal("infinity_literal", "not valid JSON", "prediction", inf),
        _literal("negative_infinity_literal", "not valid JSON", "features", b'{"x":-' + inf + b"}"),
        _literal("number_1e400", "not valid JSON", "score", b"1e400"),
        _literal("integer_400_digits", "not valid JSON", "prediction", b"9" * 400),
        _literal(
            "integer_2_70_label",
            'field "prediction" must be a number within',
            "prediction",
            b"%d" % 2**70,
        ),
        _literal("integer_2_70_timestamp", 'field "timestamp"', "timestamp", b"%d" % 2**70),
        _literal("lone_surrogate", "not valid JSON", "model_version", b'"v\\ud800"'),
        # -- request_id
        _bad_field("missing_request_id", 'field "request_id" is missing', request_id=_DROP),
        _bad_field("empty_request_id", 'field "request_id" must be a string', request_id=""),
        _bad_field(
            "oversized_request_id", 'field "request_id" must be a string', request_id="r" * 10_000
        ),
        _bad_field("request_id_number", 'field "request_id" must be a string', request_id=12345),
        # -- model_id and model_version
        _bad_field("model_id_array", 'field "model_id"', model_id=["hostile"]),
        _bad_field("model_id_control_chars", 'field "model_id"', model_id="hostile\x00\x1b[2J"),
        _bad_field("model_id_too_long", 'field "model_id"', model_id="m" * 129),
        _bad_field(
            "model_version_newline",
            'field "model_version"',
            model_version="v1\nINFO forged log line",
        ),
        _bad_field("model_version_number", 'field "model_version"', model_version=7),
        # -- labels and scores
        _bad_field("prediction_missing", 'field "prediction" is missing', prediction=_DROP),
        _bad_field("prediction_object", 'field "prediction"', prediction={"label": 1}),
        _bad_field("prediction_huge_string", 'field "prediction"', prediction="p" * 100_000),
        _bad_field("score_out_of_range", 'field "score" must be a number in [0, 1]', score=1.7),
        _bad_field("score_string", 'field "score"', score="0.5"),
        _bad_field("score_boolean", 'field "score"', score=True),
        _bad_field(
            "probabilities_out_of_range",
            'field "probabilities"',
            probabilities={"a": 1.5, "b": -0.5},
        ),
        _bad_field("probabilities_array", 'field "probabilities"', probabilities=[0.1, 0.9]),
        _bad_field("task_unknown", 'field "task"', task="ranking"),
        # -- features and segments
        _bad_field("features_array", 'field "features" must be an object', features=[1, 2, 3]),
        _bad_field(
            "features_10k", 'field "features" has 10000 entries', features=_features(10_000)
        ),
        _bad_field(
            "feature_name_escape_sequence", 'field "features" has key', features={"a\x1b[31m": 1}
        ),
        _bad_field("feature_value_nested", 'field "features" key', features={"x": {"y": 1}}),
        _bad_field("segments_string", 'field "segments"', segments="eu"),
        _bad_field("segment_value_control_char", 'field "segments"', segments={"region": "eu\x07"}),
        _bad_field(
            "segments_too_many", 'field "segments"', segments={f"s{i}": "x" for i in range(33)}
        ),
        # -- timestamps
        _bad_field("timestamp_garbage", 'field "timestamp"', timestamp="yesterday"),
        _bad_field("timestamp_negative", 'field "timestamp"', timestamp=-1),
        _bad_field("timestamp_milliseconds", "epoch milliseconds", timestamp=1_714_564_800_000),
        _bad_field("timestamp_boolean", 'field "timestamp"', timestamp=True),
        _bad_field("timestamp_year_9999", "ahead of the message", timestamp="9999-12-31T23:59:59Z"),
        # -- outcomes
        _bad_outcome("outcome_missing", 'field "outcome" is missing', outcome=_DROP),
        _bad_outcome("outcome_object", 'field "outcome"', outcome={"y": 1}),
        _bad_outcome("outcome_integer_2_70", 'field "outcome"', outcome=2.0**70),
        _bad_outcome("outcome_model_id_control_chars", 'field "model_id"', model_id="m\x00"),
        _bad_outcome("outcome_request_id_null", 'field "request_id"', request_id=None),
        # -- odd but valid: accepted and joined
        Kind("duplicate_keys", "request_id twice in one object: the last wins", _dup_keys),
        _accept(
            "key_mismatch", "a Kafka key that is not the request id", _prediction, key="other-key"
        ),
        _accept("no_key", "no Kafka key at all", _prediction, key=None),
        _accept(
            "escaped_nul_in_request_id",
            "request_id is opaque: any characters",
            lambda c, r: _prediction(c, r + "\x00\u202e"),
        ),
        _accept(
            "probabilities_not_summing_to_one",
            "top-k probabilities need not sum to 1",
            lambda c, r: _prediction(c, r, probabilities={"a": 0.9, "b": 0.9}),
        ),
        _accept(
            "features_at_the_limit",
            "exactly limits.max_features features",
            lambda c, r: _prediction(c, r, features=_features(c.limits.max_features)),
        ),
        _accept(
            "huge_integer_feature",
            "2**70 fits a double as a feature",
            lambda c, r: _prediction(c, r, features={"big": 2.0**70}),
        ),
        _accept(
            "unknown_fields",
            "unknown fields are ignored, however deep",
            lambda c, r: _prediction(c, r, extra=_deep_list(200), more={"a": [None] * 1000}),
        ),
        Kind(
            "huge_kafka_key",
            "a 600 kB key: the join reads the record's request_id",
            _huge_key(bad=False),
        ),
        Kind("retried_prediction", "the same prediction twice: one join, one duplicate", _retried),
    ]


def _deep_list(depth: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth - 1):
        value = [value]
    return value


KINDS: tuple[Kind, ...] = tuple(_kinds())
"""Every kind of the corpus, message-level faults first."""


# --------------------------------------------------------------------------- samples


def build_samples(ctx: Context, repeat: int = 1, prefix: str = "h") -> Iterator[Sample]:
    """``repeat`` samples of every kind, each with request ids of its own.

    Request ids are ``{prefix}-{kind index}-{copy}-{n}`` so two runs (or two
    copies) never collide in the join.
    """
    for copy in range(repeat):
        for index, kind in enumerate(KINDS):
            yield kind.build(ctx, f"{prefix}-{index:02d}-{copy}-")


def good_pair(ctx: Context, rid: str, i: int) -> tuple[bytes, bytes]:
    """The values of good prediction ``i`` and its outcome (model :data:`GOOD_MODEL`)."""
    score = (i * 7919 % 1000) / 1000
    prediction = {
        "request_id": rid,
        "model_id": GOOD_MODEL,
        "model_version": "v1",
        "timestamp": ctx.now,
        "prediction": int(score >= 0.5),
        "score": score,
        "features": {"amount": float(i % 113), "country": "NL" if i % 3 else "DE"},
        "segments": {"region": "eu" if i % 2 else "us"},
    }
    outcome = {"request_id": rid, "outcome": int(i % 10 < 8) ^ (score < 0.5), "timestamp": ctx.now}
    return _dumps(prediction), _dumps(outcome)


@dataclass(frozen=True, slots=True)
class Flood:
    """A cardinality flood: valid pairs, each naming a new model id, version or feature.

    ``reason``: the words of the refusal of those over a cap (a dead letter
    from the monitor stage), ``None`` when every pair must be accepted.
    Which pairs are refused depends on arrival order across partitions, so
    only totals are checked: monitored plus refused is what was sent.
    ``model_ids``: the models the pairs name, to count what was monitored.
    """

    kind: str
    pairs: tuple[tuple[str, bytes, bytes], ...]  # (request id, prediction, outcome)
    reason: str | None
    model_ids: frozenset[str]


def flood_samples(
    ctx: Context,
    models: int,
    versions: int,
    feature_records: int = 400,
    prefix: str = "flood",
) -> list[Flood]:
    """Floods of ``versions`` versions of one model, ``models`` new model ids, and feature names.

    The version and model floods outgrow ``limits.max_versions_per_model``
    and ``limits.max_models`` when asked for more than those (versions
    first: sent in this order, they meet their own cap before the model
    flood fills the other).
    Segment values are flooded along the way (every record a new value):
    segments carry no per-value state, so that costs nothing. The feature
    flood gives each of ``feature_records`` records of model
    ``{prefix}-features`` 100 feature names never seen before: all
    accepted, and the model's data-drift reference must not turn every
    name into a column.
    """

    def pair(rid: str, model: str, version: str, **fields: Any) -> tuple[str, bytes, bytes]:
        record = _prediction(ctx, rid, model_id=model, model_version=version, **fields)
        record["segments"] = {"region": f"seg-{rid}"}
        return rid, _dumps(record), _dumps(_outcome(ctx, rid))

    def names(i: int) -> dict[str, float]:
        return {f"{prefix}-{i}-{j}": float(j) for j in range(100)}

    features_model = f"{prefix}-features"
    return [
        Flood(
            "model_version_flood",
            tuple(pair(f"{prefix}-v-{i}", f"{prefix}-versioned", f"v{i}") for i in range(versions)),
            "limit reached",
            frozenset({f"{prefix}-versioned"}),
        ),
        Flood(
            "model_id_flood",
            tuple(pair(f"{prefix}-m-{i}", f"{prefix}-model-{i}", "v1") for i in range(models)),
            "model limit reached",
            frozenset(f"{prefix}-model-{i}" for i in range(models)),
        ),
        Flood(
            "feature_name_flood",
            tuple(
                pair(f"{prefix}-f-{i}", features_model, "v1", features=names(i))
                for i in range(feature_records)
            ),
            None,
            frozenset({features_model}),
        ),
    ]

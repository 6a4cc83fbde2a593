"""The runtime decoder: what it accepts, what it rejects, and how it says why.

Agreement with the JSON Schemas is checked record by record in
``tests/unit/test_schema_agreement.py``; these tests pin the behaviour the
schemas cannot express: defaults, types kept as sent, error reasons,
batches, message-level failures, and never raising.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import pickle

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftline.core import codec
from driftline.core.codec import (
    RecordError,
    decode_line,
    decode_message,
    decode_outcome,
    decode_prediction,
    parse_timestamp,
)
from driftline.core.config import LimitsConfig
from driftline.core.events import Outcome, Prediction

LIMITS = LimitsConfig()
KAFKA_TIME = 1_714_564_800.0  # 2024-05-01T12:00:00Z


def pred(**fields: object) -> dict[str, object]:
    record: dict[str, object] = {"request_id": "r1", "model_id": "fraud", "prediction": 1}
    record.update(fields)
    return record


def reason_of(obj: object, limits: LimitsConfig = LIMITS) -> str:
    with pytest.raises(RecordError) as info:
        decode_prediction(obj, limits, KAFKA_TIME)
    return info.value.reason


# --------------------------------------------------------------------------- decode_prediction


def test_minimal_prediction_gets_defaults_and_the_kafka_time():
    p = decode_prediction(pred(), LIMITS, KAFKA_TIME)
    assert p == Prediction("r1", "fraud", 1, KAFKA_TIME)
    assert p.model_version == "unversioned"


def test_every_field_is_carried_over():
    features = {"amount": 12.5, "country": "NL", "new": True, "age": None, "items": 3}
    p = decode_prediction(
        pred(
            model_version="v2",
            timestamp="2024-05-01T12:00:01Z",
            score=1,
            probabilities={"0": 0.25, "1": 0.75},
            features=features,
            segments={"region": "eu"},
            task="binary",
        ),
        LIMITS,
    )
    assert p.model_key == ("fraud", "v2")
    assert p.event_time == KAFKA_TIME + 1
    assert p.score == 1.0 and type(p.score) is float
    assert p.probabilities == {"0": 0.25, "1": 0.75}
    assert p.features == features
    assert p.segments == {"region": "eu"}
    assert p.task == "binary"


def test_optional_fields_set_to_null_count_as_absent():
    nulls = dict.fromkeys(
        ("model_version", "timestamp", "score", "probabilities", "features", "segments", "task")
    )
    assert decode_prediction(pred(**nulls), LIMITS, KAFKA_TIME) == decode_prediction(
        pred(), LIMITS, KAFKA_TIME
    )


def test_unknown_fields_are_ignored():
    p = decode_prediction(pred(producer="svc", extra={"a": [1, 2]}), LIMITS, KAFKA_TIME)
    assert p == decode_prediction(pred(), LIMITS, KAFKA_TIME)


@pytest.mark.parametrize("label", [1, 1.0, "1", True, False, 0, -2.5, ""])
def test_labels_are_kept_exactly_as_sent(label):
    p = decode_prediction(pred(prediction=label), LIMITS, KAFKA_TIME)
    assert type(p.prediction) is type(label)
    assert p.prediction == label


def test_the_record_timestamp_wins_over_the_kafka_time():
    p = decode_prediction(pred(timestamp=1_000.5), LIMITS, KAFKA_TIME)
    assert p.event_time == 1_000.5


def test_no_timestamp_and_no_kafka_time_is_an_error_not_an_invented_time():
    with pytest.raises(RecordError) as info:
        decode_prediction(pred(), LIMITS, None)
    assert info.value.field == "timestamp"
    assert "missing" in info.value.reason


def test_the_score_example_reason_reads_on_its_own():
    assert reason_of(pred(score=1.7)) == 'field "score" must be a number in [0, 1], got 1.7'


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"score": True}, "score"),
        ({"timestamp": False}, "timestamp"),
        ({"probabilities": {"a": True}}, "probabilities"),
        ({"segments": {"region": True}}, "segments"),
    ],
)
def test_booleans_are_not_numbers(fields, field):
    with pytest.raises(RecordError) as info:
        decode_prediction(pred(**fields), LIMITS, KAFKA_TIME)
    assert info.value.field == field


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("field", ["prediction", "score", "timestamp", "features", "probabilities"])
def test_nan_and_infinities_are_rejected_everywhere(field, bad):
    # NaN is not JSON, but Python callers (and json.loads) can still hand it over.
    value = {"x": bad} if field in ("features", "probabilities") else bad
    with pytest.raises(RecordError) as info:
        decode_prediction(pred(**{field: value}), LIMITS, KAFKA_TIME)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("record", "field", "fragment"),
    [
        ({"model_id": "fraud", "prediction": 1}, "request_id", 'field "request_id" is missing'),
        (pred(request_id=None), "request_id", "got null"),
        (pred(request_id=7), "request_id", "got 7"),
        ({"request_id": "r", "prediction": 1}, "model_id", 'field "model_id" is missing'),
        (pred(model_id="a b"), "model_id", "got 'a b'"),
        (pred(model_version=""), "model_version", "got ''"),
        ({"request_id": "r", "model_id": "m"}, "prediction", 'field "prediction" is missing'),
        (pred(prediction=None), "prediction", "must be a number, string or boolean, got null"),
        (pred(prediction=[1]), "prediction", "got an array"),
        (pred(prediction=2**53), "prediction", "within +-(2**53 - 1)"),
        (pred(prediction="x" * 1025), "prediction", "1025 characters, over the limit of 1024"),
        (pred(timestamp=1_714_564_800_000), "timestamp", "milliseconds"),
        (pred(timestamp="2024-05-01T12:00:00"), "timestamp", "with an offset"),
        (pred(timestamp="2023-02-29T00:00:00Z"), "timestamp", "no day 29 in month 2 of 2023"),
        (pred(task="classification"), "task", "got 'classification'"),
        (pred(probabilities={}), "probabilities", "got 0 entries"),
        (pred(features=[1]), "features", "must be an object, got an array"),
        (pred(features={"age": {"v": 1}}), "features", "key 'age' must be a number"),
        (pred(features={"a\nb": 1}), "features", "has key 'a\\nb'"),
        (pred(segments={"region": 3}), "segments", "key 'region' must be a string"),
    ],
)
def test_reasons_name_the_field(record, field, fragment):
    with pytest.raises(RecordError) as info:
        decode_prediction(record, LIMITS, KAFKA_TIME)
    assert info.value.field == field
    assert fragment in info.value.reason
    assert info.value.index is None


def test_hostile_values_are_escaped_and_cut_short_in_reasons():
    reason = reason_of(pred(features={"\x1b[2J" + "k" * 10_000: 1}))
    assert len(reason) < 300
    assert "\x1b" not in reason and "\\x1b" in reason
    assert "(10004 characters)" in reason


def test_a_huge_integer_in_a_reason_is_described_not_printed():
    # repr() of a 5000-digit int raises ValueError in Python 3.11: the decoder must not.
    reason = reason_of(pred(prediction=10**5000))
    assert "an integer of 16610 bits" in reason


@pytest.mark.parametrize(
    ("limits", "fields"),
    [
        (LimitsConfig(max_features=2), {"features": {"a": 1, "b": 2, "c": 3}}),
        (LimitsConfig(max_features=2), {"probabilities": {"a": 0.1, "b": 0.1, "c": 0.8}}),
        (LimitsConfig(max_segments=1), {"segments": {"a": "x", "b": "y"}}),
        (LimitsConfig(max_id_length=8), {"request_id": "r" * 9}),
        (LimitsConfig(max_id_length=8), {"features": {"long_feature_name": 1}}),
        (LimitsConfig(max_string_length=4), {"features": {"s": "abcde"}}),
        (LimitsConfig(max_string_length=4), {"segments": {"region": "north"}}),
        (LimitsConfig(max_string_length=4), {"prediction": "spam!"}),
    ],
)
def test_configured_limits_are_enforced_even_for_names_seen_before(limits, fields):
    # The same record passes under the defaults first, so every name is in the
    # decoder's cache of known names: the tighter bound must still apply.
    decode_prediction(pred(**fields), LIMITS, KAFKA_TIME)
    with pytest.raises(RecordError):
        decode_prediction(pred(**fields), limits, KAFKA_TIME)


def test_the_name_cache_stays_bounded_when_every_record_invents_names(monkeypatch):
    monkeypatch.setattr(codec, "_CACHE_MAX", 4)
    monkeypatch.setattr(codec, "_KNOWN_NAMES", {})
    for i in range(100):
        decode_prediction(pred(features={f"f{i}": 1.0}), LIMITS, KAFKA_TIME)
    assert all(len(names) <= 4 for names in codec._KNOWN_NAMES.values())


def test_a_non_object_record_is_rejected():
    assert reason_of([pred()]) == "a prediction must be a JSON object, got an array"


# --------------------------------------------------------------------------- decode_outcome


def test_minimal_outcome():
    o = decode_outcome({"request_id": "r1", "outcome": "spam"}, LIMITS, KAFKA_TIME)
    assert o == Outcome("r1", "spam", KAFKA_TIME, None)


def test_outcome_model_id_is_optional_but_checked_when_given():
    record = {"request_id": "r1", "outcome": 0, "model_id": "fraud", "timestamp": 5}
    assert decode_outcome(record, LIMITS).model_id == "fraud"
    with pytest.raises(RecordError) as info:
        decode_outcome(dict(record, model_id="no spaces please"), LIMITS)
    assert info.value.field == "model_id"


def test_outcome_label_is_required():
    with pytest.raises(RecordError, match='field "outcome" must be a number, string or boolean'):
        decode_outcome({"request_id": "r1", "outcome": None}, LIMITS, KAFKA_TIME)


# --------------------------------------------------------------------------- parse_timestamp


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", KAFKA_TIME),
        ("2024-05-01t12:00:00z", KAFKA_TIME),
        ("2024-05-01 12:00:00Z", KAFKA_TIME),
        ("2024-05-01T14:00:00+02:00", KAFKA_TIME),
        ("2024-05-01T06:30:00-05:30", KAFKA_TIME),
        ("2024-05-01T12:00:00-00:00", KAFKA_TIME),
        ("2024-05-01T12:00:00.5Z", KAFKA_TIME + 0.5),
        ("2024-05-01T12:00:00.000000001Z", KAFKA_TIME + 1e-9),
        ("1970-01-01T00:00:00Z", 0.0),
        ("2016-12-31T23:59:60Z", 1_483_228_800.0),  # leap second = next minute's first
        (1_714_564_800, KAFKA_TIME),
        (0.25, 0.25),
    ],
)
def test_parse_timestamp_known_values(text, expected):
    assert parse_timestamp(text) == pytest.approx(expected, abs=1e-6)


@given(
    st.datetimes(
        min_value=dt.datetime(1970, 1, 2),
        max_value=dt.datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [
                dt.UTC,
                dt.timezone(dt.timedelta(hours=5, minutes=45)),
                dt.timezone(-dt.timedelta(hours=11)),
            ]
        ),
    )
)
def test_parse_timestamp_agrees_with_datetime(moment):
    assert parse_timestamp(moment.isoformat()) == pytest.approx(moment.timestamp(), abs=1e-5)


@pytest.mark.parametrize(
    "bad",
    [
        -1,
        1e11,
        math.nan,
        True,
        None,
        "",
        "1714564800",
        "2024-05-01T12:00:00",
        "2024-05-01T12:00:00Z\n",
        "2024-02-30T00:00:00Z",
        "1969-12-31T23:59:59Z",
        "2024-05-01T12:00:00+24:00",
    ],
)
def test_parse_timestamp_rejects(bad):
    with pytest.raises(RecordError) as info:
        parse_timestamp(bad)
    assert info.value.field == "timestamp"


# --------------------------------------------------------------------------- decode_message


def test_a_single_object_message_gives_one_record():
    records, errors = decode_message(orjson.dumps(pred()), "prediction", LIMITS, KAFKA_TIME)
    assert records == [Prediction("r1", "fraud", 1, KAFKA_TIME)]
    assert errors == []


def test_a_bad_single_record_has_no_index():
    records, errors = decode_message(orjson.dumps(pred(score=2)), "prediction", LIMITS, KAFKA_TIME)
    assert records == []
    assert [(e.field, e.index) for e in errors] == [("score", None)]


def test_each_record_of_a_batch_stands_alone():
    batch = [pred(request_id="a"), pred(score=7), "junk", pred(request_id="d"), {}]
    records, errors = decode_message(orjson.dumps(batch), "prediction", LIMITS, KAFKA_TIME)
    assert [r.request_id for r in records] == ["a", "d"]
    assert [e.index for e in errors] == [1, 2, 4]
    assert str(errors[0]) == 'record 1: field "score" must be a number in [0, 1], got 7'


def test_outcome_batches():
    raw = b'[{"request_id": "a", "outcome": true}, {"request_id": "b"}]'
    records, errors = decode_message(raw, "outcome", LIMITS, KAFKA_TIME)
    assert records == [Outcome("a", True, KAFKA_TIME)]
    assert [(e.index, e.field) for e in errors] == [(1, "outcome")]


@pytest.mark.parametrize(
    ("raw", "limits", "fragment"),
    [
        (None, LIMITS, "tombstone"),
        (b"", LIMITS, "empty"),
        (b" " * 11, LimitsConfig(max_message_bytes=10), "11 bytes, over the limit of 10"),
        (b'{"request_id": "\xff"}', LIMITS, "not valid UTF-8: byte 0xff at offset 16"),
        (b'{"request_id": ', LIMITS, "not valid JSON"),
        (b'{"score": NaN}', LIMITS, "not valid JSON"),
        (b'{"score": 1e400}', LIMITS, "not valid JSON"),
        (b'"\\ud800"', LIMITS, "not valid JSON"),  # lone surrogate
        (b"\xef\xbb\xbf{}", LIMITS, "not valid JSON"),  # byte order mark
        (b"[" * 2000 + b"]" * 2000, LIMITS, "not valid JSON"),  # nesting depth
        (b"42", LIMITS, "got 42"),
        (b'"text"', LIMITS, "got 'text'"),
        (b"null", LIMITS, "got null"),
        (b"[]", LIMITS, "empty array"),
        (
            b"[{}, {}, {}]",
            LimitsConfig(max_records_per_message=2),
            "3 records, over the limit of 2",
        ),
        ("{}", LIMITS, "must be bytes, got str"),
    ],
)
def test_message_level_errors_give_one_error_and_no_records(raw, limits, fragment):
    records, errors = decode_message(raw, "prediction", limits, KAFKA_TIME)
    assert records == []
    assert len(errors) == 1
    assert errors[0].index is None and errors[0].field is None
    assert fragment in errors[0].reason


def test_bytearray_and_memoryview_are_accepted():
    raw = orjson.dumps(pred())
    for value in (bytearray(raw), memoryview(raw)):
        records, errors = decode_message(value, "prediction", LIMITS, KAFKA_TIME)  # type: ignore[arg-type]
        assert len(records) == 1 and errors == []


def test_an_unknown_kind_is_a_programming_error():
    with pytest.raises(ValueError, match="kind must be"):
        decode_message(b"{}", "alert", LIMITS)


def test_a_decoder_bug_becomes_a_record_error_not_a_crash(monkeypatch):
    def broken(obj: object, limits: LimitsConfig, default_time: float | None = None) -> None:
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(codec, "decode_prediction", broken)
    records, errors = decode_message(b"[{}, {}]", "prediction", LIMITS, KAFKA_TIME)
    assert records == []
    assert [e.index for e in errors] == [0, 1]
    assert "internal decoder error" in errors[0].reason and "ZeroDivisionError" in errors[0].reason


@settings(max_examples=500)
@given(raw=st.binary(max_size=512), kind=st.sampled_from(["prediction", "outcome"]))
def test_decode_message_never_raises_on_arbitrary_bytes(raw, kind):
    records, errors = decode_message(raw, kind, LIMITS)
    assert all(isinstance(e, RecordError) and e.reason for e in errors)
    assert records or errors


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
fields = st.sampled_from(
    [
        "request_id",
        "model_id",
        "model_version",
        "prediction",
        "outcome",
        "timestamp",
        "score",
        "probabilities",
        "features",
        "segments",
        "task",
    ]
)
records_like = st.dictionaries(fields, json_values, max_size=8)


@settings(max_examples=150)
@given(
    batch=st.lists(records_like | json_values, min_size=1, max_size=5),
    kind=st.sampled_from(["prediction", "outcome"]),
)
def test_decode_message_accounts_for_every_record_of_a_json_batch(batch, kind):
    raw = json.dumps(batch).encode()  # json, not orjson: big ints serialise too
    records, errors = decode_message(raw, kind, LIMITS, KAFKA_TIME)
    if len(errors) == 1 and errors[0].index is None:
        # Only a parse failure may sink the whole batch: a lone surrogate, or
        # an integer too large for a double, both of which orjson refuses.
        assert "not valid JSON" in errors[0].reason
        return
    assert len(records) + len(errors) == len(batch)
    assert all(e.index is not None for e in errors)


# --------------------------------------------------------------------------- decode_line


def test_decode_line_tells_outcomes_from_predictions():
    assert isinstance(decode_line(pred(timestamp=1), LIMITS), Prediction)
    assert isinstance(
        decode_line({"request_id": "r", "outcome": 0, "timestamp": 1}, LIMITS), Outcome
    )


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        (pred(outcome=1, timestamp=1), "both"),
        ({"request_id": "r", "timestamp": 1}, "neither"),
        ([pred()], "must be a JSON object"),
    ],
)
def test_decode_line_rejects_ambiguous_lines(line, fragment):
    with pytest.raises(RecordError, match=fragment):
        decode_line(line, LIMITS)


def test_decode_line_uses_the_default_time():
    assert decode_line(pred(), LIMITS, default_time=9.0).event_time == 9.0


# --------------------------------------------------------------------------- RecordError


def test_record_error_pickles_with_its_field_and_index():
    err = RecordError("field x is bad", field="x", index=4)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.reason, copy.field, copy.index, str(copy)) == (
        "field x is bad",
        "x",
        4,
        "record 4: field x is bad",
    )

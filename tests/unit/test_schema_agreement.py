"""The JSON Schemas and the runtime decoder must accept exactly the same records.

``schemas/*.json`` are the contract producers validate against;
``driftline.core.codec`` enforces it by hand for speed. Every record of
``tests/data/contract_corpus.json`` goes through both, and both must agree
with each other and with the corpus' own verdict. The schemas encode the
default ``LimitsConfig``, so the decoder runs with the defaults here.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from driftline.core import codec
from driftline.core.codec import RecordError, decode_message, decode_outcome, decode_prediction
from driftline.core.config import LimitsConfig

ROOT = Path(__file__).resolve().parents[2]
LIMITS = LimitsConfig()
KAFKA_TIME = 1_714_564_800.0
DECODERS = {"prediction": decode_prediction, "outcome": decode_outcome}


def load_schema(name: str) -> dict[str, Any]:
    return json.loads((ROOT / "schemas" / f"{name}.v1.json").read_text())


SCHEMAS = {name: load_schema(name) for name in ("prediction", "outcome", "alert")}
VALIDATORS = {name: Draft202012Validator(schema) for name, schema in SCHEMAS.items()}
CORPUS: list[dict[str, Any]] = json.loads(
    (ROOT / "tests" / "data" / "contract_corpus.json").read_text()
)


def schema_verdict(kind: str, record: object) -> tuple[bool, str]:
    errors = list(VALIDATORS[kind].iter_errors(record))
    return not errors, "; ".join(e.message[:120] for e in errors)


def decoder_verdict(kind: str, record: object) -> tuple[bool, str]:
    try:
        DECODERS[kind](record, LIMITS, KAFKA_TIME)
    except RecordError as exc:
        return False, exc.reason
    return True, ""


# --------------------------------------------------------------------------- the schemas


@pytest.mark.parametrize("name", sorted(SCHEMAS))
def test_schema_is_valid_draft_2020_12(name):
    Draft202012Validator.check_schema(SCHEMAS[name])
    assert SCHEMAS[name]["$schema"] == "https://json-schema.org/draft/2020-12/schema"


def test_schemas_encode_the_default_limits_and_the_codec_constants():
    props = SCHEMAS["prediction"]["properties"]
    defs = SCHEMAS["prediction"]["$defs"]
    assert props["features"]["maxProperties"] == LIMITS.max_features
    assert props["probabilities"]["maxProperties"] == LIMITS.max_features
    assert props["segments"]["maxProperties"] == LIMITS.max_segments
    assert defs["requestId"]["maxLength"] == LIMITS.max_id_length
    assert defs["name"]["maxLength"] == LIMITS.max_id_length
    assert defs["segmentValue"]["maxLength"] == LIMITS.max_string_length
    assert defs["modelId"]["maxLength"] == codec.MODEL_ID_MAX_LENGTH
    assert defs["modelVersion"]["maxLength"] == codec.MODEL_VERSION_MAX_LENGTH
    number, string, _ = defs["label"]["anyOf"]
    assert number["maximum"] == -number["minimum"] == codec.MAX_LABEL_NUMBER
    assert string["maxLength"] == LIMITS.max_string_length
    assert defs["timestamp"]["anyOf"][0]["exclusiveMaximum"] == codec.MAX_TIMESTAMP


def test_prediction_and_outcome_share_their_common_definitions():
    pred_defs, out_defs = SCHEMAS["prediction"]["$defs"], SCHEMAS["outcome"]["$defs"]
    for name in out_defs:
        assert out_defs[name] == pred_defs[name], name


def test_unknown_fields_are_allowed_and_the_choice_is_documented():
    for kind in ("prediction", "outcome"):
        assert SCHEMAS[kind].get("additionalProperties", True) is True
        assert "Unknown top-level fields are allowed" in SCHEMAS[kind]["description"]


# --------------------------------------------------------------------------- the corpus


def test_corpus_covers_both_kinds_and_both_verdicts():
    assert len(CORPUS) >= 60
    seen = {(entry["kind"], entry["valid"]) for entry in CORPUS}
    assert seen == {
        ("prediction", True),
        ("prediction", False),
        ("outcome", True),
        ("outcome", False),
    }
    assert len({(entry["kind"], entry["why"]) for entry in CORPUS}) == len(CORPUS), "duplicate why"


@pytest.mark.parametrize(
    "entry",
    CORPUS,
    ids=[f"{i}-{entry['kind']}-{entry['why'][:60]}" for i, entry in enumerate(CORPUS)],
)
def test_schema_and_decoder_agree_with_the_corpus(entry):
    kind, record, expected = entry["kind"], entry["record"], entry["valid"]
    by_schema, schema_why = schema_verdict(kind, record)
    by_decoder, decoder_why = decoder_verdict(kind, record)
    assert by_schema == expected, f"schema says {by_schema}: {schema_why}"
    assert by_decoder == expected, f"decoder says {by_decoder}: {decoder_why}"


def orjson_reads(record: object) -> bool:
    try:
        orjson.loads(json.dumps(record))
    except orjson.JSONDecodeError:
        return False
    return True


def test_records_orjson_cannot_read_are_invalid_anyway():
    # A number beyond the largest double fails the parse, sinking its whole
    # message; the contract rejects it too, so nothing valid is lost.
    unreadable = [entry for entry in CORPUS if not orjson_reads(entry["record"])]
    assert unreadable, "the corpus should hold a number beyond the largest double"
    assert not any(entry["valid"] for entry in unreadable)


@pytest.mark.parametrize("kind", ["prediction", "outcome"])
def test_the_corpus_as_one_batched_message_keeps_every_verdict(kind):
    # Through the bytes path (orjson), each element judged on its own.
    entries = [e for e in CORPUS if e["kind"] == kind and orjson_reads(e["record"])]
    raw = json.dumps([entry["record"] for entry in entries]).encode()
    # No bound on time ahead of the Kafka timestamp: that check needs the
    # message's context (limits.max_time_ahead), which no schema can see.
    limits = dataclasses.replace(LIMITS, max_time_ahead=math.inf)
    records, errors = decode_message(raw, kind, limits, KAFKA_TIME)
    assert [e.index for e in errors] == [i for i, e in enumerate(entries) if not e["valid"]]
    assert len(records) == sum(entry["valid"] for entry in entries)


# --------------------------------------------------------------------------- timestamps


TIMESTAMP = Draft202012Validator(SCHEMAS["prediction"]["$defs"]["timestamp"])


def decoder_accepts_timestamp(value: object) -> bool:
    try:
        codec.parse_timestamp(value)
    except RecordError:
        return False
    return True


@pytest.mark.parametrize("year", [1969, 1970, 1972, 1999, 2000, 2023, 2024, 2100, 2400, 5000, 9999])
def test_timestamp_calendar_agrees_day_by_day(year):
    # The schema spells the calendar out in a regular expression; the decoder
    # asks datetime. Every month and day (and some impossible ones) must agree.
    for month in range(0, 14):
        for day in range(0, 33):
            text = f"{year:04d}-{month:02d}-{day:02d}T00:00:00Z"
            assert TIMESTAMP.is_valid(text) == decoder_accepts_timestamp(text), text


@pytest.mark.parametrize(
    "time", ["23:59:59", "24:00:00", "00:60:00", "12:00:60", "12:00:61", "09:05:07.123456789"]
)
@pytest.mark.parametrize("offset", ["Z", "z", "+00:00", "-23:59", "+24:00", "+05:60", "+0500", ""])
def test_timestamp_time_and_offset_agree(time, offset):
    text = f"2024-05-01T{time}{offset}"
    assert TIMESTAMP.is_valid(text) == decoder_accepts_timestamp(text), text


@settings(max_examples=400)
@given(
    st.from_regex(
        re.compile(
            r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt x][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,11})?"
            r"(Z|[+-][0-9]{2}:?[0-9]{2})?\n?"
        ),
        fullmatch=True,
    )
    | st.text(max_size=30)
)
def test_timestamp_strings_agree(text):
    assert TIMESTAMP.is_valid(text) == decoder_accepts_timestamp(text), repr(text)


# --------------------------------------------------------------------------- random records

# Each field is usually well formed and sometimes junk (or a near miss), so
# that a good share of records get past the first field and every rule is
# exercised on records that are otherwise valid.
MAX_SAFE = codec.MAX_LABEL_NUMBER
printable = st.characters(blacklist_categories=("Cc", "Cs"))  # Cc: the C0 and C1 controls
good_names = st.text(printable, min_size=1, max_size=8)
names = (
    good_names | st.sampled_from(["", "\n", "x" * 256, "x" * 257, "a\u0085"]) | st.text(max_size=6)
)
scalars = (
    st.none()
    | st.booleans()
    | st.sampled_from([0, 1, -1, 0.5, 1.0000001, MAX_SAFE, MAX_SAFE + 1, 2**64, 10**309, 1e308])
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from(["", "eu", "x" * 1024, "x" * 1025, "a\tb", "2024-05-01T12:00:00Z"])
    | st.text(max_size=8)
)
junk = scalars | st.lists(scalars, max_size=2) | st.dictionaries(names, scalars, max_size=3)


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    # Roughly four in five well formed. (st.one_of weighs its branches by
    # their own alternatives, and junk has many, so it would dominate.)
    return st.tuples(st.integers(0, 4), good, junk).map(lambda t: t[2] if t[0] == 0 else t[1])


aware_datetimes = st.datetimes(
    min_value=dt.datetime(1970, 1, 2),
    max_value=dt.datetime(9999, 12, 30),
    timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=-3, minutes=-30))]),
)
labels = (
    st.integers(-MAX_SAFE - 2, MAX_SAFE + 2)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.booleans()
)
random_records = st.fixed_dictionaries(
    {
        "request_id": mostly(st.text(min_size=1, max_size=8)),
        "model_id": mostly(st.from_regex(r"[A-Za-z0-9._:-]{1,8}", fullmatch=True)),
        "prediction": mostly(labels),
        "outcome": mostly(labels),
    },
    optional={
        "model_version": mostly(good_names),
        "timestamp": mostly(
            st.floats(min_value=0, max_value=2e11)
            | st.integers(-1, 2 * 10**11)
            | aware_datetimes.map(dt.datetime.isoformat)
        ),
        "score": mostly(st.floats(min_value=-0.5, max_value=1.5)),
        "probabilities": mostly(
            st.dictionaries(names, st.floats(min_value=-0.1, max_value=1.1) | scalars, max_size=3)
        ),
        "features": mostly(st.dictionaries(names, scalars, max_size=4)),
        "segments": mostly(st.dictionaries(names, st.text(max_size=4) | scalars, max_size=3)),
        "task": mostly(st.sampled_from(["binary", "multiclass", "regression", "Binary"])),
        "extra": junk,
    },
)


@settings(max_examples=500, deadline=None)
@given(record=random_records, kind=st.sampled_from(["prediction", "outcome"]))
def test_schema_and_decoder_agree_on_random_records(record, kind):
    by_schema, schema_why = schema_verdict(kind, record)
    by_decoder, decoder_why = decoder_verdict(kind, record)
    assert by_schema == by_decoder, f"schema: {schema_why!r}; decoder: {decoder_why!r}"


# --------------------------------------------------------------------------- alerts


def sample_alert() -> dict[str, Any]:
    return {
        "alert_id": "0f8e2c1a-7d1b-4b5e-9a55-0d3c2b1a9f00",
        "dedup_key": "fraud/v2/accuracy_threshold/region=eu",
        "status": "firing",
        "severity": "critical",
        "kind": "performance",
        "model_id": "fraud",
        "model_version": "v2",
        "segment": {"region": "eu"},
        "monitor": "accuracy_threshold",
        "summary": "Rolling accuracy of fraud v2 (region=eu) is 0.71, below 0.80 for 50 outcomes.",
        "value": 0.71,
        "threshold": 0.8,
        "baseline": None,
        "window": {"events": 1000, "start": 1714560000.0, "end": 1714564800.0},
        "event_time": 1714564800.0,
        "emitted_at": 1714564801.2,
        "evidence": {"metric": "accuracy", "window": 1000, "for_events": 50},
    }


def test_sample_alert_is_valid():
    VALIDATORS["alert"].validate(sample_alert())


def test_resolved_whole_model_alert_with_nulls_is_valid():
    alert = sample_alert() | {
        "status": "resolved",
        "severity": "info",
        "kind": "label_coverage",
        "segment": None,
        "value": None,
        "threshold": None,
        "baseline": 0.97,
    }
    VALIDATORS["alert"].validate(alert)


@pytest.mark.parametrize(
    "change",
    [
        {"status": "open"},
        {"severity": "high"},
        {"kind": "vibes"},
        {"model_id": "fraud model"},
        {"summary": "x" * 1025},
        {"summary": ""},
        {"value": "0.71"},
        {"threshold": True},
        {"window": {"events": -1, "start": 0, "end": 1}},
        {"window": {"events": 1.5, "start": 0, "end": 1}},
        {"window": {"events": 10, "start": 0}},
        {"event_time": "2024-05-01T12:00:00Z"},
        {"evidence": None},
        {"segment": {"region": 3}},
    ],
    ids=lambda change: next(iter(change)),
)
def test_broken_alerts_are_rejected(change):
    assert not VALIDATORS["alert"].is_valid(sample_alert() | change)


@pytest.mark.parametrize("field", sorted(SCHEMAS["alert"]["required"]))
def test_every_alert_field_is_required(field):
    alert = sample_alert()
    del alert[field]
    assert not VALIDATORS["alert"].is_valid(alert)

"""The hostile-input corpus (``driftline.hostile``) against the codec, kind by kind.

The integration test and ``scripts/hostile_input.py`` send this corpus
through a real worker; here every verdict the corpus states is checked
against :func:`~driftline.core.codec.decode_message` directly, with the
Kafka timestamp the worker would pass, so a wrong expectation (or a codec
change) shows up in a second rather than in a broker run.
"""

from __future__ import annotations

import time

import orjson
import pytest

from driftline.core.codec import decode_message
from driftline.core.config import LimitsConfig
from driftline.hostile import (
    GOOD_MODEL,
    HOSTILE_MODEL,
    KINDS,
    Context,
    build_samples,
    flood_samples,
    good_pair,
)

NOW = 1_714_564_800.0
CTX = Context(now=NOW)
SAMPLES = list(build_samples(CTX))


def decode(message, limits=CTX.limits):
    kind = "prediction" if message.topic == "predictions" else "outcome"
    return decode_message(message.value, kind, limits, default_time=NOW)


def test_there_are_at_least_30_kinds_with_unique_names():
    names = [k.name for k in KINDS]
    assert len(names) >= 30
    assert len(set(names)) == len(names)
    refused = [s for s in SAMPLES if s.refused]
    accepted = [s for s in SAMPLES if s.accepted]
    assert len(refused) >= 30 and len(accepted) >= 5


@pytest.mark.parametrize("sample", SAMPLES, ids=[s.kind for s in SAMPLES])
def test_the_codec_gives_every_verdict_the_corpus_states(sample):
    reasons, accepted = [], []
    for i, message in enumerate(sample.messages):
        records, errors = decode(message)
        if errors:
            assert i == 0, "a sample's refusals are all in its first message"
        reasons += [e.reason for e in errors]
        accepted += [r.request_id for r in records if message.topic == "predictions"]
    assert len(reasons) == len(sample.refused), reasons[:3]
    for reason, fragment in zip(reasons, sample.refused, strict=True):
        assert fragment in reason
    # Retried records decode twice; the join counts the second as a duplicate.
    assert sorted(set(accepted)) == sorted(sample.accepted)
    assert len(accepted) == len(sample.accepted) + sample.duplicates


@pytest.mark.parametrize("sample", [s for s in SAMPLES if s.accepted], ids=lambda s: s.kind)
def test_every_accepted_prediction_has_its_outcome_in_the_sample(sample):
    outcomes = set()
    for message in sample.messages:
        if message.topic == "outcomes":
            records, errors = decode(message)
            assert not errors
            outcomes.update(r.request_id for r in records)
    assert outcomes == set(sample.accepted)


def test_size_kinds_sit_on_either_side_of_the_configured_limit():
    limits = LimitsConfig(max_message_bytes=200_000)
    ctx = Context(now=NOW, limits=limits)
    by_kind = {s.kind: s for s in build_samples(ctx)}
    over = by_kind["multi_megabyte"].messages[0].value
    under = by_kind["just_under_the_size_limit"].messages[0].value
    assert len(over) > limits.max_message_bytes
    assert limits.max_message_bytes - 2_000 < len(under) <= limits.max_message_bytes
    records, errors = decode(by_kind["just_under_the_size_limit"].messages[0], limits)
    assert not errors and len(records) == len(by_kind["just_under_the_size_limit"].accepted)


def test_copies_never_share_a_request_id():
    samples = list(build_samples(CTX, repeat=3))
    ids = [rid for s in samples for rid in s.accepted]
    assert len(ids) == len(set(ids)) == 3 * sum(len(s.accepted) for s in SAMPLES)


def test_the_far_future_kind_is_valid_by_schema_but_refused_against_the_kafka_time():
    sample = next(s for s in SAMPLES if s.kind == "timestamp_year_9999")
    record = orjson.loads(sample.messages[0].value)
    assert record["timestamp"].startswith("9999-")
    records, errors = decode_message(sample.messages[0].value, "prediction", CTX.limits)
    assert records and not errors  # no Kafka time: nothing to compare with


def test_good_pairs_decode_and_name_the_good_model():
    pred, out = good_pair(CTX, "g-1", 1)
    (p,), errors = decode_message(pred, "prediction", CTX.limits, NOW)
    assert not errors and p.model_id == GOOD_MODEL and p.request_id == "g-1"
    (o,), errors = decode_message(out, "outcome", CTX.limits, NOW)
    assert not errors and o.request_id == "g-1"


def test_floods_are_valid_records_each_naming_something_new():
    floods = {f.kind: f for f in flood_samples(CTX, models=30, versions=12, feature_records=5)}
    models = floods["model_id_flood"]
    assert len(models.pairs) == 30 and len(models.model_ids) == 30
    assert models.reason == "model limit reached"
    versions = set()
    for _, pred, out in floods["model_version_flood"].pairs:
        (p,), errors = decode_message(pred, "prediction", CTX.limits, NOW)
        assert not errors
        versions.add(p.model_key)
        assert not decode_message(out, "outcome", CTX.limits, NOW)[1]
    assert len(versions) == 12
    names = set()
    for _, pred, _ in floods["feature_name_flood"].pairs:
        (p,), errors = decode_message(pred, "prediction", CTX.limits, NOW)
        assert not errors and p.features is not None
        names.update(p.features)
    assert len(names) == 5 * 100
    assert floods["feature_name_flood"].reason is None
    assert HOSTILE_MODEL not in models.model_ids


def test_building_the_whole_corpus_is_quick():
    started = time.perf_counter()
    list(build_samples(CTX, repeat=3))
    assert time.perf_counter() - started < 5.0

"""A dead letter must always be sendable, whatever the message that caused it.

Faust's producer refuses a record over 1,000,000 bytes and the send error
crashes the join agent, which stops every partition: before these bounds, a
3 MB message, a just-under-1 MiB batch with one bad record, or a batch of
10,000 bad records (a megabyte of reason headers) each stopped the worker.
The size is checked with aiokafka's own estimate, the one its producer uses.
"""

from __future__ import annotations

import orjson
import pytest
from aiokafka.record.default_records import DefaultRecordBatchBuilder

from driftline.core.codec import RecordError, decode_message
from driftline.core.config import LimitsConfig
from driftline.core.events import Prediction
from driftline.streaming.deadletter import (
    MAX_DEAD_LETTER_BYTES,
    MAX_REASON_BYTES,
    MAX_REASONS,
    dead_letter,
    reason_code,
    refused_predictions,
)

FAUST_MAX_REQUEST_SIZE = 1_000_000
TOPIC = "dl-hostile-0123456789-predictions"


def size(dl) -> int:
    return DefaultRecordBatchBuilder.estimate_size_in_bytes(dl.key, dl.value, dl.headers)


def letter(value, key=None, errors=None):
    if errors is None:
        _, errors = decode_message(value, "prediction", LimitsConfig(), default_time=1.0)
    return dead_letter(
        value=value, key=key, topic=TOPIC, partition=3, offset=1_234_567, errors=errors
    )


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (b"x" * 3_000_000, None),  # over limits.max_message_bytes
        # Just under limits.max_message_bytes, and every one of its 10,000 records bad.
        (
            b"[" + b",".join([b'{"request_id": 1, "pad": "' + b"p" * 74 + b'"}'] * 10_000) + b"]",
            None,
        ),
        (b"x" * 999_000, b"k" * 600_000),  # a huge key as well
        (b"[" + b",".join([b"{}"] * 10_000) + b"]", None),  # 10,000 reasons
    ],
)
def test_every_dead_letter_fits_the_producer_limit(value, key):
    dl = letter(value, key)
    assert size(dl) <= MAX_DEAD_LETTER_BYTES < FAUST_MAX_REQUEST_SIZE
    refused = dict(dl.headers)["driftline-refused-records"]
    assert int(refused) >= 1


def test_a_small_message_is_kept_byte_for_byte():
    value = b'{"request_id": "r1", "model_id": "m", "prediction": 1, "score": 7}'
    dl = letter(value, key=b"r1")
    assert dl.value == value and dl.key == b"r1"
    assert "driftline-truncated" not in dict(dl.headers)


def test_a_cut_value_says_so_and_where_the_whole_message_is():
    dl = letter(b"x" * 3_000_000)
    headers = dict(dl.headers)
    assert dl.value == b"x" * len(dl.value)
    assert headers["driftline-truncated"].startswith(b"value cut from 3000000 bytes to ")
    assert headers["driftline-source-offset"] == b"1234567"
    assert dl.reasons() == [
        f"{TOPIC}: message at partition 3 offset 1234567: message is 3000000 bytes,"
        " over the limit of 1048576"
    ]


def test_reasons_past_the_bound_are_counted_not_listed():
    errors = [RecordError(f'field "request_id" is missing ({i})', index=i) for i in range(10_000)]
    dl = letter(b"[]", errors=errors)
    headers = dict(dl.headers)
    assert len(dl.reasons()) == MAX_REASONS
    assert headers["driftline-refused-records"] == b"10000"
    assert headers["driftline-reasons-omitted"] == str(10_000 - MAX_REASONS).encode()
    last = MAX_REASONS - 1
    assert dl.reasons()[-1].endswith(f'record {last}: field "request_id" is missing ({last})')


def test_a_long_reason_is_cut():
    dl = letter(b"{}", errors=[RecordError("é" * 5_000)])
    (reason,) = [v for k, v in dl.headers if k == "driftline-reason"]
    assert len(reason) <= MAX_REASON_BYTES and reason.endswith(b"...")
    reason.decode()  # still valid UTF-8: not cut inside a character


def test_monitor_refusals_become_one_dead_letter_of_re_sendable_records():
    p1 = Prediction("r1", "flood-1", 1, 5.0, "v1", score=0.5, segments={"r": "x"})
    p2 = Prediction("r2", "flood-2", "cat", 6.0, features={"f": None})
    refused = [(p1, "model limit reached: a"), (p2, "version limit reached: b")]
    dl = refused_predictions(refused, key=b"flood", topic="me", partition=1, offset=42)
    records = orjson.loads(dl.value)
    assert [r["request_id"] for r in records] == ["r1", "r2"]
    assert records[0] == {
        "request_id": "r1",
        "model_id": "flood-1",
        "model_version": "v1",
        "timestamp": 5.0,
        "prediction": 1,
        "score": 0.5,
        "segments": {"r": "x"},
    }
    decoded, errors = decode_message(dl.value, "prediction", LimitsConfig(), default_time=6.0)
    assert not errors and [p.request_id for p in decoded] == ["r1", "r2"]
    headers = dict(dl.headers)
    assert headers["driftline-stage"] == b"monitor"
    assert dl.reasons() == [
        "me: message at partition 1 offset 42 record 0: model limit reached: a",
        "me: message at partition 1 offset 42 record 1: version limit reached: b",
    ]
    assert dl.code == "model_limit"
    assert reason_code(RecordError("version limit reached: x")) == "version_limit"

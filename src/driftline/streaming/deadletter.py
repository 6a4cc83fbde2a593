"""Dead-letter records: the original bytes, untouched, and why they were refused."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from driftline.core.codec import RecordError
from driftline.core.events import Prediction
from driftline.core.wire import WireError

# Record fields of the contract (schemas/): the only ones a reason code may name.
_FIELDS = frozenset(
    {
        "request_id",
        "model_id",
        "model_version",
        "prediction",
        "outcome",
        "score",
        "probabilities",
        "features",
        "segments",
        "timestamp",
        "task",
    }
)
_FIELD = re.compile(r'field "([a-z_]+)"')
# Message-level reasons (codec.py), by the words that start them.
_MESSAGE_REASONS = (
    ("message has no value", "tombstone"),
    ("message is empty", "empty_message"),
    ("message is not valid UTF-8", "invalid_utf8"),
    ("message is not valid JSON", "invalid_json"),
    ("message is an empty array", "empty_array"),
    ("message is an array of", "too_many_records"),
    ("message must be a JSON object", "not_an_object"),
    ("a prediction must be a JSON object", "not_an_object"),
    ("an outcome must be a JSON object", "not_an_object"),
    ("message value must be bytes", "not_bytes"),
    ("internal decoder error", "internal_error"),
    ("model limit reached", "model_limit"),
    ("version limit reached", "version_limit"),
)
_TOO_LARGE = re.compile(r"^message is \d+ bytes, over the limit")

MAX_DEAD_LETTER_BYTES = 1_000_000 - 16_384
"""Largest dead letter sent (value, key and headers), with room for record overhead.

Faust's producer refuses a message over ``producer_max_request_size``
(1,000,000 bytes by default) and brokers one over ``message.max.bytes``
(1,048,588); a failed send crashes the join agent, so one oversized
message would stop every partition. A source message bigger than this
(an input topic may allow more than the dead-letter topic) is cut, and
``driftline-truncated`` says so: its whole bytes stay on the source topic
at the partition and offset the headers give, for that topic's retention.
"""

MAX_REASONS = 100
"""``driftline-reason`` headers per dead letter.

A batch of 10,000 bad records would otherwise carry a megabyte of headers;
past this many, ``driftline-reasons-omitted`` counts the rest (and
``driftline-refused-records`` always counts them all).
"""

MAX_REASON_BYTES = 1_024
"""A reason header is cut to this many bytes."""

_MAX_KEY_BYTES = 4_096  # a key is cut to this, when the dead letter must shrink


def reason_code(err: Exception) -> str:
    """A short, stable code for why a record was refused, for metric labels.

    The reason text names the offending value, so it cannot be a label: one
    series per distinct bad value would have no bound. The code names only
    the field and whether it was missing or wrong (``missing_request_id``,
    ``invalid_score``), or the message-level problem (``invalid_json``):
    a few dozen values in all. ``other`` for anything not recognised.

    >>> from driftline.core.codec import RecordError
    >>> reason_code(RecordError('field "score" must be a number in [0, 1], got 1.7', field="score"))
    'invalid_score'
    >>> reason_code(RecordError('field "request_id" is missing', field="request_id"))
    'missing_request_id'
    >>> reason_code(RecordError("message is not valid JSON: unexpected character"))
    'invalid_json'
    """
    if isinstance(err, WireError):
        return "bad_model_event"
    reason = getattr(err, "reason", None) or str(err)
    field = getattr(err, "field", None)
    if field is None and (m := _FIELD.match(reason)):
        field = m.group(1)
    if field is not None:
        if field not in _FIELDS:
            return "invalid_field"
        missing = reason == f'field "{field}" is missing'
        return f"{'missing' if missing else 'invalid'}_{field}"
    for start, code in _MESSAGE_REASONS:
        if reason.startswith(start):
            return code
    if _TOO_LARGE.match(reason):
        return "message_too_large"
    return "other"


@dataclass(slots=True)
class DeadLetter:
    """The dead-letter record for one source message.

    ``code`` is the :func:`reason_code` of the first refused record: the
    ``reason`` label of ``driftline_dead_letters_total``.
    """

    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]]
    code: str = "other"

    def reasons(self) -> list[str]:
        return [v.decode() for k, v in self.headers if k == "driftline-reason"]


def dead_letter(
    *,
    value: bytes | None,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    errors: Sequence[Exception],
    stage: str = "decode",
) -> DeadLetter:
    """The dead-letter record for the message at topic/partition/offset.

    The value is the source message's bytes exactly as read, so it can be
    fixed and re-sent. Headers say where it came from and, once per refused
    record, why: a batched message with three bad records of a hundred
    gives one dead letter with three ``driftline-reason`` headers (the other
    97 records were processed). Hostile input must not make the dead letter
    itself unsendable: past :data:`MAX_REASONS` reasons the rest are
    counted, and a message over :data:`MAX_DEAD_LETTER_BYTES` is cut
    (``driftline-truncated``).

    >>> from driftline.core.codec import RecordError
    >>> dl = dead_letter(value=b"{}", key=None, topic="predictions", partition=3,
    ...                  offset=1842, errors=[RecordError('missing field "request_id"')])
    >>> dl.reasons()
    ['predictions: message at partition 3 offset 1842: missing field "request_id"']
    """
    where = f"{topic}: message at partition {partition} offset {offset}"
    headers = [
        ("driftline-source-topic", topic.encode()),
        ("driftline-source-partition", str(partition).encode()),
        ("driftline-source-offset", str(offset).encode()),
        ("driftline-stage", stage.encode()),
        ("driftline-error-class", type(errors[0]).__name__.encode() if errors else b""),
        ("driftline-refused-records", str(len(errors)).encode()),
    ]
    for err in errors[:MAX_REASONS]:
        reason = getattr(err, "reason", None) or str(err) or type(err).__name__
        index = getattr(err, "index", None)
        at = where if index is None else f"{where} record {index}"
        text = f"{at}: {reason}".encode()
        if len(text) > MAX_REASON_BYTES:
            text = text[: MAX_REASON_BYTES - 3].decode(errors="ignore").encode() + b"..."
        headers.append(("driftline-reason", text))
    if len(errors) > MAX_REASONS:
        headers.append(("driftline-reasons-omitted", str(len(errors) - MAX_REASONS).encode()))
    value, key = _fit(value, key, headers)
    return DeadLetter(value, key, headers, reason_code(errors[0]) if errors else "other")


def _fit(
    value: bytes | None, key: bytes | None, headers: list[tuple[str, bytes]]
) -> tuple[bytes | None, bytes | None]:
    """Cut ``value`` (and a long ``key``) so the dead letter fits :data:`MAX_DEAD_LETTER_BYTES`.

    Adds a ``driftline-truncated`` header when it cuts anything.

    >>> headers = []
    >>> value, key = _fit(b"x" * 3_000_000, b"k", headers)
    >>> len(value) < MAX_DEAD_LETTER_BYTES, key, headers[0][1][:38]
    (True, b'k', b'value cut from 3000000 bytes to 983359')
    """
    size_v, size_k = len(value or b""), len(key or b"")
    fixed = sum(len(k) + len(v) + 16 for k, v in headers) + 256
    if size_v + size_k + fixed <= MAX_DEAD_LETTER_BYTES:
        return value, key
    if key is not None and size_k > _MAX_KEY_BYTES:
        key = key[:_MAX_KEY_BYTES]
    room = max(0, MAX_DEAD_LETTER_BYTES - fixed - len(key or b""))
    if value is not None:
        value = value[:room]
    headers.append(
        (
            "driftline-truncated",
            f"value cut from {size_v} bytes to {len(value or b'')}, key from {size_k} bytes"
            f" to {len(key or b'')}: the whole message is at the source topic, partition"
            " and offset".encode(),
        )
    )
    return value, key


def refused_predictions(
    refused: Sequence[tuple[Prediction, str]],
    *,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
) -> DeadLetter:
    """The dead letter for predictions the monitors refused (``limits.max_models``).

    These records were valid: decoded and joined in the first stage, they
    reach the monitor stage as model events, where a cardinality cap turns
    them away. The source message held other records, processed already,
    so the value is not its bytes but the refused predictions written back
    as JSON records (an array, in order), fit to re-send; the headers name
    the model-event message they came in.

    >>> from driftline.core.events import Prediction
    >>> dl = refused_predictions(
    ...     [(Prediction("r1", "m-77", 1, 5.0), "model limit reached: ...")],
    ...     key=b"m-77", topic="model-events", partition=0, offset=9)
    >>> dl.value, dl.code
    (b'[{"request_id":"r1","model_id":"m-77","model_version":"unversioned","timestamp":5.0,"prediction":1}]', 'model_limit')
    """  # noqa: E501
    records = []
    for p, _ in refused:
        record = {
            "request_id": p.request_id,
            "model_id": p.model_id,
            "model_version": p.model_version,
            "timestamp": p.event_time,
            "prediction": p.prediction,
            "score": p.score,
            "probabilities": p.probabilities,
            "features": p.features,
            "segments": p.segments,
            "task": p.task,
        }
        records.append({k: v for k, v in record.items() if v is not None})
    errors = [RecordError(reason, index=i) for i, (_, reason) in enumerate(refused)]
    return dead_letter(
        value=orjson.dumps(records),
        key=key,
        topic=topic,
        partition=partition,
        offset=offset,
        errors=errors,
        stage="monitor",
    )

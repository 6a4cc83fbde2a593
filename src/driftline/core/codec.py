"""Decode prediction and outcome messages: the runtime half of the data contracts.

``schemas/prediction.v1.json`` and ``schemas/outcome.v1.json`` are the single
source of truth; this module enforces the same rules by hand, because a JSON
Schema validator costs tens of microseconds a record and the decoder sits on
the hot path of every message. ``tests/unit/test_schema_agreement.py`` runs a
corpus of good and hostile records through both and fails if they ever
disagree, so the two cannot drift apart silently.

A Kafka message value is one JSON object or a JSON array of them (a
producer that batches). :func:`decode_message` never raises for any bytes:
a bad message or a bad record becomes a :class:`RecordError` whose
``reason`` names the field, ready for the dead letter, and the good records
of a batch still go through.

>>> from driftline.core.config import LimitsConfig
>>> raw = b'''[{"request_id": "r1", "model_id": "fraud", "prediction": 1, "score": 0.92},
...            {"request_id": "r2", "model_id": "fraud", "prediction": 1, "score": 1.7}]'''
>>> records, errors = decode_message(raw, "prediction", LimitsConfig(), default_time=1714564800.0)
>>> [(r.request_id, r.score, r.model_version) for r in records]
[('r1', 0.92, 'unversioned')]
>>> print(errors[0])
record 1: field "score" must be a number in [0, 1], got 1.7

Contract decisions (the schemas say the same in their descriptions):

- Unknown fields are accepted and ignored: producers evolve before the
  monitor does, and dead-lettering every record of a producer that added a
  field would blind the monitor exactly when a model changes.
- An optional field set to ``null`` counts as absent (many serialisers
  write ``None`` rather than leaving a key out).
- Booleans are never numbers, and NaN and infinities are rejected
  everywhere.
- What orjson cannot parse sinks the whole message, batch included:
  ``NaN`` and ``Infinity`` literals (not JSON), numbers beyond the largest
  double, lone surrogate escapes, nesting deeper than 1024. Every record
  holding one of these is invalid anyway; all other faults are per record.
- A numeric label must lie within +-(2**53 - 1): beyond that a float cannot
  tell two integer class ids apart, and orjson reads integers beyond 64
  bits as floats. Feature values only need to fit a double.
- Names (feature names, segment names and values, probability labels,
  model versions) may not contain control characters, because they end up
  in metric labels, logs and state keys. ``request_id`` is an opaque join
  key: any characters.
- Labels are kept exactly as sent: no coercion between ``1``, ``1.0``,
  ``"1"`` and ``true``.
- In a Kafka message, a record stamped more than ``limits.max_time_ahead``
  seconds after the message's own timestamp is refused, though the schema
  allows any time up to 9999: event time drives the join's expiry, so one
  record from the far future would expire every pending prediction of the
  worker at once. (Without a message timestamp there is nothing to check
  against.)
"""

from __future__ import annotations

import re
import sys
from datetime import date
from typing import Any, Final, Literal, overload

import orjson

from driftline.core.config import LimitsConfig
from driftline.core.events import DEFAULT_VERSION, TASKS, Outcome, Prediction

__all__ = [
    "MAX_LABEL_NUMBER",
    "MAX_TIMESTAMP",
    "MODEL_ID_MAX_LENGTH",
    "MODEL_VERSION_MAX_LENGTH",
    "RFC3339_PATTERN",
    "RecordError",
    "decode_line",
    "decode_message",
    "decode_outcome",
    "decode_prediction",
    "named_model",
    "parse_timestamp",
]

MODEL_ID_MAX_LENGTH: Final = 128
"""``model_id`` is 1 to this many characters of ``[A-Za-z0-9._:-]`` (fixed by the contract)."""

MODEL_VERSION_MAX_LENGTH: Final = 128
"""``model_version`` is 1 to this many characters without control characters."""

MAX_LABEL_NUMBER: Final = 2**53 - 1
"""Largest magnitude of a numeric label: the last integer a double holds exactly."""

MAX_TIMESTAMP: Final = 1e11
"""Epoch seconds at or above this (year 5138) are taken to be milliseconds: rejected."""

_MAX_DOUBLE: Final = sys.float_info.max

RFC3339_PATTERN: Final = (
    r"([0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]([0-9]{2}:[0-9]{2}):([0-9]{2})(\.[0-9]{1,9})?"
    r"([Zz]|[+-][0-9]{2}:[0-9]{2})"
)
"""The shape of a date-time string; the ranges of its parts are checked in code.

RFC 3339 with an offset required (a time without one is ambiguous), ``T``,
``t`` or a space between date and time, and at most nine fractional digits.
The schemas' ``pattern`` spells the ranges out in the regular expression
itself (months, days per month, leap years, years 1970 to 9999).
"""

_RFC3339 = re.compile(RFC3339_PATTERN)
_MODEL_ID_BAD = re.compile(r"[^A-Za-z0-9._:\-]")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
_SHOW_CHARS: Final = 40

# Strings already found valid. Model ids, versions, feature and segment
# names repeat on nearly every record, so checking each once and then
# testing set membership (one C-level subset test for a whole feature
# dict) keeps the hot path cheap. Keyed by the length bound they were
# checked against; cleared when full, so a producer inventing a new name
# per record costs speed, never memory.
_CACHE_MAX: Final = 65_536
_KNOWN_MODEL_IDS: set[str] = set()
_KNOWN_VERSIONS: set[str] = set()
_KNOWN_NAMES: dict[int, set[str]] = {}
_KNOWN_SEGMENT_VALUES: dict[int, set[str]] = {}


class RecordError(ValueError):
    """One record (or a whole message) broke the contract.

    Parameters
    ----------
    reason
        What was wrong, naming the field, such as
        ``field "score" must be a number in [0, 1], got 1.7``. It is what
        the dead letter and the logs show, so it reads on its own.
    field
        The top-level field at fault, when there is one (``"score"``,
        ``"features"``); ``None`` for message-level errors. Handy for
        counting errors by field without parsing ``reason``.
    index
        The record's position inside a batched JSON array, ``None`` for a
        single-record message or a message-level error.

    >>> err = RecordError('field "score" must be a number in [0, 1], got 1.7', field="score")
    >>> err.reason == str(err), err.index
    (True, None)
    >>> err.index = 3
    >>> str(err)
    'record 3: field "score" must be a number in [0, 1], got 1.7'
    """

    def __init__(self, reason: str, *, field: str | None = None, index: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.index = index

    def __str__(self) -> str:
        if self.index is None:
            return self.reason
        return f"record {self.index}: {self.reason}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep field and index across pickling (process pools, test workers).
        return (_rebuild_error, (self.reason, self.field, self.index))


def _rebuild_error(reason: str, field: str | None, index: int | None) -> RecordError:
    return RecordError(reason, field=field, index=index)


# --------------------------------------------------------------------------- helpers


def _show(value: object) -> str:
    """A short, printable rendering of an offending value for a reason string.

    Hostile input must not turn a reason into a megabyte or a terminal
    escape sequence: strings are cut and ``repr``-escaped, containers are
    named, not dumped.
    """
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        if len(value) > _SHOW_CHARS:
            return f"{value[:_SHOW_CHARS]!r}... ({len(value)} characters)"
        return repr(value)
    if isinstance(value, int):
        if value.bit_length() > 64:  # repr() of a huge int is slow, or refused
            return f"an integer of {value.bit_length()} bits"
        return repr(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return f"a {type(value).__name__}"


def _known(cache: dict[int, set[str]], bound: int) -> set[str]:
    known = cache.get(bound)
    if known is None:
        known = cache[bound] = set()
    return known


def _remember(known: set[str], text: str) -> None:
    if len(known) >= _CACHE_MAX:
        known.clear()
    known.add(text)


def _missing(field: str) -> RecordError:
    return RecordError(f'field "{field}" is missing', field=field)


def _check_request_id(obj: dict[str, Any], limits: LimitsConfig) -> str:
    value = obj.get("request_id")
    if type(value) is str and 0 < len(value) <= limits.max_id_length:
        return value
    if "request_id" not in obj:
        raise _missing("request_id")
    raise RecordError(
        f'field "request_id" must be a string of 1 to {limits.max_id_length} characters, '
        f"got {_show(value)}",
        field="request_id",
    )


def _check_model_id(obj: dict[str, Any], required: bool) -> str | None:
    value = obj.get("model_id")
    if type(value) is str:
        if value in _KNOWN_MODEL_IDS:
            return value
        if 0 < len(value) <= MODEL_ID_MAX_LENGTH and not _MODEL_ID_BAD.search(value):
            _remember(_KNOWN_MODEL_IDS, value)
            return value
    elif value is None and not required:
        return None
    elif "model_id" not in obj:
        raise _missing("model_id")
    raise RecordError(
        f'field "model_id" must be 1 to {MODEL_ID_MAX_LENGTH} characters of A-Z a-z 0-9 . _ : -, '
        f"got {_show(value)}",
        field="model_id",
    )


def _check_version(value: object) -> str:
    if value is None:
        return DEFAULT_VERSION
    if type(value) is str:
        if value in _KNOWN_VERSIONS:
            return value
        if 0 < len(value) <= MODEL_VERSION_MAX_LENGTH and not _CONTROL.search(value):
            _remember(_KNOWN_VERSIONS, value)
            return value
    raise RecordError(
        f'field "model_version" must be a string of 1 to {MODEL_VERSION_MAX_LENGTH} characters '
        f"without control characters, got {_show(value)}",
        field="model_version",
    )


def _check_label(value: object, field: str, limits: LimitsConfig) -> None:
    kind = type(value)
    if kind is str:
        if len(value) <= limits.max_string_length:  # type: ignore[arg-type]
            return
        problem = (
            f"is a string of {len(value)} characters, "  # type: ignore[arg-type]
            f"over the limit of {limits.max_string_length}"
        )
    elif kind is int or kind is float:
        # The chained comparison is False for NaN, so it rejects NaN and +-inf too.
        if -MAX_LABEL_NUMBER <= value <= MAX_LABEL_NUMBER:  # type: ignore[operator]
            return
        problem = (
            "must be a number within +-(2**53 - 1), where doubles hold integers exactly, "
            f"got {_show(value)}"
        )
    elif kind is bool:
        return
    else:
        problem = f"must be a number, string or boolean, got {_show(value)}"
    raise RecordError(f'field "{field}" {problem}', field=field)


def _check_names(mapping: dict[Any, Any], field: str, known: set[str], bound: int) -> None:
    """Slow path: find the key of ``mapping`` that is not a valid name, or learn them all."""
    for key in mapping:
        if key in known:
            continue
        if type(key) is not str or not 0 < len(key) <= bound or _CONTROL.search(key):
            raise RecordError(
                f'field "{field}" has key {_show(key)}; keys must be 1 to {bound} characters '
                "without control characters",
                field=field,
            )
        _remember(known, key)


def _check_features(features: object, limits: LimitsConfig) -> dict[str, Any] | None:
    if features is None:
        return None
    if type(features) is not dict:
        raise RecordError(
            f'field "features" must be an object, got {_show(features)}', field="features"
        )
    if len(features) > limits.max_features:
        raise RecordError(
            f'field "features" has {len(features)} entries, '
            f"over the limit of {limits.max_features}",
            field="features",
        )
    known = _known(_KNOWN_NAMES, limits.max_id_length)
    if not known.issuperset(features):
        _check_names(features, "features", known, limits.max_id_length)
    values = features.values()
    try:
        # Fast path for all-numeric features, in one C loop: the sum is finite
        # only if every value is a finite number no larger than a double (a
        # sum that overflows from finite values is just sent the long way).
        # Strings, None and nested values raise TypeError and go the long way.
        total = sum(values, 0.0)
        if total - total == 0.0:
            return features
    except (TypeError, OverflowError):
        pass
    max_string = limits.max_string_length
    # Hot loop: values only; the key of a bad value is looked up afterwards.
    for value in values:
        kind = type(value)
        if kind is float:
            if value - value:  # nan for NaN and +-inf, 0.0 (falsy) otherwise
                break
        elif kind is str:
            if len(value) > max_string:
                break
        elif kind is int:
            if not -_MAX_DOUBLE <= value <= _MAX_DOUBLE:
                break
        elif kind is not bool and value is not None:
            break
    else:
        return features
    for key, value in features.items():
        kind = type(value)
        if kind is float and value - value:
            problem = "must be finite"
        elif kind is str and len(value) > max_string:
            problem = f"is a string of {len(value)} characters, over the limit of {max_string}"
        elif kind is int and not -_MAX_DOUBLE <= value <= _MAX_DOUBLE:
            problem = "is too large for a double"
        elif kind not in (float, str, int, bool) and value is not None:
            problem = "must be a number, string, boolean or null"
        else:
            continue
        raise RecordError(
            f'field "features" key {_show(key)} {problem}, got {_show(value)}', field="features"
        )
    raise AssertionError("unreachable: a feature value failed the fast check only")


def _check_probabilities(value: object, limits: LimitsConfig) -> dict[str, float] | None:
    if value is None:
        return None
    if type(value) is not dict or not 0 < len(value) <= limits.max_features:
        size = f"{len(value)} entries" if type(value) is dict else _show(value)
        raise RecordError(
            f'field "probabilities" must be an object of 1 to {limits.max_features} entries, '
            f"got {size}",
            field="probabilities",
        )
    known = _known(_KNOWN_NAMES, limits.max_id_length)
    if not known.issuperset(value):
        _check_names(value, "probabilities", known, limits.max_id_length)
    for key, p in value.items():
        kind = type(p)
        if (kind is not float and kind is not int) or not 0.0 <= p <= 1.0:
            raise RecordError(
                f'field "probabilities" key {_show(key)} must be a number in [0, 1], '
                f"got {_show(p)}",
                field="probabilities",
            )
    return value


def _check_segments(value: object, limits: LimitsConfig) -> dict[str, str] | None:
    if value is None:
        return None
    if type(value) is not dict or len(value) > limits.max_segments:
        size = f"{len(value)} entries" if type(value) is dict else _show(value)
        raise RecordError(
            f'field "segments" must be an object of at most {limits.max_segments} entries, '
            f"got {size}",
            field="segments",
        )
    known = _known(_KNOWN_NAMES, limits.max_id_length)
    bound = limits.max_string_length
    known_values = _known(_KNOWN_SEGMENT_VALUES, bound)
    try:
        if known.issuperset(value) and known_values.issuperset(value.values()):
            return value
    except TypeError:  # an unhashable value: the slow path below names it
        pass
    _check_names(value, "segments", known, limits.max_id_length)
    for key, text in value.items():
        if type(text) is str and text in known_values:
            continue
        if type(text) is not str or len(text) > bound or _CONTROL.search(text):
            raise RecordError(
                f'field "segments" key {_show(key)} must be a string of at most {bound} '
                f"characters without control characters, got {_show(text)}",
                field="segments",
            )
        _remember(known_values, text)
    return value


def _event_time(value: object, default_time: float | None) -> float:
    kind = type(value)
    if kind is float or kind is int:
        if 0 <= value < MAX_TIMESTAMP:  # type: ignore[operator]
            return float(value)  # type: ignore[arg-type]
    elif value is None:
        if default_time is not None:
            return float(default_time)
        raise RecordError(
            'field "timestamp" is missing and the message has no record timestamp',
            field="timestamp",
        )
    return parse_timestamp(value)


# --------------------------------------------------------------------------- public API


def parse_timestamp(value: object) -> float:
    """Epoch seconds from epoch seconds or an RFC 3339 date-time string.

    Numbers must be finite and in ``[0, 1e11)``: a larger number is almost
    certainly epoch *milliseconds*, and taking it for seconds would put the
    event thousands of years ahead and break every window. Strings need an
    explicit offset (``Z`` or ``+02:00``): a zone-less time means a
    different instant on every producer host. A leap second (``:60``)
    counts as the first second of the next minute.

    >>> parse_timestamp("2024-05-01T12:00:00Z")
    1714564800.0
    >>> parse_timestamp("2024-05-01 14:00:00.25+02:00")
    1714564800.25
    >>> parse_timestamp(1714564800)
    1714564800.0
    >>> parse_timestamp(1714564800000)
    Traceback (most recent call last):
    ...
    driftline.core.codec.RecordError: field "timestamp" must be epoch seconds in [0, 1e11), got 1714564800000 (epoch milliseconds? divide by 1000)
    >>> parse_timestamp("2024-05-01T12:00:00")
    Traceback (most recent call last):
    ...
    driftline.core.codec.RecordError: field "timestamp" must be epoch seconds or an RFC 3339 date-time with an offset, such as "2024-05-01T12:00:00Z"; got '2024-05-01T12:00:00'
    """  # noqa: E501
    kind = type(value)
    if kind is float or kind is int:
        if 0 <= value < MAX_TIMESTAMP:  # type: ignore[operator]
            return float(value)  # type: ignore[arg-type]
        hint = ""
        if MAX_TIMESTAMP <= value < MAX_TIMESTAMP * 1000:  # type: ignore[operator]
            hint = " (epoch milliseconds? divide by 1000)"
        raise RecordError(
            f'field "timestamp" must be epoch seconds in [0, 1e11), got {_show(value)}{hint}',
            field="timestamp",
        )
    match = _RFC3339.fullmatch(value) if kind is str else None  # type: ignore[arg-type]
    if match is None:
        raise RecordError(
            'field "timestamp" must be epoch seconds or an RFC 3339 date-time with an offset, '
            f'such as "2024-05-01T12:00:00Z"; got {_show(value)}',
            field="timestamp",
        )
    day, hour_minute, second, fraction, offset = match.groups()
    base = _MINUTES.get((day, hour_minute, offset))
    if base is None:
        base = _minute_start(day, hour_minute, offset, value)  # type: ignore[arg-type]
    s = int(second)
    if s > 60:
        raise RecordError(
            f'field "timestamp" has no second {s}: {_show(value)}',
            field="timestamp",
        )
    return base + s + float(fraction) if fraction else float(base + s)


def _ordinal(year: int, month: int, day: int) -> int | None:
    try:
        return date(year, month, day).toordinal()
    except ValueError:  # day 0, 31 April, 29 February in a common year, ...
        return None


# Epoch seconds of the start of a (date, "HH:MM", offset) minute: producers
# stamp many records within a minute, so the calendar work is done once.
_MINUTES: dict[tuple[str, str, str], int] = {}


def _minute_start(day: str, hour_minute: str, offset: str, value: str) -> int:
    y, mo, d = int(day[:4]), int(day[5:7]), int(day[8:])
    h, mi = int(hour_minute[:2]), int(hour_minute[3:])
    oh, om = (int(offset[1:3]), int(offset[4:])) if len(offset) > 1 else (0, 0)
    ordinal = _ordinal(y, mo, d)
    if y < 1970:
        problem = "is before 1970"
    elif ordinal is None:
        problem = f"has no day {d} in month {mo} of {y}"
    elif h > 23 or mi > 59:
        problem = f"has no time {hour_minute}"
    elif oh > 23 or om > 59:
        problem = f"has an impossible offset {offset}"
    else:
        problem = None
    if problem is not None or ordinal is None:
        raise RecordError(f'field "timestamp" {problem}: {_show(value)}', field="timestamp")
    start = (ordinal - _EPOCH_ORDINAL) * 86400 + h * 3600 + mi * 60
    if offset[0] == "+":
        start -= oh * 3600 + om * 60
    elif offset[0] == "-":
        start += oh * 3600 + om * 60
    if len(_MINUTES) >= _CACHE_MAX:
        _MINUTES.clear()
    _MINUTES[day, hour_minute, offset] = start
    return start


def decode_prediction(
    obj: object, limits: LimitsConfig, default_time: float | None = None
) -> Prediction:
    """Validate one parsed prediction record and build a :class:`Prediction`.

    Parameters
    ----------
    obj
        The parsed JSON value. The returned record shares its ``features``,
        ``probabilities`` and ``segments`` dicts (no copy on the hot path).
    limits
        The bounds to enforce; the schemas encode the defaults.
    default_time
        The event time (epoch seconds) to use when the record carries no
        ``timestamp``: the Kafka record timestamp. Without either, the
        record is rejected rather than given an invented time.

    >>> from driftline.core.config import LimitsConfig
    >>> p = decode_prediction(
    ...     {"request_id": "r1", "model_id": "fraud", "prediction": "spam",
    ...      "timestamp": "2024-05-01T12:00:00Z", "features": {"amount": 12.5, "country": "NL"}},
    ...     LimitsConfig())
    >>> p.model_key, p.prediction, p.event_time, p.features
    (('fraud', 'unversioned'), 'spam', 1714564800.0, {'amount': 12.5, 'country': 'NL'})
    >>> decode_prediction({"request_id": "r1", "model_id": "fraud", "prediction": 1, "score": True},
    ...                   LimitsConfig(), default_time=0.0)
    Traceback (most recent call last):
    ...
    driftline.core.codec.RecordError: field "score" must be a number in [0, 1], got true
    """
    if type(obj) is not dict:
        raise RecordError(f"a prediction must be a JSON object, got {_show(obj)}")
    get = obj.get
    request_id = get("request_id")
    if type(request_id) is not str or not 0 < len(request_id) <= limits.max_id_length:
        _check_request_id(obj, limits)
    model_id = get("model_id")
    if type(model_id) is not str or model_id not in _KNOWN_MODEL_IDS:
        _check_model_id(obj, required=True)
    version = get("model_version")
    if version is None:
        version = DEFAULT_VERSION
    elif type(version) is not str or version not in _KNOWN_VERSIONS:
        _check_version(version)
    if "prediction" not in obj:
        raise _missing("prediction")
    label = obj["prediction"]
    kind = type(label)
    if kind is not bool and (
        (kind is not str and kind is not float and kind is not int)
        or (kind is str and len(label) > limits.max_string_length)
        or (kind is not str and not -MAX_LABEL_NUMBER <= label <= MAX_LABEL_NUMBER)
    ):
        _check_label(label, "prediction", limits)
    timestamp = get("timestamp")
    kind = type(timestamp)
    if (kind is float or kind is int) and 0 <= timestamp < MAX_TIMESTAMP:
        event_time = float(timestamp)
    else:
        event_time = _event_time(timestamp, default_time)
    score = get("score")
    if score is not None:
        kind = type(score)
        if (kind is not float and kind is not int) or not 0.0 <= score <= 1.0:
            raise RecordError(
                f'field "score" must be a number in [0, 1], got {_show(score)}', field="score"
            )
        score = float(score)
    task = get("task")
    if task is not None and (type(task) is not str or task not in TASKS):
        raise RecordError(
            f'field "task" must be one of {", ".join(TASKS)} or null, got {_show(task)}',
            field="task",
        )
    probabilities = get("probabilities")
    if probabilities is not None:
        _check_probabilities(probabilities, limits)
    features = get("features")
    if features is not None:
        _check_features(features, limits)
    segments = get("segments")
    if segments is not None:
        _check_segments(segments, limits)
    return Prediction(
        request_id,  # type: ignore[arg-type]
        model_id,  # type: ignore[arg-type]
        label,  # type: ignore[arg-type]
        event_time,
        version,  # type: ignore[arg-type]
        score,
        probabilities,  # type: ignore[arg-type]
        features,  # type: ignore[arg-type]
        segments,  # type: ignore[arg-type]
        task,  # type: ignore[arg-type]
    )


def decode_outcome(obj: object, limits: LimitsConfig, default_time: float | None = None) -> Outcome:
    """Validate one parsed outcome record and build an :class:`Outcome`.

    ``model_id`` is optional (the join finds the model through the
    prediction) but must be well formed when present; ``default_time``
    works as in :func:`decode_prediction`.

    >>> from driftline.core.config import LimitsConfig
    >>> decode_outcome({"request_id": "r1", "outcome": True}, LimitsConfig(), default_time=1.5)
    Outcome(request_id='r1', outcome=True, event_time=1.5, model_id=None)
    >>> decode_outcome({"request_id": "r1"}, LimitsConfig(), default_time=1.5)
    Traceback (most recent call last):
    ...
    driftline.core.codec.RecordError: field "outcome" is missing
    """
    if type(obj) is not dict:
        raise RecordError(f"an outcome must be a JSON object, got {_show(obj)}")
    get = obj.get
    request_id = get("request_id")
    if type(request_id) is not str or not 0 < len(request_id) <= limits.max_id_length:
        _check_request_id(obj, limits)
    if "outcome" not in obj:
        raise _missing("outcome")
    label = obj["outcome"]
    _check_label(label, "outcome", limits)
    model_id = get("model_id")
    if model_id is not None and (type(model_id) is not str or model_id not in _KNOWN_MODEL_IDS):
        _check_model_id(obj, required=False)
    return Outcome(request_id, label, _event_time(get("timestamp"), default_time), model_id)  # type: ignore[arg-type]


def _parse(raw: object, limits: LimitsConfig) -> object:
    """The parsed JSON value of a message, or a message-level RecordError."""
    if raw is None:
        raise RecordError("message has no value (a tombstone)")
    if isinstance(raw, memoryview):
        raw = raw.tobytes()
    if not isinstance(raw, bytes | bytearray):
        raise RecordError(f"message value must be bytes, got {type(raw).__name__}")
    size = len(raw)
    if size == 0:
        raise RecordError("message is empty")
    if size > limits.max_message_bytes:
        raise RecordError(f"message is {size} bytes, over the limit of {limits.max_message_bytes}")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        try:
            bytes(raw).decode("utf-8")
        except UnicodeDecodeError as bad:
            raise RecordError(
                f"message is not valid UTF-8: byte 0x{raw[bad.start]:02x} at offset {bad.start}"
            ) from None
        raise RecordError(f"message is not valid JSON: {exc}") from None


@overload
def decode_message(
    raw: bytes | None,
    kind: Literal["prediction"],
    limits: LimitsConfig,
    default_time: float | None = None,
) -> tuple[list[Prediction], list[RecordError]]: ...


@overload
def decode_message(
    raw: bytes | None,
    kind: Literal["outcome"],
    limits: LimitsConfig,
    default_time: float | None = None,
) -> tuple[list[Outcome], list[RecordError]]: ...


@overload
def decode_message(
    raw: bytes | None,
    kind: str,
    limits: LimitsConfig,
    default_time: float | None = None,
) -> tuple[list[Prediction] | list[Outcome], list[RecordError]]: ...


def decode_message(
    raw: bytes | None,
    kind: str,
    limits: LimitsConfig,
    default_time: float | None = None,
) -> tuple[list[Prediction] | list[Outcome], list[RecordError]]:
    """Decode one Kafka message value: a record, or a JSON array of records.

    Never raises for any ``raw``: it returns the good records and one
    :class:`RecordError` per bad one (``index`` is its position in the
    array). A problem with the message as a whole (a tombstone, empty, over
    ``max_message_bytes``, not UTF-8, not JSON, an empty array or one over
    ``max_records_per_message``, a top-level value that is neither object
    nor array) gives no records and exactly one error with ``index=None``.

    Parameters
    ----------
    raw
        The message value, untouched.
    kind
        ``"prediction"`` or ``"outcome"``; anything else is a programming
        error and raises ``ValueError``.
    limits
        The input bounds.
    default_time
        The Kafka record timestamp in epoch *seconds*, for records that
        carry no ``timestamp`` of their own.

    >>> from driftline.core.config import LimitsConfig
    >>> decode_message(b'{"request_id": "r1", "outcome": 0}', "outcome", LimitsConfig(), 60.0)
    ([Outcome(request_id='r1', outcome=0, event_time=60.0, model_id=None)], [])
    >>> decode_message(b"[]", "outcome", LimitsConfig())
    ([], [RecordError('message is an empty array')])
    """
    if kind == "prediction":
        decode: Any = decode_prediction
    elif kind == "outcome":
        decode = decode_outcome
    else:
        raise ValueError(f"kind must be 'prediction' or 'outcome', got {kind!r}")
    horizon = _NO_HORIZON
    if default_time is not None and default_time > 0:  # Kafka's "no timestamp" is -1
        horizon = default_time + limits.max_time_ahead
    try:
        parsed = _parse(raw, limits)
        if type(parsed) is dict:
            record = decode(parsed, limits, default_time)
            if record.event_time > horizon:
                raise _ahead(record.event_time, horizon, limits)
            return [record], []
        if type(parsed) is not list:
            raise RecordError(
                f"message must be a JSON object or an array of objects, got {_show(parsed)}"
            )
        if not parsed:
            raise RecordError("message is an empty array")
        if len(parsed) > limits.max_records_per_message:
            raise RecordError(
                f"message is an array of {len(parsed)} records, over the limit of "
                f"{limits.max_records_per_message}"
            )
    except RecordError as exc:
        return [], [exc]
    except Exception as exc:  # a decoder bug must not stop the partition
        return [], [_internal_error(exc, None)]
    records: list[Any] = []
    errors: list[RecordError] = []
    append = records.append
    for index, item in enumerate(parsed):
        try:
            record = decode(item, limits, default_time)
            if record.event_time > horizon:
                raise _ahead(record.event_time, horizon, limits)
            append(record)
        except RecordError as exc:
            exc.index = index
            errors.append(exc)
        except Exception as exc:  # a decoder bug must not stop the partition
            errors.append(_internal_error(exc, index))
    return records, errors


_NO_HORIZON: Final = float("inf")


def _ahead(event_time: float, horizon: float, limits: LimitsConfig) -> RecordError:
    ahead = event_time - (horizon - limits.max_time_ahead)
    return RecordError(
        f'field "timestamp" is {ahead:,.0f} s ahead of the message\'s Kafka timestamp, over'
        f" limits.max_time_ahead ({limits.max_time_ahead:g} s): a clock or unit error? It"
        " would move event time ahead and expire every pending prediction",
        field="timestamp",
    )


def named_model(obj: object) -> tuple[str, str] | None:
    """The (model id, version) a parsed record names, if both are well formed; else None.

    For counting a refused record against its model: a model id or version
    that breaks the contract (control characters, too long) must not become
    a monitor, a state key or a metric label just because a bad record
    carried it.

    >>> named_model({"model_id": "fraud", "score": "high"})
    ('fraud', 'unversioned')
    >>> named_model({"model_id": "fraud", "model_version": "v1\\n"}), named_model([1])
    (None, None)
    """
    if type(obj) is not dict:
        return None
    try:
        model_id = _check_model_id(obj, required=True)
        version = _check_version(obj.get("model_version"))
    except RecordError:
        return None
    return (model_id, version) if model_id is not None else None


def _internal_error(exc: Exception, index: int | None) -> RecordError:
    return RecordError(
        f"internal decoder error (a driftline bug, please report it): {type(exc).__name__}: {exc}",
        index=index,
    )


def decode_line(
    obj: object, limits: LimitsConfig, default_time: float | None = None
) -> Prediction | Outcome:
    """Decode one parsed line of a replay file (JSON Lines).

    Predictions and outcomes share one file, so the line's own fields say
    which it is: an ``outcome`` field makes an outcome, a ``prediction``
    field a prediction. A line with both or neither is rejected rather
    than guessed at.

    >>> from driftline.core.config import LimitsConfig
    >>> decode_line({"request_id": "r1", "outcome": 1, "timestamp": 5}, LimitsConfig())
    Outcome(request_id='r1', outcome=1, event_time=5.0, model_id=None)
    >>> decode_line({"request_id": "r1", "timestamp": 5}, LimitsConfig())
    Traceback (most recent call last):
    ...
    driftline.core.codec.RecordError: line has neither a "prediction" nor an "outcome" field
    """
    if type(obj) is not dict:
        raise RecordError(f"line must be a JSON object, got {_show(obj)}")
    has_prediction = "prediction" in obj
    has_outcome = "outcome" in obj
    if has_prediction and has_outcome:
        raise RecordError('line has both a "prediction" and an "outcome" field; give one')
    if has_outcome:
        return decode_outcome(obj, limits, default_time)
    if has_prediction:
        return decode_prediction(obj, limits, default_time)
    raise RecordError('line has neither a "prediction" nor an "outcome" field')

"""Dead-letter records: the original bytes, untouched, and why they were refused."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class DeadLetter:
    """The dead-letter record for one source message."""

    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]]

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
    97 records were processed).

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
    for err in errors:
        reason = getattr(err, "reason", None) or str(err) or type(err).__name__
        index = getattr(err, "index", None)
        at = where if index is None else f"{where} record {index}"
        headers.append(("driftline-reason", f"{at}: {reason}".encode()))
    return DeadLetter(value, key, headers)

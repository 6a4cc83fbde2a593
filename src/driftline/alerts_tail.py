"""``driftline alerts tail``: the alert topic, one readable line per alert.

The alert topic carries JSON for machines (paging bridges, dashboards).
Someone watching a demo or an incident wants five things at a glance: when,
how bad, firing or resolved, which model, what was seen. :func:`format_alert`
makes that line, and is a pure function so the wording is unit-tested
without a broker.

The consumer joins no consumer group: tailing must never commit offsets or
take partitions away from a real alert consumer, which a group member
would. It assigns itself every partition of the topic instead.

Anything may be on a topic (a hand-typed test message, another producer's
format), so a message that is not a JSON object becomes a warning line
naming its partition and offset, never a crash. Strings from the message
are printed with control characters escaped: an alert summary must not be
able to move the cursor or recolour a terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from driftline.core.config import Config
from driftline.simulate import CONNECT_TIMEOUT, StopOnSignals, topic_partitions
from driftline.streaming.kafka import (
    KafkaSetupError,
    aiokafka_auth,
    bootstrap_servers,
    start_client,
)

__all__ = [
    "TailStats",
    "decode_alert",
    "format_alert",
    "format_time",
    "format_unreadable",
    "tail",
]

_MODEL_WIDTH = 16
_MONITOR_WIDTH = 16
_PREVIEW_BYTES = 80


def _clean(value: Any) -> str:
    """A field as one printable line: ``?`` when absent, control characters escaped.

    >>> _clean(None), _clean("a\\nb"), _clean("\\x1b[31mred")
    ('?', 'a b', '\\\\x1b[31mred')
    """
    if value is None:
        return "?"
    text = value if isinstance(value, str) else str(value)
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ").replace("\t", " ")
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def format_time(t: Any) -> str:
    """Epoch seconds as ISO 8601 UTC to the second; ``?`` if it is not a usable time.

    >>> format_time(1700000000.4), format_time("soon"), format_time(True)
    ('2023-11-14T22:13:20Z', '?', '?')
    """
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
        return "?"
    try:
        return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return "?"


def format_alert(alert: dict[str, Any]) -> str:
    """One line for one alert message: time, severity, status, model/version, monitor, summary.

    The time is the alert's ``event_time`` (the newest record its decision
    rests on), in UTC, so lines sort as the model's history happened rather
    than as the worker caught up. Fields a message lacks print as ``?``:
    a line with gaps beats no line.

    >>> format_alert({
    ...     "event_time": 1700000035.2, "severity": "error", "status": "firing",
    ...     "model_id": "pricing", "model_version": "v3", "monitor": "concept_drift",
    ...     "summary": "pricing v3: error rate rose from 8.9% to 53.0%", "segment": None,
    ... })
    '2023-11-14T22:13:55Z  error     firing    pricing/v3        concept_drift     pricing v3: error rate rose from 8.9% to 53.0%'
    """  # noqa: E501
    model = f"{_clean(alert.get('model_id'))}/{_clean(alert.get('model_version'))}"
    segment = alert.get("segment")
    if isinstance(segment, dict) and segment:
        model += "{" + ",".join(f"{_clean(k)}={_clean(v)}" for k, v in segment.items()) + "}"
    return "  ".join(
        (
            format_time(alert.get("event_time")).ljust(20),
            _clean(alert.get("severity")).ljust(8),
            _clean(alert.get("status")).ljust(8),
            model.ljust(_MODEL_WIDTH),
            _clean(alert.get("monitor")).ljust(_MONITOR_WIDTH),
            _clean(alert.get("summary")),
        )
    )


def decode_alert(value: bytes | None) -> dict[str, Any]:
    """The alert in a message value; :class:`ValueError` saying why if it holds none.

    >>> decode_alert(b'{"status": "firing"}')
    {'status': 'firing'}
    >>> decode_alert(b"[1, 2]")
    Traceback (most recent call last):
    ...
    ValueError: a JSON array, not an alert object
    """
    if not value:
        raise ValueError("empty message")
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(obj, dict):
        kind = {list: "array", str: "string", bool: "boolean"}.get(type(obj), "value")
        if obj is None:
            kind = "null"
        elif isinstance(obj, int | float) and not isinstance(obj, bool):
            kind = "number"
        raise ValueError(f"a JSON {kind}, not an alert object")
    return obj


def format_unreadable(
    topic: str, partition: int, offset: int, value: bytes | None, reason: str
) -> str:
    """The warning line for a message that is not an alert, with a short preview of it.

    >>> format_unreadable("alerts", 2, 17, b"oops", "not valid JSON")
    "warning: alerts[2]@17 is not an alert (not valid JSON): b'oops'"
    """
    preview = b"" if value is None else value[:_PREVIEW_BYTES]
    more = f"... ({len(value)} bytes)" if value is not None and len(value) > _PREVIEW_BYTES else ""
    where = f"{topic}[{partition}]@{offset}"
    return f"warning: {where} is not an alert ({_clean(reason)}): {preview!r}{more}"


@dataclass
class TailStats:
    """What a tail read."""

    alerts: int = 0
    unreadable: int = 0


async def tail(
    config: Config,
    *,
    follow: bool,
    from_beginning: bool,
    on_alert: Callable[[dict[str, Any], str], None],
    on_unreadable: Callable[[str], None],
    handle_signals: bool = True,
    poll_ms: int = 500,
) -> TailStats:
    """Read ``config.topics.alerts``; call ``on_alert(alert, line)`` for each alert.

    Without ``follow``, reads up to the end offsets seen at start and
    returns. With it, runs until SIGINT or SIGTERM, which end it quietly (it
    is how a tail is meant to be stopped).
    """
    topic = config.topics.alerts
    servers = bootstrap_servers(config.broker)
    counts = await topic_partitions(config.broker, [topic], security=config.security)
    if topic not in counts:
        raise KafkaSetupError(
            f"topic {topic!r} does not exist at {servers}; run `driftline topics create`"
            " (or check topics.alerts / DRIFTLINE_TOPICS__ALERTS)"
        )
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        **aiokafka_auth(config.security),
    )
    await start_client(consumer, config.security, servers, CONNECT_TIMEOUT)
    stats = TailStats()
    try:
        with StopOnSignals(handle_signals) as stop:
            tps = [TopicPartition(topic, p) for p in range(counts[topic])]
            consumer.assign(tps)
            if from_beginning:
                await consumer.seek_to_beginning(*tps)
            else:
                await consumer.seek_to_end(*tps)
            end = None if follow else await consumer.end_offsets(tps)
            idle = 0
            while not stop.event.is_set():
                if end is not None:
                    behind = [tp for tp in tps if await consumer.position(tp) < end[tp]]
                    # Three empty polls while "behind" means offsets that hold no
                    # message (transaction markers, compaction): there is no more.
                    if not behind or idle >= 3:
                        break
                batches = await consumer.getmany(*tps, timeout_ms=poll_ms)
                messages = sorted(
                    (m for batch in batches.values() for m in batch),
                    key=lambda m: (m.timestamp, m.partition, m.offset),
                )
                idle = 0 if messages else idle + 1
                for m in messages:
                    try:
                        alert = decode_alert(m.value)
                    except ValueError as exc:
                        stats.unreadable += 1
                        on_unreadable(
                            format_unreadable(m.topic, m.partition, m.offset, m.value, str(exc))
                        )
                        continue
                    stats.alerts += 1
                    on_alert(alert, format_alert(alert))
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(consumer.stop(), 10)
    return stats

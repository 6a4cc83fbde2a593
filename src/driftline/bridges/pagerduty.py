"""PagerDuty Events API v2: one event per alert message, built without any I/O.

A ``firing`` alert becomes a ``trigger`` event and a ``resolved`` alert a
``resolve`` event with the same ``dedup_key``, so PagerDuty opens one
incident per condition and closes it when driftline says the condition has
cleared. Because driftline's dedup key names the model, version and monitor
but no time, a replay or a re-delivery after a bridge restart re-sends the
same key and PagerDuty de-duplicates it.

PagerDuty's limits are enforced here rather than discovered as a 400 at
night: ``summary`` at most 1024 characters (cut with an ellipsis),
``dedup_key`` at most 255 (a longer key, possible with long model names and
segments, becomes a stable shortened form; the full key stays in
``custom_details``), and the whole event under 512 KB (oversized evidence
is dropped, and the event says so).

See https://developer.pagerduty.com/docs/events-api-v2/trigger-events/.
"""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import orjson

from driftline.bridges.alert import Request, redact

__all__ = [
    "EVENTS_URL",
    "SEVERITY",
    "PagerDutyTarget",
    "dashboard_link",
    "encode_event",
    "pagerduty_dedup_key",
    "pagerduty_event",
    "rfc3339",
    "truncate",
]

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
SUMMARY_LIMIT = 1024
DEDUP_KEY_LIMIT = 255
EVENT_BYTES_LIMIT = 500_000  # PagerDuty refuses events over 512 KB; keep a margin.

SEVERITY = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}
"""driftline severity -> PagerDuty severity. driftline chose PagerDuty's four on purpose."""

# The alert fields copied into custom_details: the numbers and where they come from.
_DETAILS = (
    "value",
    "threshold",
    "baseline",
    "window",
    "kind",
    "model_id",
    "model_version",
    "segment",
    "monitor",
    "event_time",
    "emitted_at",
    "alert_id",
    "dedup_key",
    "evidence",
)
_PLACEHOLDERS = ("model_id", "model_version", "monitor", "dedup_key")


def truncate(text: str, limit: int = SUMMARY_LIMIT) -> str:
    """``text`` cut to at most ``limit`` characters, the cut marked with an ellipsis.

    >>> truncate("short"), truncate("abcdefgh", 5), len(truncate("x" * 2000))
    ('short', 'abcd…', 1024)
    """
    return text if len(text) <= limit else text[: limit - 1] + "…"


def rfc3339(t: Any) -> str | None:
    """Epoch seconds as an RFC 3339 UTC time to the millisecond; None if not a usable time.

    >>> rfc3339(1700000035.25), rfc3339("later"), rfc3339(float("nan"))
    ('2023-11-14T22:13:55.250Z', None, None)
    """
    if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t) or t < 0:
        return None
    try:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"
    except (OverflowError, OSError, ValueError):
        return None


def pagerduty_dedup_key(key: str) -> str:
    """``key`` itself when PagerDuty accepts its length, else a stable 255-character form.

    The short form keeps the readable start and ends with a SHA-256 of the
    whole key, so a firing alert and its resolve map to the same PagerDuty
    key, and two long keys that share a prefix do not collide.

    >>> pagerduty_dedup_key("driftline/pricing/v3/concept_drift")
    'driftline/pricing/v3/concept_drift'
    >>> long = pagerduty_dedup_key("driftline/" + "m" * 300)
    >>> len(long), long[:12], long == pagerduty_dedup_key("driftline/" + "m" * 300)
    (255, 'driftline/mm', True)
    """
    if len(key) <= DEDUP_KEY_LIMIT:
        return key
    digest = hashlib.sha256(key.encode()).hexdigest()
    return key[: DEDUP_KEY_LIMIT - len(digest) - 1] + "~" + digest


def dashboard_link(template: str, alert: dict[str, Any]) -> str:
    """The dashboard URL for ``alert``: ``{model_id}``, ``{model_version}``, ``{monitor}`` and
    ``{dedup_key}`` in ``template`` are replaced by the alert's values, URL-quoted.

    Plain ``str.replace`` rather than ``str.format``: a dashboard URL may
    contain other braces (Grafana's JSON in query strings) that must stay.

    >>> dashboard_link("https://grafana.example/d/ml?var-model={model_id}&var-v={model_version}",
    ...                {"model_id": "pricing", "model_version": "v3 beta"})
    'https://grafana.example/d/ml?var-model=pricing&var-v=v3%20beta'
    """
    url = template
    for name in _PLACEHOLDERS:
        token = "{" + name + "}"
        if token in url:
            url = url.replace(token, quote(str(alert.get(name) or ""), safe=""))
    return url


def pagerduty_event(
    alert: dict[str, Any],
    *,
    routing_key: str,
    source: str = "driftline",
    dashboard_url: str | None = None,
) -> dict[str, Any]:
    """The Events v2 event for one alert (checked by :func:`~driftline.bridges.alert.parse_alert`).

    ``source`` is what PagerDuty shows as the affected system; the model is
    the ``component``, its version the ``group`` and the monitor the
    ``class``, so PagerDuty can group and filter by each.

    >>> alert = {"dedup_key": "driftline/pricing/v3/concept_drift", "status": "firing",
    ...          "severity": "error", "model_id": "pricing", "model_version": "v3",
    ...          "monitor": "concept_drift", "summary": "pricing v3: error rate rose",
    ...          "value": 0.44, "baseline": 0.098, "event_time": 1700000035.25}
    >>> event = pagerduty_event(alert, routing_key="R", dashboard_url="https://dash/{model_id}")
    >>> event["event_action"], event["dedup_key"]
    ('trigger', 'driftline/pricing/v3/concept_drift')
    >>> p = event["payload"]
    >>> p["severity"], p["timestamp"], p["component"], p["group"], p["class"]
    ('error', '2023-11-14T22:13:55.250Z', 'pricing', 'v3', 'concept_drift')
    >>> p["custom_details"]["value"], event["links"]
    (0.44, [{'href': 'https://dash/pricing', 'text': 'driftline: pricing v3'}])
    >>> pagerduty_event({**alert, "status": "resolved"}, routing_key="R")
    {'routing_key': 'R', 'event_action': 'resolve', 'dedup_key': 'driftline/pricing/v3/concept_drift'}
    """  # noqa: E501
    key = pagerduty_dedup_key(alert["dedup_key"])
    if alert["status"] == "resolved":
        # PagerDuty reads only these three on a resolve.
        return {"routing_key": routing_key, "event_action": "resolve", "dedup_key": key}
    payload: dict[str, Any] = {
        "summary": truncate(alert["summary"]),
        "source": source,
        "severity": SEVERITY[alert["severity"]],
        "component": alert["model_id"],
        "custom_details": {k: alert[k] for k in _DETAILS if k in alert},
    }
    timestamp = rfc3339(alert.get("event_time")) or rfc3339(alert.get("emitted_at"))
    if timestamp is not None:
        payload["timestamp"] = timestamp
    if isinstance(alert.get("model_version"), str):
        payload["group"] = alert["model_version"]
    monitor = alert.get("monitor") or alert.get("kind")
    if isinstance(monitor, str):
        payload["class"] = monitor
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": key,
        "payload": payload,
        "client": "driftline",
    }
    if dashboard_url:
        href = dashboard_link(dashboard_url, alert)
        version = alert.get("model_version")
        text = f"driftline: {alert['model_id']}" + (f" {version}" if version else "")
        event["links"] = [{"href": href, "text": text}]
        event["client_url"] = href
    return event


def encode_event(event: dict[str, Any]) -> bytes:
    """The event as JSON bytes, with ``evidence`` dropped if the event would be too large.

    >>> huge = {"payload": {"custom_details": {"value": 1, "evidence": {"x": "y" * 600_000}}}}
    >>> orjson.loads(encode_event(huge))["payload"]["custom_details"]
    {'value': 1, 'evidence': 'omitted: 600008 bytes, over what PagerDuty accepts'}
    """
    body = orjson.dumps(event)
    details = event.get("payload", {}).get("custom_details", {})
    if len(body) > EVENT_BYTES_LIMIT and "evidence" in details:
        size = len(orjson.dumps(details["evidence"]))
        details = {**details, "evidence": f"omitted: {size} bytes, over what PagerDuty accepts"}
        event = {**event, "payload": {**event["payload"], "custom_details": details}}
        body = orjson.dumps(event)
    return body


class PagerDutyTarget:
    """Sends each alert to the Events API v2 with one routing key (never printed)."""

    name = "PagerDuty"

    def __init__(
        self,
        routing_key: str,
        *,
        events_url: str = EVENTS_URL,
        source: str = "driftline",
        dashboard_url: str | None = None,
    ) -> None:
        if not routing_key:
            raise ValueError("PagerDuty needs a routing key")
        self._routing_key = routing_key
        self.url = events_url
        self.display_url = events_url
        self.source = source
        self.dashboard_url = dashboard_url

    def __repr__(self) -> str:
        return f"PagerDutyTarget(events_url={self.url!r}, source={self.source!r})"

    def request(self, alert: dict[str, Any], raw: bytes) -> Request:
        event = pagerduty_event(
            alert,
            routing_key=self._routing_key,
            source=self.source,
            dashboard_url=self.dashboard_url,
        )
        return Request(self.url, encode_event(event), {"Content-Type": "application/json"})

    def redact(self, text: str) -> str:
        return redact(text, [self._routing_key])

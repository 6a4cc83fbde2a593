"""Generic webhooks: one JSON POST per alert, optionally signed, optionally for Slack.

The body is the alert message exactly as it is on the topic, so a receiver
gets the same JSON as any other alert consumer (``schemas/alert.v1.json``)
and the signature covers those exact bytes. With a secret, the request
carries ``X-Driftline-Signature: sha256=<hex HMAC-SHA256 of the body>``, the
convention GitHub and Stripe receivers already know: a receiver recomputes
the HMAC over the raw body it received and compares in constant time (see
:func:`verify_signature`), which proves the alert came from someone holding
the secret and was not altered on the way.

With ``slack=True`` the body is ``{"text": ...}``, which Slack incoming
webhooks (and Mattermost, Rocket.Chat, Teams' Slack-compatible hooks)
display as one message.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import urlsplit

import orjson

from driftline.bridges.alert import Request, redact

__all__ = [
    "SIGNATURE_HEADER",
    "WebhookTarget",
    "display_url",
    "sign",
    "slack_body",
    "slack_text",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Driftline-Signature"
_SLACK_TEXT_LIMIT = 3000  # Slack truncates longer text; keep the message readable.


def sign(body: bytes, secret: str) -> str:
    """The ``X-Driftline-Signature`` value for ``body``: ``sha256=`` and the hex HMAC-SHA256.

    >>> sign(b'{"status":"firing"}', "s3cret")
    'sha256=043737fa7d4b65306416549b14537adb753ed11a55b3fb6f50fec5192bbd3851'
    """
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify_signature(body: bytes, secret: str, header: str | None) -> bool:
    """Whether ``header`` is the signature of ``body`` under ``secret`` (constant-time compare).

    >>> body = b'{"status":"firing"}'
    >>> verify_signature(body, "s3cret", sign(body, "s3cret"))
    True
    >>> verify_signature(body + b" ", "s3cret", sign(body, "s3cret")), verify_signature(body, "s3cret", None)
    (False, False)
    """  # noqa: E501
    if not header:
        return False
    return hmac.compare_digest(sign(body, secret), header.strip())


def _escape(text: str) -> str:
    # Slack's mrkdwn gives &, < and > a meaning; escape them so a summary shows as written.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_text(alert: dict[str, Any]) -> str:
    """One Slack message line for an alert: status, severity, model/version, monitor, summary.

    >>> slack_text({"status": "firing", "severity": "error", "model_id": "pricing",
    ...             "model_version": "v3", "monitor": "concept_drift",
    ...             "summary": "pricing v3: error rate rose from 9.8% to 44.0% (n > 100)"})
    ':red_circle: *FIRING* error · pricing/v3 · concept_drift: pricing v3: error rate rose from 9.8% to 44.0% (n &gt; 100)'
    >>> slack_text({"status": "resolved", "severity": "error", "model_id": "pricing",
    ...             "summary": "pricing v3: error rate back to 9.9%"})
    ':large_green_circle: *RESOLVED* error · pricing: pricing v3: error rate back to 9.9%'
    """  # noqa: E501
    firing = alert.get("status") == "firing"
    icon = ":red_circle:" if firing else ":large_green_circle:"
    model = str(alert.get("model_id", "?"))
    if alert.get("model_version"):
        model += f"/{alert['model_version']}"
    parts = [f"{alert.get('severity', '?')}", model]
    if alert.get("monitor"):
        parts.append(str(alert["monitor"]))
    head = f"{icon} *{'FIRING' if firing else 'RESOLVED'}* " + " · ".join(_escape(p) for p in parts)
    text = f"{head}: {_escape(str(alert.get('summary', '')))}"
    return text if len(text) <= _SLACK_TEXT_LIMIT else text[: _SLACK_TEXT_LIMIT - 1] + "…"


def slack_body(alert: dict[str, Any]) -> bytes:
    """The Slack-compatible body: ``{"text": slack_text(alert)}``.

    >>> slack_body({"status": "firing", "severity": "info", "model_id": "m", "summary": "s"})
    b'{"text":":red_circle: *FIRING* info \\xc2\\xb7 m: s"}'
    """
    return orjson.dumps({"text": slack_text(alert)})


def display_url(url: str) -> str:
    """``url`` safe to print: the origin, with any path, query or user info elided.

    A webhook URL is often a credential in itself (Slack's path is the token).

    >>> display_url("https://hooks.slack.com/services/T0/B0/XXXX"), display_url("http://h:81")
    ('https://hooks.slack.com/…', 'http://h:81')
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    try:
        port = parts.port
    except ValueError:  # not a number: show nothing of it
        port = None
    if port is not None:
        host += f":{port}"
    origin = f"{parts.scheme}://{host}"
    hidden = parts.path not in ("", "/") or parts.query or parts.username or parts.password
    return origin + "/…" if hidden else origin


class WebhookTarget:
    """POSTs each alert to ``url``; signs the body when ``secret`` is set (never printed)."""

    name = "webhook"

    def __init__(self, url: str, *, secret: str | None = None, slack: bool = False) -> None:
        self.url = url
        self.display_url = display_url(url)
        self._secret = secret or None
        self.slack = slack

    @property
    def signed(self) -> bool:
        return self._secret is not None

    def __repr__(self) -> str:
        return f"WebhookTarget({self.display_url!r}, signed={self.signed}, slack={self.slack})"

    def request(self, alert: dict[str, Any], raw: bytes) -> Request:
        body = slack_body(alert) if self.slack else raw
        headers = {"Content-Type": "application/json"}
        if self._secret is not None:
            headers[SIGNATURE_HEADER] = sign(body, self._secret)
        return Request(self.url, body, headers)

    def redact(self, text: str) -> str:
        parts = urlsplit(self.url)
        secrets = [self._secret or "", self.url]
        if parts.path not in ("", "/"):
            secrets.append(parts.path)
        if parts.query:
            secrets.append(parts.query)
        return redact(text, secrets)

"""The alert a bridge reads and the request it sends: the types every bridge shares.

A bridge sees whatever is on the alert topic, including a hand-typed test
message or another producer's format. Such a message must neither crash the
bridge nor become a half-empty page: :func:`parse_alert` either returns an
alert with the fields every bridge relies on, or raises :class:`AlertError`
saying which field is wrong, and the message goes to the dead-letter topic
with that reason. Other fields are optional here: the schema
(``schemas/alert.v1.json``) says consumers should tolerate what they do not
need.

:class:`Request` and :class:`Target` are the other side: a target turns a
checked alert into one HTTP request, without doing any I/O, so what is sent
is unit-tested without a network.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from driftline.alerts_tail import decode_alert
from driftline.core.config import SEVERITIES

__all__ = [
    "SEVERITIES",
    "STATUSES",
    "AlertError",
    "Request",
    "Target",
    "parse_alert",
    "redact",
]

STATUSES = ("firing", "resolved")


class AlertError(ValueError):
    """A message is not an alert a bridge can deliver; the message says why."""


def _text(alert: dict[str, Any], name: str) -> str:
    if name not in alert or alert[name] is None:
        raise AlertError(f'missing field "{name}"')
    value = alert[name]
    if not isinstance(value, str) or not value.strip():
        raise AlertError(f'field "{name}" must be a non-empty string, got {value!r:.80}')
    return value


def _choice(alert: dict[str, Any], name: str, allowed: tuple[str, ...]) -> str:
    value = _text(alert, name)
    if value not in allowed:
        raise AlertError(f'field "{name}" must be one of {", ".join(allowed)}; got {value!r:.80}')
    return value


def parse_alert(value: bytes | None) -> dict[str, Any]:
    """The alert in a message value, checked; :class:`AlertError` saying why if it is none.

    Required: ``dedup_key`` (routes and de-duplicates the page), ``status``,
    ``severity``, ``model_id`` and ``summary`` (what a person reads).

    >>> parse_alert(b'{"dedup_key": "k", "status": "firing", "severity": "error",'
    ...             b' "model_id": "m", "summary": "m: bad"}')["status"]
    'firing'
    >>> parse_alert(b'{"dedup_key": "k", "status": "burning"}')
    Traceback (most recent call last):
    ...
    driftline.bridges.alert.AlertError: field "status" must be one of firing, resolved; got 'burning'
    >>> parse_alert(b'[{"dedup_key": "k"}]')
    Traceback (most recent call last):
    ...
    driftline.bridges.alert.AlertError: a JSON array, not an alert object
    """  # noqa: E501
    try:
        alert = decode_alert(value)
    except ValueError as exc:
        raise AlertError(str(exc)) from None
    _text(alert, "dedup_key")
    _choice(alert, "status", STATUSES)
    _choice(alert, "severity", SEVERITIES)
    _text(alert, "model_id")
    _text(alert, "summary")
    return alert


@dataclass(frozen=True)
class Request:
    """One HTTP POST, fully built: what a bridge sends for one alert."""

    url: str
    body: bytes
    headers: Mapping[str, str]


class Target(Protocol):
    """An endpoint a bridge delivers to; builds the request for each alert.

    ``name`` names the endpoint in logs and dead-letter reasons
    (``PagerDuty``, ``webhook``); ``display_url`` is the URL safe to print;
    :meth:`redact` removes every secret the target holds from a text, so an
    error message or a response body quoted in a dead letter cannot carry
    a routing key or a signing secret.
    """

    name: str
    display_url: str

    def request(self, alert: dict[str, Any], raw: bytes) -> Request:
        """The request for ``alert`` (``raw``: the message bytes it was decoded from)."""
        ...

    def redact(self, text: str) -> str:
        """``text`` with the target's secrets replaced."""
        ...


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every non-empty secret in ``secrets`` replaced by ``[redacted]``.

    >>> redact("bad key abc123 for abc123", ["abc123", ""])
    'bad key [redacted] for [redacted]'
    """
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[redacted]")
    return text

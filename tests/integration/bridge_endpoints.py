"""Real local HTTP endpoints for the bridge tests: a strict PagerDuty and a webhook receiver.

Both are ``aiohttp.web`` servers on 127.0.0.1 with an ephemeral port that
can go down and come back on the same port (connection refused in between).
They inject the faults a test asks for and keep a record of every request,
so a test can tell what the endpoint *processed* (and how often) from what
it merely answered.

:func:`check_pagerduty_event` is the Events API v2 contract as PagerDuty
documents it (https://developer.pagerduty.com/docs/events-api-v2/overview/):
the fake answers 400, as PagerDuty does, to any event that breaks it, and
records the violation so the test fails on it. Unit tests use the same
checker on the events the bridge builds.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

PD_SEVERITIES = {"critical", "error", "warning", "info"}


def _is_rfc3339(value: Any) -> bool:
    if not isinstance(value, str) or "T" not in value:
        return False
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return parsed.tzinfo is not None


def check_pagerduty_event(event: Any, routing_key: str) -> list[str]:
    """Every way ``event`` breaks the Events API v2 contract (empty when it is valid)."""
    if not isinstance(event, dict):
        return [f"event is not a JSON object: {type(event).__name__}"]
    problems = []
    if event.get("routing_key") != routing_key:
        problems.append("routing_key is not the configured integration key")
    action = event.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        problems.append(f"event_action {action!r} is not trigger, acknowledge or resolve")
    key = event.get("dedup_key")
    if action != "trigger" and not key:
        problems.append("dedup_key is required for acknowledge and resolve")
    if key is not None and (not isinstance(key, str) or not 0 < len(key) <= 255):
        problems.append(f"dedup_key must be a string of 1 to 255 characters, got {key!r:.80}")
    if action == "trigger":
        payload = event.get("payload")
        if not isinstance(payload, dict):
            return [*problems, "payload (an object) is required for trigger"]
        summary = payload.get("summary")
        if not isinstance(summary, str) or not summary:
            problems.append("payload.summary is required")
        elif len(summary) > 1024:
            problems.append(f"payload.summary has {len(summary)} characters, over 1024")
        if not isinstance(payload.get("source"), str) or not payload["source"]:
            problems.append("payload.source is required")
        if payload.get("severity") not in PD_SEVERITIES:
            problems.append(f"payload.severity {payload.get('severity')!r} is not one of PD's")
        if "timestamp" in payload and not _is_rfc3339(payload["timestamp"]):
            problems.append(f"payload.timestamp {payload['timestamp']!r} is not RFC 3339")
        for name in ("component", "group", "class"):
            if name in payload and not isinstance(payload[name], str):
                problems.append(f"payload.{name} must be a string")
        if "custom_details" in payload and not isinstance(payload["custom_details"], dict):
            problems.append("payload.custom_details must be an object")
        links = event.get("links", [])
        if not isinstance(links, list) or not all(
            isinstance(link, dict)
            and isinstance(link.get("href"), str)
            and isinstance(link.get("text", ""), str)
            for link in links
        ):
            problems.append("links must be a list of {href, text}")
    known = {"routing_key", "event_action", "dedup_key", "payload", "images", "links"}
    unknown = set(event) - known - {"client", "client_url"}
    if unknown:
        problems.append(f"unknown top-level fields {sorted(unknown)}")
    return problems


class LocalServer:
    """An aiohttp.web app on 127.0.0.1; ``outage()`` takes it down and back on the same port."""

    def __init__(self, handler: Callable[[web.Request], Any]) -> None:
        self._handler = handler
        self.port = 0
        self._runner: web.AppRunner | None = None
        self.outages = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handler)
        # Short shutdown: an outage must not wait a minute for a deliberately slow handler.
        self._runner = web.AppRunner(app, shutdown_timeout=2.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if not self.port:
            self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def outage(self, seconds: float) -> None:
        """Refuse connections for ``seconds`` (listener closed), then listen again."""
        self.outages += 1
        await self.stop()
        await asyncio.sleep(seconds)
        await self.start()


@dataclass
class Hit:
    """One request as the endpoint saw it."""

    at: float
    key: str
    answer: int
    fault: str | None = None


@dataclass
class FakePagerDuty:
    """A strict Events API v2 endpoint that injects faults.

    ``faults[(dedup_key, n)]``: what to answer, in turn, to requests for
    ``dedup_key`` while ``n`` of its events have been processed (``"429"``,
    ``"500"``, or ``"timeout"``: processed at once, answered after
    ``slow`` seconds, as when the answer is lost on the way back).
    ``refuse``: events it refuses for good (400 with a PagerDuty-like body).
    """

    routing_key: str
    faults: dict[tuple[str, int], list[str]] = field(default_factory=dict)
    refuse: Callable[[dict[str, Any]], bool] = lambda event: False
    slow: float = 1.0
    processed: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    hits: list[Hit] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.server = LocalServer(self.handle)

    @property
    def url(self) -> str:
        return self.server.url + "v2/enqueue"

    @property
    def processed_total(self) -> int:
        return sum(len(v) for v in self.processed.values())

    async def handle(self, request: web.Request) -> web.Response:
        now = time.monotonic()
        raw = await request.read()
        if request.method != "POST" or request.path != "/v2/enqueue":
            self.violations.append(f"{request.method} {request.path}")
            return web.json_response({"status": "not found"}, status=404)
        if request.content_type != "application/json":
            self.violations.append(f"Content-Type {request.content_type}")
        try:
            event = json.loads(raw)
        except ValueError:
            self.violations.append(f"body is not JSON: {raw[:80]!r}")
            return web.json_response({"status": "invalid event"}, status=400)
        problems = check_pagerduty_event(event, self.routing_key)
        if problems:
            self.violations.extend(problems)
            return web.json_response(
                {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": problems,
                },
                status=400,
            )
        key = event["dedup_key"]
        queue = self.faults.get((key, len(self.processed[key])))
        fault = queue.pop(0) if queue else None
        if fault == "429":
            self.hits.append(Hit(now, key, 429, fault))
            return web.json_response(
                {"status": "throttle event", "message": "Requests are arriving too quickly"},
                status=429,
                headers={"Retry-After": "1"},
            )
        if fault == "500":
            self.hits.append(Hit(now, key, 500, fault))
            return web.Response(status=500, text="internal error")
        if self.refuse(event):
            self.hits.append(Hit(now, key, 400, "refuse"))
            self.refused.append(event)
            return web.json_response(
                {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": ["payload.summary: refused by the test endpoint"],
                },
                status=400,
            )
        self.processed[key].append(event)
        self.hits.append(Hit(now, key, 202, fault))
        if fault == "timeout":
            await asyncio.sleep(self.slow)
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": key}, status=202
        )


@dataclass
class FakeWebhook:
    """A webhook receiver that checks ``X-Driftline-Signature`` and can hang on one alert.

    ``hang``: alert ids whose *first* request is processed at once and then
    left unanswered for ``hang_seconds`` (the bridge is stopped meanwhile).
    ``hold_after``: once that many requests have been processed, each
    further request is processed on arrival but not answered until
    ``gate`` is set (deliveries stay in flight for as long as a test needs).
    """

    secret: str
    hang: set[str] = field(default_factory=set)
    hang_seconds: float = 5.0
    hold_after: int | None = None
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    processed: list[dict[str, Any]] = field(default_factory=list)
    bodies: dict[str, bytes] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    hung: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.server = LocalServer(self.handle)

    @property
    def url(self) -> str:
        return self.server.url + "hooks/driftline"

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        expected = "sha256=" + hmac.new(self.secret.encode(), raw, hashlib.sha256).hexdigest()
        got = request.headers.get("X-Driftline-Signature", "")
        if not hmac.compare_digest(expected, got):
            self.violations.append(f"bad signature {got!r}")
            return web.Response(status=401, text="bad signature")
        try:
            alert = json.loads(raw)
        except ValueError:
            self.violations.append(f"body is not JSON: {raw[:80]!r}")
            return web.Response(status=400, text="not JSON")
        self.processed.append(alert)
        self.bodies.setdefault(alert["alert_id"], raw)
        if alert["alert_id"] in self.hang:
            self.hang.discard(alert["alert_id"])
            self.hung.set()
            await asyncio.sleep(self.hang_seconds)
        elif self.hold_after is not None and len(self.processed) > self.hold_after:
            await self.gate.wait()
        return web.Response(status=204)

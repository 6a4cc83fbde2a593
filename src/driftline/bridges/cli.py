"""``driftline bridge pagerduty`` and ``driftline bridge webhook``.

This module is imported by ``driftline --help`` and every other command, so
it imports nothing heavy at module level: aiohttp and aiokafka load only
when a bridge runs.

Secrets come from environment variables named on the command line, never
from an option's value (which ``ps`` shows to every user of the machine).
The default ``DRIFTLINE_WEBHOOK_SECRET`` starts with the prefix that
driftline's configuration reads as settings, where it would be an unknown
key: the bridges hide the secret variables from the configuration loader.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

import click

from driftline.core.config import Config, ConfigError, load_config

__all__ = ["bridge"]

DEFAULT_SECRET_ENV = "DRIFTLINE_WEBHOOK_SECRET"
DEFAULT_ROUTING_KEY_ENV = "PAGERDUTY_ROUTING_KEY"


def _load(config_path: str | None, broker: str | None, hidden: set[str]) -> Config:
    """The configuration, without reading the secret variables in ``hidden`` as settings."""
    env = {k: v for k, v in os.environ.items() if k not in hidden}
    try:
        config = load_config(config_path, env=env)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    return dataclasses.replace(config, broker=broker) if broker else config


def _secret(name: str, what: str, *, required: bool) -> str | None:
    """The value of environment variable ``name``; errors name the variable, never the value."""
    value = os.environ.get(name)
    if value is None:
        if required:
            raise click.UsageError(f"{what}: environment variable {name} is not set")
        return None
    value = value.strip()
    if not value:
        raise click.UsageError(f"{what}: environment variable {name} is set but empty")
    return value


def _check_url(url: str, option: str, shown: str) -> None:
    parts = urlsplit(url)
    try:
        parts.port  # noqa: B018  (raises ValueError on a port that is not a number)
    except ValueError:
        raise click.BadParameter(f"bad port in {shown!r}", param_hint=option) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(
            f"needs an http:// or https:// URL, got {shown!r}", param_hint=option
        )


def _logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)-7s %(message)s", stream=sys.stderr
    )
    # aiokafka narrates every rebalance at INFO; the bridge says what matters itself.
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.getLogger().level))


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    import asyncio

    from driftline.streaming.kafka import KafkaSetupError

    try:
        return asyncio.run(coro)
    except KafkaSetupError as exc:
        raise click.ClickException(str(exc)) from None


def _common(default_group: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options both bridges share."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        options = [
            click.option(
                "--broker",
                envvar="DRIFTLINE_BROKER",
                help="Kafka bootstrap, e.g. kafka://127.0.0.1:9092 (env DRIFTLINE_BROKER).",
            ),
            click.option(
                "--config",
                "config_path",
                type=click.Path(dir_okay=False),
                envvar="DRIFTLINE_CONFIG",
                help="driftline.toml (env DRIFTLINE_CONFIG); the alert and dead-letter topic"
                " names come from it.",
            ),
            click.option(
                "--group",
                default=default_group,
                show_default=True,
                help="Consumer group id: one per bridge instance set, so each bridge sees"
                " every alert.",
            ),
            click.option(
                "--start-at",
                type=click.Choice(["earliest", "latest"]),
                default="earliest",
                show_default=True,
                help="Where a group with no committed offset starts: the oldest alert on the"
                " topic (nothing lost), or only new ones.",
            ),
            click.option(
                "--timeout",
                type=click.FloatRange(min=0, min_open=True),
                default=10.0,
                show_default=True,
                help="Seconds one HTTP request may take.",
            ),
            click.option(
                "--backoff-base",
                type=click.FloatRange(min=0, min_open=True),
                default=0.5,
                show_default=True,
                help="Ceiling of the first retry wait, in seconds (doubles per attempt).",
            ),
            click.option(
                "--backoff-cap",
                type=click.FloatRange(min=0, min_open=True),
                default=30.0,
                show_default=True,
                help="Largest retry wait, in seconds (a Retry-After may ask for more).",
            ),
            click.option(
                "--stop-grace",
                type=click.FloatRange(min=0),
                default=5.0,
                show_default=True,
                help="At SIGTERM/SIGINT, seconds an in-flight request may still take.",
            ),
            click.option(
                "--log-level",
                type=click.Choice(["debug", "info", "warning", "error"]),
                default="info",
                show_default=True,
                help="info: one line per delivery; warning: only retries and refusals.",
            ),
        ]
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


def _settings(
    group: str,
    start_at: str,
    timeout: float,
    backoff_base: float,
    backoff_cap: float,
    stop_grace: float,
) -> Any:
    from driftline.bridges.delivery import BridgeSettings
    from driftline.bridges.retry import RetryPolicy

    if backoff_cap < backoff_base:
        raise click.UsageError("--backoff-cap must be at least --backoff-base")
    return BridgeSettings(
        group_id=group,
        start_at=start_at,
        retry=RetryPolicy(timeout=timeout, base=backoff_base, cap=backoff_cap),
        stop_grace=stop_grace,
    )


def _serve(config: Config, target: Any, settings: Any) -> None:
    from driftline.bridges.delivery import Bridge

    _run(Bridge(config, target, settings).run())


@click.group()
def bridge() -> None:
    """Deliver the alert topic to PagerDuty or a webhook, at least once.

    Each bridge is a consumer group of its own: it commits an alert only
    once the endpoint accepted it, retries what time can fix without end,
    and sends what the endpoint refuses for good to the dead-letter topic.
    """


@bridge.command("pagerduty")
@_common("driftline-bridge-pagerduty")
@click.option(
    "--routing-key-env",
    default=DEFAULT_ROUTING_KEY_ENV,
    show_default=True,
    metavar="NAME",
    help="Environment variable holding the Events API v2 routing (integration) key.",
)
@click.option(
    "--events-url",
    default="https://events.pagerduty.com/v2/enqueue",
    show_default=True,
    help="Events API endpoint (a proxy, or a test server).",
)
@click.option(
    "--source",
    default="driftline",
    show_default=True,
    help="What PagerDuty shows as the affected system.",
)
@click.option(
    "--dashboard-url",
    help="Link added to each incident; {model_id}, {model_version}, {monitor} and"
    " {dedup_key} are replaced by the alert's values.",
)
def pagerduty(
    broker: str | None,
    config_path: str | None,
    group: str,
    start_at: str,
    timeout: float,
    backoff_base: float,
    backoff_cap: float,
    stop_grace: float,
    log_level: str,
    routing_key_env: str,
    events_url: str,
    source: str,
    dashboard_url: str | None,
) -> None:
    """Page with PagerDuty Events API v2: firing -> trigger, resolved -> resolve.

    The routing key is read from $PAGERDUTY_ROUTING_KEY (or the variable
    --routing-key-env names) and is never printed.
    """
    from driftline.bridges.pagerduty import PagerDutyTarget

    routing_key = _secret(routing_key_env, "PagerDuty routing key", required=True)
    assert routing_key is not None
    _check_url(events_url, "--events-url", events_url)
    if dashboard_url:
        _check_url(dashboard_url, "--dashboard-url", dashboard_url)
    config = _load(config_path, broker, {routing_key_env})
    settings = _settings(group, start_at, timeout, backoff_base, backoff_cap, stop_grace)
    target = PagerDutyTarget(
        routing_key, events_url=events_url, source=source, dashboard_url=dashboard_url
    )
    _logging(log_level)
    _serve(config, target, settings)


@bridge.command("webhook")
@_common("driftline-bridge-webhook")
@click.option(
    "--url",
    required=True,
    help="Where to POST each alert. Only its origin is ever printed (a path can be a token).",
)
@click.option(
    "--secret-env",
    metavar="NAME",
    help=f"Environment variable holding the HMAC secret [default: {DEFAULT_SECRET_ENV}, if set].",
)
@click.option("--slack", is_flag=True, help='Send {"text": ...} for Slack incoming webhooks.')
def webhook(
    broker: str | None,
    config_path: str | None,
    group: str,
    start_at: str,
    timeout: float,
    backoff_base: float,
    backoff_cap: float,
    stop_grace: float,
    log_level: str,
    url: str,
    secret_env: str | None,
    slack: bool,
) -> None:
    """POST each alert as JSON to --url, signed when a secret is set.

    With a secret, each request carries X-Driftline-Signature:
    sha256=<hex HMAC-SHA256 of the exact body>. The body is the alert as on
    the topic, or {"text": ...} with --slack.
    """
    from driftline.bridges.webhook import WebhookTarget, display_url

    name = secret_env or DEFAULT_SECRET_ENV
    secret = _secret(name, "webhook secret", required=secret_env is not None)
    _check_url(url, "--url", display_url(url))
    config = _load(config_path, broker, {name, DEFAULT_SECRET_ENV})
    settings = _settings(group, start_at, timeout, backoff_base, backoff_cap, stop_grace)
    target = WebhookTarget(url, secret=secret, slack=slack)
    _logging(log_level)
    if secret is None:
        logging.getLogger("driftline.bridge").warning(
            "requests are not signed: set %s (or --secret-env) to sign them", DEFAULT_SECRET_ENV
        )
    _serve(config, target, settings)

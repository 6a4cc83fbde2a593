"""pytest plugin: a real local Kafka broker (``scripts/kafka-local``) for integration tests.

Registered from ``tests/conftest.py`` with ``pytest_plugins = ["kafka_fixture"]`` (that
conftest also puts ``tests/`` on ``sys.path`` so the module imports as ``kafka_fixture``).

Fixtures:

``kafka_bootstrap`` (session)
    Runs ``scripts/kafka-local start`` once per session (a no-op when a broker already
    answers on the port) and returns ``"127.0.0.1:PORT"`` (``KAFKA_PORT``, default 9092).
    The broker is deliberately NOT stopped at the end of the session: the test runner
    script does ``scripts/kafka-local stop``. If the broker cannot be started, every test
    using it errors with the script's output (including the tail of the broker log).

``topic_factory`` (function)
    An async callable ``await topic_factory(partitions=1, *, prefix=None, config=None)``
    that creates a uniquely named topic (``<prefix>-<uuid hex>``, prefix defaults to the
    test name), waits until every partition has a leader, and returns its name. All
    topics it created are deleted at teardown.

Tests that use either fixture must carry ``@pytest.mark.kafka``; the plugin also adds the
marker automatically to any test that (directly or indirectly) requests them, so that
``-m "not kafka"`` always deselects them.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import uuid
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import UnknownTopicOrPartitionError, for_code

REPO_ROOT = Path(__file__).resolve().parent.parent
KAFKA_LOCAL = REPO_ROOT / "scripts" / "kafka-local"
KAFKA_HOST = "127.0.0.1"
KAFKA_FIXTURES = frozenset({"kafka_bootstrap", "topic_factory"})

TopicFactory = Callable[..., Awaitable[str]]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # tryfirst: runs before the built-in -m deselection, so the added marker counts.
    for item in items:
        uses_kafka = KAFKA_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses_kafka and item.get_closest_marker("kafka") is None:
            item.add_marker(pytest.mark.kafka)


def kafka_port() -> int:
    return int(os.environ.get("KAFKA_PORT", "9092"))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """Ensure the local broker is up (``scripts/kafka-local start``); return its bootstrap."""
    start_timeout = float(os.environ.get("KAFKA_START_TIMEOUT", "90"))
    try:
        proc = subprocess.run(
            [str(KAFKA_LOCAL), "start"],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            # Generous: a cold start may also apt-get Java/Maven and resolve jars.
            timeout=start_timeout + 900,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"scripts/kafka-local start hung: {exc}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(
            f"scripts/kafka-local start failed (exit {proc.returncode}):\n"
            f"{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )
    return f"{KAFKA_HOST}:{kafka_port()}"


def _check_errors(entries: list, action: str, ignore: tuple[type, ...] = ()) -> None:
    # CreateTopics / DeleteTopics responses: entries are (topic, error_code[, message, ...]).
    for entry in entries:
        topic, code = entry[0], entry[1]
        if code == 0:
            continue
        error_cls = for_code(code)
        if issubclass(error_cls, ignore):
            continue
        message = entry[2] if len(entry) > 2 and isinstance(entry[2], str) else ""
        raise error_cls(f"{action} topic {topic!r} failed: {message}".rstrip(": "))


async def _start_admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    return admin


async def create_topic(
    bootstrap: str,
    name: str,
    partitions: int = 1,
    config: Mapping[str, str] | None = None,
    timeout: float = 30.0,
) -> None:
    """Create ``name`` and wait until all ``partitions`` have a leader."""
    admin = await _start_admin(bootstrap)
    try:
        response = await admin.create_topics(
            [
                NewTopic(
                    name=name,
                    num_partitions=partitions,
                    replication_factor=1,
                    topic_configs=dict(config or {}),
                )
            ]
        )
        _check_errors(response.topic_errors, "creating")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            topics = await admin.describe_topics([name])
            described = next((t for t in topics if t.get("topic") == name), None)
            if (
                described is not None
                and described.get("error_code") == 0
                and len(described["partitions"]) == partitions
                and all(
                    p.get("error_code") == 0 and p.get("leader", -1) >= 0
                    for p in described["partitions"]
                )
            ):
                return
            if loop.time() > deadline:
                raise TimeoutError(f"topic {name!r} has no leader for every partition: {described}")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()


async def delete_topics(bootstrap: str, names: list[str]) -> None:
    """Delete ``names``; topics that are already gone are ignored."""
    admin = await _start_admin(bootstrap)
    try:
        response = await admin.delete_topics(names)
        _check_errors(
            response.topic_error_codes, "deleting", ignore=(UnknownTopicOrPartitionError,)
        )
    finally:
        await admin.close()


def _topic_prefix(request: pytest.FixtureRequest) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", request.node.name).strip("-.")
    return (name or "test")[:80]


@pytest.fixture
async def topic_factory(
    kafka_bootstrap: str, request: pytest.FixtureRequest
) -> AsyncIterator[TopicFactory]:
    """Async callable creating unique topics; they are deleted at teardown."""
    created: list[str] = []

    async def create(
        partitions: int = 1,
        *,
        prefix: str | None = None,
        config: Mapping[str, str] | None = None,
    ) -> str:
        name = f"{prefix or _topic_prefix(request)}-{uuid.uuid4().hex}"
        created.append(name)  # before creating: clean up even if the wait below fails
        await create_topic(kafka_bootstrap, name, partitions, config)
        return name

    yield create

    if created:
        try:
            await delete_topics(kafka_bootstrap, created)
        except Exception as exc:  # cleanup must not mask the test's own outcome
            warnings.warn(f"could not delete test topics {created}: {exc!r}", stacklevel=1)

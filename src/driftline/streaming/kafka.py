"""Talking to Kafka: client security, reachability, topics, co-partitioning.

Faust retries an unreachable broker forever and happily joins topics of
different partition counts; both leave a user staring at a silent worker.
These checks fail fast with a message that says what to do.

Every Kafka client of driftline (the worker's Faust app and changelog
writer, the admin clients here, ``simulate``, ``bench``, ``alerts tail``,
the bridges) takes its authentication and TLS settings from the one
``[security]`` section, through :func:`aiokafka_auth` (keyword arguments of
any aiokafka client) or :func:`faust_credentials` (Faust's
``broker_credentials``), and starts through :func:`start_client`, so that a
refused password reads the same, and as clearly, everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    UnsupportedSaslMechanismError,
)

from driftline.core.config import Config, SecurityConfig
from driftline.core.secret import redact


class KafkaSetupError(RuntimeError):
    """The broker or the topics are not as the worker needs them."""


# --------------------------------------------------------------------------
# client security


def ssl_context(security: SecurityConfig) -> ssl.SSLContext | None:
    """The TLS context of ``security`` (``None`` for a protocol without TLS).

    The key password is handed over as a callable: without one, OpenSSL
    prompts on the terminal for an encrypted key, and a worker under a
    supervisor would hang there instead of failing.
    """
    if not security.uses_tls:
        return None
    from aiokafka.helpers import create_ssl_context

    for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
        path = getattr(security, name)
        if path is not None and not os.path.isfile(path):
            raise KafkaSetupError(
                f"security.{name}: no such file {path!r} (relative paths are from {os.getcwd()})"
            )
    key_password = security.ssl_key_password

    def password() -> str:
        return key_password.reveal() if key_password is not None else ""

    try:
        context = create_ssl_context(
            cafile=security.ssl_cafile,
            certfile=security.ssl_certfile,
            keyfile=security.ssl_keyfile,
            password=password,
        )
    except (ssl.SSLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise KafkaSetupError(
            f"security: cannot load the TLS files (ssl_cafile={security.ssl_cafile!r},"
            f" ssl_certfile={security.ssl_certfile!r}, ssl_keyfile={security.ssl_keyfile!r}):"
            f" {reason}; a key that is encrypted needs security.ssl_key_password"
        ) from None
    context.check_hostname = security.ssl_check_hostname
    return context


def aiokafka_auth(security: SecurityConfig) -> dict[str, Any]:
    """Keyword arguments for any aiokafka client (consumer, producer, admin) to use ``security``.

    Empty for ``PLAINTEXT``, so an unsecured client is built exactly as
    before. The password goes in as the plain string aiokafka needs: the
    dict is for a constructor, never for printing.

    >>> aiokafka_auth(SecurityConfig())
    {}
    """
    if security.protocol == "PLAINTEXT":
        return {}
    kwargs: dict[str, Any] = {"security_protocol": security.protocol}
    if security.uses_tls:
        kwargs["ssl_context"] = ssl_context(security)
    if security.uses_sasl:
        assert security.password is not None  # load_config requires it for SASL
        kwargs.update(
            sasl_mechanism=security.sasl_mechanism,
            sasl_plain_username=security.username,
            sasl_plain_password=security.password.reveal(),
        )
    return kwargs


def faust_credentials(security: SecurityConfig) -> Any:
    """``broker_credentials`` for ``faust.App``: the same settings as :func:`aiokafka_auth`.

    ``None`` for ``PLAINTEXT`` (Faust's default). ``SASLCredentials`` with
    an SSL context becomes ``SASL_SSL``, without one ``SASL_PLAINTEXT``; the
    mechanism (``SCRAM-SHA-512`` ...) is passed by name. Faust's own repr
    of these credentials shows the username only.
    """
    if security.protocol == "PLAINTEXT":
        return None
    import faust

    context = ssl_context(security)
    if security.uses_sasl:
        assert security.password is not None
        return faust.SASLCredentials(
            username=security.username,
            password=security.password.reveal(),
            ssl_context=context,
            mechanism=security.sasl_mechanism,
        )
    return faust.SSLCredentials(context)


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """aiokafka logs each failed connection attempt; :func:`start_client` says it once."""
    log = logging.getLogger("aiokafka")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


async def start_client(client: Any, security: SecurityConfig, servers: str, timeout: float) -> None:
    """Start an aiokafka consumer, producer or admin client within ``timeout`` seconds.

    On failure the client is closed and a :class:`KafkaSetupError` says
    why, in the words of :func:`connect_failure`: "authentication failed
    for user ..." rather than aiokafka's "Unable to bootstrap".
    """
    try:
        with _quiet_aiokafka():
            await asyncio.wait_for(client.start(), timeout)
    except (TimeoutError, KafkaError, OSError) as exc:
        with contextlib.suppress(Exception):
            closing = client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop()
            await asyncio.wait_for(closing, 5)
        raise await connect_failure(security, servers, exc, timeout=min(timeout, 5.0)) from None


async def connect_failure(
    security: SecurityConfig, servers: str, exc: BaseException, timeout: float = 5.0
) -> KafkaSetupError:
    """The error for a client that could not start, naming the cause when the broker gave one.

    aiokafka's bootstrap logs why each broker failed and raises only
    "Unable to bootstrap from [...]": a refused password would read like a
    broker that is down. So this connects once more to each bootstrap
    broker, directly, with the same settings, and asks for metadata; the
    first answer that explains the failure (authentication refused, an
    unsupported mechanism, a listener of another protocol, a certificate
    not trusted) becomes the message. Nothing in the message can hold the
    password: it is built from the username and the broker's answer, and
    redacted all the same.
    """
    from aiokafka.conn import collect_hosts, create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    secrets = [security.password, security.ssl_key_password]
    what = str(exc) or "timed out"
    if not what.startswith(type(exc).__name__):
        what = f"{type(exc).__name__}: {what}"
    generic = (
        f"cannot reach Kafka at {servers} ({what});"
        " check --broker / DRIFTLINE_BROKER and that the broker is up"
        " (scripts/kafka-local start runs one locally)"
    )
    try:
        auth = aiokafka_auth(security)
    except KafkaSetupError as err:
        return err
    hints = []
    for host, port, _family in collect_hosts(servers):
        where = f"{host}:{port}"
        try:
            with _quiet_aiokafka():
                conn = await asyncio.wait_for(
                    create_conn(host, port, request_timeout_ms=int(timeout * 1000), **auth),
                    timeout,
                )
                try:
                    await asyncio.wait_for(conn.send(MetadataRequest([])), timeout)
                finally:
                    conn.close()
        except SaslAuthenticationFailed as err:
            detail = str(err).split(": ", 1)[-1]
            return KafkaSetupError(
                redact(
                    f"Kafka at {where}: authentication failed for user {security.username!r}"
                    f" with {security.sasl_mechanism} ({detail}); check security.username and"
                    " security.password (DRIFTLINE_SECURITY__USERNAME,"
                    " DRIFTLINE_SECURITY__PASSWORD)",
                    secrets,
                )
            )
        except UnsupportedSaslMechanismError:
            return KafkaSetupError(
                f"Kafka at {where} does not offer SASL mechanism {security.sasl_mechanism};"
                " set security.sasl_mechanism to one it offers (SCRAM-SHA-512, SCRAM-SHA-256"
                " or PLAIN)"
            )
        except IllegalSaslStateError:
            return KafkaSetupError(
                f"Kafka at {where} does not expect SASL on that port (security.protocol is"
                f" {security.protocol}); point --broker at the broker's {security.protocol}"
                " listener, or set security.protocol to what that listener speaks"
            )
        except ssl.SSLCertVerificationError as err:
            return KafkaSetupError(
                f"Kafka at {where}: TLS certificate not trusted ({err.verify_message});"
                " set security.ssl_cafile to the CA that signed the broker's certificate"
                " (or security.ssl_check_hostname = false if only the name differs)"
            )
        except ssl.SSLError as err:
            return KafkaSetupError(
                f"Kafka at {where}: TLS handshake failed ({err.reason or err}); is that port"
                f" a TLS listener? security.protocol is {security.protocol}"
            )
        except (
            KafkaError,
            ConnectionResetError,
            ConnectionAbortedError,
            asyncio.IncompleteReadError,
        ):
            hints.append(where)  # connected, then the broker hung up or sent nonsense
        except (TimeoutError, OSError):
            continue  # refused, unknown host, no answer: the generic message says it
        else:
            continue  # this broker works now: the failure was elsewhere (or passing)
    if hints:
        return KafkaSetupError(
            f"Kafka at {', '.join(hints)} accepted the connection, then hung up:"
            f" {_protocol_hint(security)}"
        )
    return KafkaSetupError(redact(generic, secrets))


def _protocol_hint(security: SecurityConfig) -> str:
    """What to check when a broker hangs up on a client (the listener speaks something else)."""
    if security.protocol == "PLAINTEXT":
        return (
            "if that listener needs authentication or TLS, set security.protocol"
            " (SASL_SSL, SASL_PLAINTEXT or SSL) and its settings"
        )
    if security.protocol == "SSL" and security.ssl_certfile is None:
        return (
            "if that listener requires a client certificate, set security.ssl_certfile and"
            " ssl_keyfile; if it is not a TLS listener, set security.protocol to what it speaks"
        )
    return f"if that listener does not speak {security.protocol}, set security.protocol to match"


def bootstrap_servers(broker: str) -> str:
    """``kafka://h1:9092;kafka://h2:9092`` or ``h1:9092,h2:9092`` -> ``h1:9092,h2:9092``.

    >>> bootstrap_servers("kafka://127.0.0.1:9092")
    '127.0.0.1:9092'
    >>> bootstrap_servers("kafka://a:1;kafka://b:2")
    'a:1,b:2'
    """
    hosts = []
    for part in broker.replace(";", ",").split(","):
        part = part.strip()
        if "://" in part:
            part = part.split("://", 1)[1]
        if part:
            hosts.append(part)
    if not hosts:
        raise KafkaSetupError(f"no broker address in {broker!r}")
    return ",".join(hosts)


@dataclass(frozen=True)
class TopicPlan:
    name: str
    partitions: int
    compacted: bool = False


def planned_topics(config: Config) -> list[TopicPlan]:
    """The topics driftline uses, with the partition counts it wants."""
    t = config.topics
    return [
        TopicPlan(t.predictions, t.partitions),
        TopicPlan(t.outcomes, t.partitions),
        TopicPlan(config.model_events_topic, t.partitions),
        TopicPlan(t.alerts, t.partitions),
        TopicPlan(t.dead_letter, t.partitions),
    ]


async def _admin(config: Config, timeout: float) -> AIOKafkaAdminClient:
    servers = bootstrap_servers(config.broker)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=servers,
        request_timeout_ms=int(timeout * 1000),
        **aiokafka_auth(config.security),
    )
    await start_client(admin, config.security, servers, timeout)
    return admin


async def partition_counts(
    config: Config, names: list[str], timeout: float = 10.0
) -> dict[str, int]:
    """Partition count of each existing topic among ``names`` (missing ones are absent).

    Only topics that exist are described: a metadata request that names a
    missing topic makes a broker with ``auto.create.topics.enable`` (the
    default) create it, with the broker's default partition count.
    """
    admin = await _admin(config, timeout)
    try:
        existing = set(await admin.list_topics())
        wanted = [n for n in names if n in existing]
        described = await admin.describe_topics(wanted) if wanted else []
    finally:
        await admin.close()
    out = {}
    for t in described:
        if t.get("error_code", 0) == 0 and t.get("partitions"):
            out[t["topic"]] = len(t["partitions"])
    return out


async def create_topics(
    config: Config, replication_factor: int = 1, timeout: float = 10.0
) -> dict[str, str]:
    """Create driftline's topics; return what happened to each."""
    admin = await _admin(config, timeout)
    result: dict[str, str] = {}
    try:
        existing = set(await admin.list_topics())
        for plan in planned_topics(config):
            if plan.name in existing or plan.name in result:
                result[plan.name] = "exists"
                continue
            try:
                await admin.create_topics(
                    [NewTopic(plan.name, plan.partitions, replication_factor)]
                )
                result[plan.name] = f"created with {plan.partitions} partitions"
            except TopicAlreadyExistsError:
                result[plan.name] = "exists"
    finally:
        await admin.close()
    return result


async def preflight(config: Config, timeout: float = 10.0) -> dict[str, int]:
    """Fail fast unless the broker answers and the input topics are co-partitioned.

    The join relies on a request's prediction and outcome landing on the
    same partition number, which holds only when both topics have the same
    partition count and producers key both by request id. The join table's
    changelog has ``topics.partitions`` partitions, so the inputs may not
    have more. Then makes sure the internal model-event topic exists (see
    :func:`ensure_internal_topic`).
    """
    t = config.topics
    counts = await partition_counts(config, [t.predictions, t.outcomes], timeout)
    missing = [n for n in (t.predictions, t.outcomes) if n not in counts]
    if missing:
        raise KafkaSetupError(
            f"topic(s) {', '.join(missing)} do not exist; run `driftline topics create`"
            " (or create them with the same partition count)"
        )
    if counts[t.predictions] != counts[t.outcomes]:
        raise KafkaSetupError(
            f"topics {t.predictions} ({counts[t.predictions]} partitions) and {t.outcomes}"
            f" ({counts[t.outcomes]} partitions) are not co-partitioned: outcomes could never"
            " meet their predictions. Give both the same partition count and key both by"
            " request id."
        )
    if counts[t.predictions] > t.partitions:
        raise KafkaSetupError(
            f"topics {t.predictions} and {t.outcomes} have {counts[t.predictions]} partitions,"
            f" more than topics.partitions = {t.partitions}, the partition count of the join"
            " table's changelog: the requests of the extra partitions could not be stored."
            f" Set topics.partitions (DRIFTLINE_TOPICS__PARTITIONS) to {counts[t.predictions]}."
        )
    await ensure_internal_topic(config, timeout=timeout)
    return counts


CHECKPOINT_MAX_BYTES = 16 << 20
"""Largest monitor checkpoint (one model, every version): ~25 kB per warm version."""


async def topic_max_message_bytes(config: Config, name: str, timeout: float = 10.0) -> int | None:
    """The ``max.message.bytes`` of topic ``name``, or None if it does not exist (yet)."""
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = await _admin(config, timeout)
    try:
        if name not in set(await admin.list_topics()):
            return None
        resource = ConfigResource(ConfigResourceType.TOPIC, name, configs={"max.message.bytes": ""})
        for response in await admin.describe_configs([resource]):
            for _, _, _, _, entries in response.resources:
                for entry in entries:
                    if entry[0] == "max.message.bytes":
                        return int(entry[1])
        return None
    finally:
        await admin.close()


def internal_topics(config: Config) -> list[tuple[str, dict[str, str]]]:
    """The worker's internal topics and their settings."""
    return [
        (config.model_events_topic, {}),
        (
            config.checkpoint_topic,
            {"cleanup.policy": "compact", "max.message.bytes": str(CHECKPOINT_MAX_BYTES)},
        ),
    ]


async def ensure_internal_topic(
    config: Config, replication_factor: int = 1, timeout: float = 10.0
) -> None:
    """Create the internal topics unless they exist; wait for their leaders.

    Faust declares the model-event topic too, but only just before its
    consumer subscribes: when the broker's metadata does not list the new
    topic yet, the group leader ignores it ("Ignoring missing topic") and
    the monitor agent gets no partition until the next metadata refresh,
    minutes later. The checkpoint topic is only written and read by the
    worker's own clients.
    """
    admin = await _admin(config, timeout)
    try:
        existing = set(await admin.list_topics())
        for name, topic_config in internal_topics(config):
            if name in existing:
                continue
            response = await admin.create_topics(
                [
                    NewTopic(
                        name,
                        config.topics.partitions,
                        replication_factor,
                        topic_configs=topic_config,
                    )
                ]
            )
            for entry in response.topic_errors:
                if entry[1] not in (0, TopicAlreadyExistsError.errno):
                    raise KafkaSetupError(f"cannot create topic {name}: {entry}")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        names = [name for name, _ in internal_topics(config)]
        while True:
            described = await admin.describe_topics(names)
            ok = [t for t in described if t.get("error_code") == 0 and t["partitions"]]
            parts = [p for t in ok for p in t["partitions"]]
            if len(ok) == len(names) and all(p.get("leader", -1) >= 0 for p in parts):
                return
            if loop.time() > deadline:
                raise KafkaSetupError(f"topics {names} have no leader for every partition")
            await asyncio.sleep(0.1)
    finally:
        await admin.close()

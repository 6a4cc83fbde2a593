"""driftline against a secured Kafka: SASL/SCRAM, SCRAM over TLS, mutual TLS.

A module fixture starts a broker of its own with ``scripts/kafka-local``
(``KAFKA_SECURITY=scram,tls`` on free ports, a random SCRAM password) next
to the shared one on 9092, which it never touches; it stops the broker and
removes its data directory at the end, whatever happened. A broker that
cannot start fails the tests: they never skip.

What is asserted:

* the right credentials work, through driftline's own helper
  (:func:`~driftline.streaming.kafka.aiokafka_auth`), for every protocol,
  and through the real commands: ``topics create``, the worker (up to
  ``/healthz`` ok and records joined), ``simulate``, ``alerts tail`` and
  both bridges;
* wrong credentials make every command fail within seconds, saying
  "authentication failed for user ..." and never the password;
* no secret (the Kafka password, the webhook secret, the PagerDuty routing
  key) appears in any output, log line or ``/models`` answer of those runs;
* the worker's HTTP server listens on 127.0.0.1 unless told otherwise, and
  the bridges listen on nothing but loopback.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from driftline.core.config import load_config
from driftline.streaming.kafka import aiokafka_auth, bootstrap_servers, start_client
from integration.bridge_endpoints import FakePagerDuty, FakeWebhook

pytestmark = pytest.mark.kafka

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_LOCAL = REPO_ROOT / "scripts" / "kafka-local"
DRIFTLINE = [sys.executable, "-m", "driftline.cli"]
USER = "driftline"
FAIL_FAST = 20.0  # seconds a refused command may take, Python start-up included (2 cores)


# --------------------------------------------------------------------------
# the secured broker


@dataclass(frozen=True)
class SecureBroker:
    """Where the secured broker listens, and the SCRAM user it was formatted with."""

    port: int  # PLAINTEXT (not used by driftline here)
    password: str = field(repr=False)  # pytest prints fixture values in failures
    tls_dir: Path

    @property
    def sasl_port(self) -> int:
        return self.port + 2

    @property
    def sasl_ssl_port(self) -> int:
        return self.port + 3

    @property
    def ssl_port(self) -> int:
        return self.port + 4

    def env(self, *, protocol: str = "SASL_PLAINTEXT", **over: str) -> dict[str, str]:
        """``DRIFTLINE_*`` settings to reach this broker with ``protocol``."""
        port = {
            "PLAINTEXT": self.port,
            "SASL_PLAINTEXT": self.sasl_port,
            "SASL_SSL": self.sasl_ssl_port,
            "SSL": self.ssl_port,
        }[protocol]
        env = {
            "DRIFTLINE_BROKER": f"kafka://127.0.0.1:{port}",
            "DRIFTLINE_SECURITY__PROTOCOL": protocol,
        }
        if protocol.startswith("SASL_"):
            env["DRIFTLINE_SECURITY__USERNAME"] = USER
            env["DRIFTLINE_SECURITY__PASSWORD"] = self.password
        if protocol in ("SSL", "SASL_SSL"):
            env["DRIFTLINE_SECURITY__SSL_CAFILE"] = str(self.tls_dir / "ca.pem")
        if protocol == "SSL":
            env["DRIFTLINE_SECURITY__SSL_CERTFILE"] = str(self.tls_dir / "client.pem")
            env["DRIFTLINE_SECURITY__SSL_KEYFILE"] = str(self.tls_dir / "client.key")
        env.update({f"DRIFTLINE_{k.upper()}": v for k, v in over.items()})
        return env


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_block(size: int) -> int:
    """A base port with ``size`` consecutive free ports (broker, controller, 3 listeners)."""
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20_000, 45_000)
        if all(_port_free(base + i) for i in range(size)):
            return base
    raise RuntimeError(f"no {size} consecutive free ports found")


def _kafka_local(command: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(KAFKA_LOCAL), command],
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="module")
def secure_broker() -> Iterator[SecureBroker]:
    """A SCRAM + TLS broker of this module's own; stopped and wiped at the end."""
    port = _free_port_block(5)
    password = secrets.token_urlsafe(18)
    env = dict(os.environ)
    env.update(
        KAFKA_PORT=str(port),
        KAFKA_CONTROLLER_PORT=str(port + 1),
        KAFKA_SASL_PORT=str(port + 2),
        KAFKA_SASL_SSL_PORT=str(port + 3),
        KAFKA_SSL_PORT=str(port + 4),
        KAFKA_SECURITY="scram,tls",
        KAFKA_SCRAM_USER=USER,
        KAFKA_SCRAM_PASSWORD=password,
    )
    local_dir = REPO_ROOT / env.get("KAFKA_LOCAL_DIR", ".cache/kafka-local")
    data_dir = local_dir / f"data-{port}"
    start_timeout = float(env.get("KAFKA_START_TIMEOUT", "90"))
    try:
        started = time.monotonic()
        try:
            proc = _kafka_local("start", env, start_timeout + 900)  # a cold start resolves jars
        except subprocess.TimeoutExpired as exc:
            pytest.fail(f"scripts/kafka-local start (secured) hung: {exc}", pytrace=False)
        if proc.returncode != 0:
            pytest.fail(
                f"scripts/kafka-local start with KAFKA_SECURITY=scram,tls failed"
                f" (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}",
                pytrace=False,
            )
        print(f"secured broker on {port}..{port + 4} up in {time.monotonic() - started:.1f}s")
        yield SecureBroker(port, password, data_dir / "tls")
    finally:
        stop = _kafka_local("stop", env, 60)
        if stop.returncode != 0:
            print(f"scripts/kafka-local stop failed:\n{stop.stdout}\n{stop.stderr}")
        else:
            shutil.rmtree(data_dir, ignore_errors=True)


# --------------------------------------------------------------------------
# helpers


def clean_env(extra: dict[str, str]) -> dict[str, str]:
    """This environment without any ``DRIFTLINE_*`` or bridge secret, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DRIFTLINE_") and k != "PAGERDUTY_ROUTING_KEY"
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def topic_env(prefix: str) -> dict[str, str]:
    """Topic names and app id of one test's own."""
    return {
        "DRIFTLINE_APP_ID": f"{prefix}app",
        "DRIFTLINE_TOPICS__PREDICTIONS": f"{prefix}predictions",
        "DRIFTLINE_TOPICS__OUTCOMES": f"{prefix}outcomes",
        "DRIFTLINE_TOPICS__ALERTS": f"{prefix}alerts",
        "DRIFTLINE_TOPICS__DEAD_LETTER": f"{prefix}dead-letter",
        "DRIFTLINE_TOPICS__PARTITIONS": "2",
    }


@dataclass
class Run:
    """One finished command: what it printed and how long it took."""

    name: str
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def describe(self) -> str:
        return (
            f"{self.name}: exit {self.returncode} after {self.seconds:.1f}s\n"
            f"--- stdout ---\n{self.stdout}\n--- stderr ---\n{self.stderr}"
        )


async def run_cli(
    name: str, args: list[str], env: dict[str, str], cwd: Path, timeout: float = 60.0
) -> Run:
    """``driftline ARGS`` to completion (killed after ``timeout``)."""
    started = time.monotonic()
    proc = await asyncio.create_subprocess_exec(
        *DRIFTLINE,
        *args,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        out, err = await proc.communicate()
    return Run(name, proc.returncode, out.decode(), err.decode(), time.monotonic() - started)


class Background:
    """A long-running ``driftline`` command (worker, bridge) with its output in a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.log_path = workdir / f"{name}.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [*DRIFTLINE, *args],
                env=env,
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.log()}")

    async def stop(self, timeout: float = 20.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.proc.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if self.proc.poll() is None:
                self.proc.kill()
                await asyncio.to_thread(self.proc.wait)
        return self.proc.returncode


def http_get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read()


async def wait_for(condition: Any, what: str, timeout: float, *alive: Background) -> None:
    deadline = time.monotonic() + timeout
    while True:
        for process in alive:
            process.check_alive()
        try:
            if await asyncio.to_thread(condition):
                return
        except OSError:
            pass  # not listening yet
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout:.0f}s")
        await asyncio.sleep(0.2)


def _decode_address(hex_address: str) -> str:
    raw_ip, _port = hex_address.split(":")
    data = bytes.fromhex(raw_ip)
    if len(data) == 4:
        return socket.inet_ntop(socket.AF_INET, data[::-1])
    # /proc/net/tcp6: four 32-bit words, each in host (little-endian) order.
    words = b"".join(data[i : i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """The (address, port) of every TCP socket ``pid`` listens on (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                found.append((_decode_address(local), int(local.split(":")[1], 16)))
    return found


def assert_no_secret(texts: dict[str, str], secret_values: dict[str, str]) -> None:
    """No secret in any text; the failure names the text and the secret, never its value."""
    leaks = [
        f"{what} appears in {where}"
        for where, text in texts.items()
        for what, value in secret_values.items()
        if value and value in text
    ]
    assert not leaks, "secrets leaked: " + "; ".join(leaks)


# --------------------------------------------------------------------------
# the helper, every protocol


@pytest.mark.parametrize(
    "protocol, mechanism",
    [
        ("SASL_PLAINTEXT", "SCRAM-SHA-512"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
        ("SASL_SSL", "SCRAM-SHA-512"),
        ("SSL", None),  # mutual TLS: the listener requires a client certificate
    ],
)
async def test_helper_round_trip(secure_broker: SecureBroker, protocol: str, mechanism: str | None):
    over = {"security__sasl_mechanism": mechanism} if mechanism else {}
    config = load_config(env=secure_broker.env(protocol=protocol, **over))
    security = config.security
    servers = bootstrap_servers(config.broker)
    topic = f"dlsec-{protocol.lower()}-{uuid.uuid4().hex[:8]}"

    admin = AIOKafkaAdminClient(bootstrap_servers=servers, **aiokafka_auth(security))
    await start_client(admin, security, servers, 10)
    producer = AIOKafkaProducer(bootstrap_servers=servers, acks="all", **aiokafka_auth(security))
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=servers,
        group_id=None,
        auto_offset_reset="earliest",
        **aiokafka_auth(security),
    )
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
        await start_client(producer, security, servers, 10)
        await producer.send_and_wait(topic, b"over " + protocol.encode(), key=b"k")
        await start_client(consumer, security, servers, 10)
        message = await asyncio.wait_for(consumer.getone(), 15)
        assert message.value == b"over " + protocol.encode()
    finally:
        await producer.stop()
        await consumer.stop()
        await admin.delete_topics([topic])
        await admin.close()


async def test_bench_clients_over_scram(
    secure_broker: SecureBroker, monkeypatch: pytest.MonkeyPatch
):
    """The bench's own producer, raw reader and bare Faust child (which reads the environment)."""
    from driftline.bench.baselines import bare_faust_rate_async, raw_aiokafka_rate
    from driftline.bench.produce import preproduce
    from driftline.bench.stream import check_broker, delete_topics_with_prefix

    env = secure_broker.env()
    for name, value in env.items():
        monkeypatch.setenv(name, value)  # what the bench's child processes inherit
    config = load_config(env=env)
    servers, security = bootstrap_servers(config.broker), config.security
    prefix = f"dlsec-bench-{uuid.uuid4().hex[:8]}-"
    topics = [f"{prefix}predictions", f"{prefix}outcomes"]
    await check_broker(servers, security=security)
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, **aiokafka_auth(security))
    await start_client(admin, security, servers, 10)
    try:
        await admin.create_topics([NewTopic(t, 1, 1) for t in topics])
    finally:
        await admin.close()
    try:
        produced = await preproduce(
            servers, *topics, pairs=40, models=2, features=2, batch=10, security=security
        )
        raw = await raw_aiokafka_rate(
            servers, topics, produced.messages, timeout=30, security=security
        )
        bare = await bare_faust_rate_async(servers, topics, produced.messages, timeout=60)
        assert raw.records == bare.records == 80
    finally:
        await delete_topics_with_prefix(servers, prefix, security=security)


# --------------------------------------------------------------------------
# every command, right credentials


async def test_driftline_over_scram(secure_broker: SecureBroker, tmp_path: Path):
    prefix = f"dlsec-{uuid.uuid4().hex[:8]}-"
    webhook_secret = secrets.token_hex(16)
    routing_key = secrets.token_hex(16)
    env = clean_env({**secure_broker.env(), **topic_env(prefix)})
    outputs: dict[str, str] = {}

    created = await run_cli("topics create", ["topics", "create"], env, tmp_path)
    outputs["topics create"] = created.output
    assert created.returncode == 0, created.describe()
    assert f"{prefix}predictions: created with 2 partitions" in created.stdout

    web_port = _free_port_block(1)
    # No --web-host: the default must be loopback.
    worker = Background(
        "worker",
        ["worker", "--web-port", str(web_port), "--data-dir", "data", "--loglevel", "info"],
        env,
        tmp_path,
    )
    webhook = FakeWebhook(webhook_secret)
    pagerduty = FakePagerDuty(routing_key)
    await webhook.server.start()
    await pagerduty.server.start()
    bridges: list[Background] = []
    base = f"http://127.0.0.1:{web_port}"
    try:

        def healthy() -> bool:
            return orjson.loads(http_get(base + "/healthz")).get("status") == "ok"

        await wait_for(healthy, "worker /healthz ok", 60, worker)
        worker_listens = listening_addresses(worker.proc.pid)
        assert worker_listens, "the worker listens on nothing?"
        assert {host for host, _ in worker_listens} == {"127.0.0.1"}, worker_listens

        sim_args = [
            "--duration",
            "2",
            "--rate",
            "40",
            "--models",
            "2",
            "--label-delay",
            "fixed:0.2",
        ]
        simulated = await run_cli("simulate", ["simulate", *sim_args], env, tmp_path)
        outputs["simulate"] = simulated.output
        assert simulated.returncode == 0, simulated.describe()

        def joined() -> bool:
            models = orjson.loads(http_get(base + "/models"))
            return sum(m["joined"] for m in models) > 0

        await wait_for(joined, "records joined by the worker", 30, worker)
        outputs["/models"] = http_get(base + "/models").decode()
        outputs["/healthz"] = http_get(base + "/healthz").decode()

        # One alert on the alert topic, through driftline's helper, for the readers below.
        config = load_config(env=env)
        servers = bootstrap_servers(config.broker)
        producer = AIOKafkaProducer(bootstrap_servers=servers, **aiokafka_auth(config.security))
        await start_client(producer, config.security, servers, 10)
        alert = {
            "alert_id": f"{prefix}a1",
            "dedup_key": "driftline/fraud/v1/concept_drift",
            "status": "firing",
            "severity": "error",
            "kind": "concept_drift",
            "model_id": "fraud",
            "model_version": "v1",
            "segment": None,
            "monitor": "concept_drift",
            "summary": "fraud v1: error rate rose from 9.8% to 44.0%",
            "event_time": time.time(),
            "emitted_at": time.time(),
        }
        try:
            await producer.send_and_wait(
                config.topics.alerts, orjson.dumps(alert), key=alert["dedup_key"].encode()
            )
        finally:
            await producer.stop()

        tailed = await run_cli("alerts tail", ["alerts", "tail"], env, tmp_path)
        outputs["alerts tail"] = tailed.output
        assert tailed.returncode == 0, tailed.describe()
        assert "fraud v1: error rate rose" in tailed.stdout
        assert "1 alert(s)" in tailed.stderr

        bridge_env = {**env, "DRIFTLINE_WEBHOOK_SECRET": webhook_secret}
        bridge_env["PAGERDUTY_ROUTING_KEY"] = routing_key
        bridges = [
            Background(
                f"bridge-{kind}",
                ["bridge", kind, *target, "--group", f"{prefix}{kind}", "--log-level", "debug"],
                bridge_env,
                tmp_path,
            )
            for kind, target in (
                ("webhook", ["--url", webhook.url]),
                ("pagerduty", ["--events-url", pagerduty.url]),
            )
        ]
        await wait_for(
            lambda: len(webhook.processed) >= 1 and pagerduty.processed_total >= 1,
            "the alert delivered by both bridges",
            30,
            *bridges,
        )
        assert not webhook.violations and not pagerduty.violations
        for bridge in bridges:
            listens = [a for a in listening_addresses(bridge.proc.pid) if a[0] != "127.0.0.1"]
            assert not listens, f"{bridge.name} listens beyond loopback: {listens}"
    except BaseException:
        for process in (worker, *bridges):
            print(f"----- {process.name} log -----\n{process.log()[-6000:]}")
        raise
    finally:
        for bridge in bridges:
            await bridge.stop()
        await worker.stop()
        await webhook.server.stop()
        await pagerduty.server.stop()

    outputs["worker log"] = worker.log()
    for bridge in bridges:
        outputs[bridge.name] = bridge.log()
    # The worker did authenticate (aiokafka says so at INFO), and said nothing secret.
    assert f"Authenticated as {USER} via SCRAM-SHA-512" in outputs["worker log"]
    assert_no_secret(
        outputs,
        {
            "the Kafka password": secure_broker.password,
            "the webhook secret": webhook_secret,
            "the PagerDuty routing key": routing_key,
        },
    )


# --------------------------------------------------------------------------
# every command, wrong credentials


async def test_wrong_credentials_fail_fast_and_say_why(secure_broker: SecureBroker, tmp_path: Path):
    prefix = f"dlsec-{uuid.uuid4().hex[:8]}-"
    wrong = secrets.token_urlsafe(12)
    webhook_secret, routing_key = secrets.token_hex(8), secrets.token_hex(8)
    bad = clean_env(
        {
            **secure_broker.env(),
            **topic_env(prefix),
            "DRIFTLINE_SECURITY__PASSWORD": wrong,
            "DRIFTLINE_WEBHOOK_SECRET": webhook_secret,
            "PAGERDUTY_ROUTING_KEY": routing_key,
        }
    )
    stranger = {**bad, "DRIFTLINE_SECURITY__USERNAME": "mallory"}
    unsecured = clean_env(
        {"DRIFTLINE_BROKER": f"kafka://127.0.0.1:{secure_broker.sasl_port}", **topic_env(prefix)}
    )
    port = str(_free_port_block(1))
    commands = [
        ("topics create", ["topics", "create"], bad),
        ("worker", ["worker", "--web-port", port, "--data-dir", "data"], bad),
        ("simulate", ["simulate", "--duration", "1", "--models", "1"], bad),
        ("alerts tail", ["alerts", "tail"], bad),
        ("bridge webhook", ["bridge", "webhook", "--url", "http://127.0.0.1:9/hook"], bad),
        ("bridge pagerduty", ["bridge", "pagerduty"], bad),
        ("topics create as mallory", ["topics", "create"], stranger),
        ("topics create unsecured", ["topics", "create"], unsecured),
    ]
    runs = await asyncio.gather(
        *(run_cli(name, args, env, tmp_path, timeout=60) for name, args, env in commands)
    )
    for run in runs:
        print(f"{run.name}: exit {run.returncode} in {run.seconds:.1f}s")
    for run in runs:
        assert run.returncode not in (0, None), run.describe()
        assert run.seconds < FAIL_FAST, f"took {run.seconds:.1f}s\n{run.describe()}"
        assert "Traceback" not in run.output, run.describe()
        if run.name == "topics create unsecured":
            assert "accepted the connection, then hung up" in run.stderr, run.describe()
            assert "set security.protocol" in run.stderr, run.describe()
        elif run.name.endswith("mallory"):
            assert "authentication failed for user 'mallory'" in run.stderr, run.describe()
        else:
            assert f"authentication failed for user '{USER}'" in run.stderr, run.describe()
    assert_no_secret(
        {run.name: run.output for run in runs},
        {
            "the wrong password": wrong,
            "the right password": secure_broker.password,
            "the webhook secret": webhook_secret,
            "the PagerDuty routing key": routing_key,
        },
    )

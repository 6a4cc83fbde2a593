"""A real Prometheus scrapes a real worker: what its query API answers is what was sent.

The worker runs as ``driftline worker`` (tests/integration/worker_harness.py)
on the test's own topics; Prometheus is the Debian ``prometheus`` binary on
loopback, with a scratch config that scrapes the worker every second and
loads deploy/prometheus/rules.yml. A plain aiokafka producer sends known
traffic, and the test asks Prometheus (``/api/v1/query``, ``/api/v1/alerts``)
rather than the worker, so the whole path is covered: the collectors, the
exposition format, the scrape, and the rules on real series. A scrape taken
while the worker is busy must also pass ``promtool check metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from integration.worker_harness import (
    Producer,
    WorkerProcess,
    free_port,
    make_topics,
    running_worker,
)

pytestmark = pytest.mark.kafka

REPO_ROOT = Path(__file__).resolve().parents[2]
RULES = REPO_ROOT / "deploy" / "prometheus" / "rules.yml"
T0 = 1_700_000_000.0

CONFIG = """
label_ttl = "1h"

[alerts]
warmup_predictions = 10

[monitors.performance]
window = 50
thresholds = [{metric = "accuracy", below = 0.5, for_events = 50, severity = "critical"}]
"""


def http_get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read()


class Prometheus:
    """A ``prometheus`` process on 127.0.0.1 and its HTTP API."""

    def __init__(self, base_url: str, log_path: Path) -> None:
        self.base_url = base_url
        self.log_path = log_path

    async def api(self, path: str, **params: str) -> Any:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        body = json.loads(await asyncio.to_thread(http_get, url))
        assert body["status"] == "success", body
        return body["data"]

    async def query(self, promql: str) -> dict[str, float]:
        """An instant query: {rendered labels: value} (``{}`` when nothing matches)."""
        data = await self.api("/api/v1/query", query=promql)
        return {
            json.dumps(r["metric"], sort_keys=True): float(r["value"][1]) for r in data["result"]
        }

    async def value(self, promql: str) -> float | None:
        result = await self.query(promql)
        assert len(result) <= 1, f"{promql} matched several series: {result}"
        return next(iter(result.values()), None)

    async def wait_for(
        self, promql: str, expected: float | Callable[[float | None], bool], timeout: float = 20.0
    ) -> float | None:
        """Poll ``promql`` until its one value is ``expected`` (or satisfies it)."""
        check = expected if callable(expected) else (lambda v: v == expected)
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            got = await self.value(promql)
            if check(got):
                return got
            await asyncio.sleep(0.25)
        raise AssertionError(f"Prometheus: {promql} = {got}, expected {expected} by now")

    def print_log(self) -> None:
        print("----- prometheus log -----")
        print(self.log_path.read_text(errors="replace")[-8000:])
        print("----- end of prometheus log -----")


@contextlib.asynccontextmanager
async def running_prometheus(workdir: Path, target: str) -> AsyncIterator[Prometheus]:
    """Prometheus scraping ``target`` every second with deploy/prometheus/rules.yml;
    stopped on exit, also when the body fails (its log is printed then)."""
    exe = shutil.which("prometheus")
    assert exe, "prometheus not found: install it (scripts/test-deps)"
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / "prometheus.yml"
    config.write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(RULES)],
                "scrape_configs": [
                    {"job_name": "driftline", "static_configs": [{"targets": [target]}]}
                ],
            }
        )
    )
    log_path = workdir / "prometheus.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                exe,
                f"--config.file={config}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    prom = Prometheus(f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"prometheus exited with status {proc.returncode}"
            try:
                await asyncio.to_thread(http_get, f"{prom.base_url}/-/ready", 1.0)
                break
            except OSError:
                assert time.monotonic() < deadline, "prometheus not ready after 30 s"
                await asyncio.sleep(0.1)
        yield prom
    except BaseException:
        prom.print_log()
        raise
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)


def records(prefix: str, model: str, n: int, label: Any, outcome: Any, delay: float) -> tuple:
    preds = [
        {
            "request_id": f"{prefix}-{i}",
            "model_id": model,
            "prediction": label,
            "score": 0.9,
            "timestamp": T0 + i,
        }
        for i in range(n)
    ]
    outs = [
        {"request_id": f"{prefix}-{i}", "outcome": outcome, "timestamp": T0 + i + delay}
        for i in range(n)
    ]
    return preds, outs


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


async def scrape_under_load(
    worker: WorkerProcess, producer: Producer, topics: Any, tmp_path: Path
) -> list[bytes]:
    """Send 3000 batched pairs of model ``bulk`` and scrape ``/metrics`` meanwhile."""
    preds, outs = records("b", "bulk", 3000, 1, 1, 5.0)

    async def send() -> None:
        for p_batch, o_batch in zip(chunks(preds, 100), chunks(outs, 100), strict=True):
            await producer.send(topics.predictions, p_batch, key=b"bulk", partition=1)
            await producer.send(topics.outcomes, o_batch, key=b"bulk", partition=1)

    sending = asyncio.create_task(send())
    scrapes = []
    while True:
        scrapes.append(await asyncio.to_thread(http_get, worker.base_url + "/metrics"))
        models = await worker.models()
        if models.get("bulk", {}).get("joined") == 3000:
            break
        await asyncio.sleep(0.1)
    await sending
    return scrapes


async def test_prometheus_sees_what_was_sent(kafka_bootstrap, topic_factory, tmp_path):
    started = time.monotonic()
    topics = await make_topics(topic_factory, 2)
    fraud_p, fraud_o = records("f", "fraud", 300, 1, 1, 30.0)  # right, outcomes 30 s later
    acc_p, acc_o = records("a", "acc", 100, 1, 0, 5.0)  # all wrong: a critical alert
    async with (
        running_worker(
            kafka_bootstrap, topics, tmp_path, partitions=2, config_text=CONFIG
        ) as worker,
        running_prometheus(tmp_path / "prometheus", f"127.0.0.1:{worker.port}") as prom,
        Producer(kafka_bootstrap) as producer,
    ):
        # Batched messages on one partition, so each request's records keep their order.
        for batch in chunks(fraud_p, 50) + chunks(acc_p, 50):
            await producer.send(topics.predictions, batch, key=b"batch", partition=0)
        for batch in chunks(fraud_o, 50) + chunks(acc_o, 50):
            await producer.send(topics.outcomes, batch, key=b"batch", partition=0)
        for p in fraud_p[:5]:  # retried predictions and outcomes
            await producer.send(topics.predictions, p, key=p["request_id"], partition=0)
        for o in fraud_o[:3]:
            await producer.send(topics.outcomes, o, key=o["request_id"], partition=0)
        await producer.send(topics.predictions, b"{not json", key=b"bad", partition=1)

        scrapes = await scrape_under_load(worker, producer, topics, tmp_path)

        fraud = '{model="fraud", version="unversioned"}'
        await prom.wait_for(f"driftline_joined_total{fraud}", 300)
        assert await prom.value(f"driftline_predictions_total{fraud}") == 300
        assert await prom.value(f"driftline_outcomes_total{fraud}") == 300
        await prom.wait_for(f"driftline_duplicates_total{fraud}", 8)
        assert await prom.value(f"driftline_expired_total{fraud}") == 0
        await prom.wait_for("driftline_joined_total{model='bulk'}", 3000)
        assert await prom.value("sum(driftline_dead_letters_total)") == 1
        assert (
            await prom.value(
                f'driftline_dead_letters_total{{topic="{topics.predictions}",'
                ' reason="invalid_json"}'
            )
            == 1
        )
        delay = 'driftline_outcome_delay_seconds_bucket{model="fraud", le="%s"}'
        assert await prom.value(delay % "15.0") == 0
        assert await prom.value(delay % "30.0") == 300
        assert await prom.value(delay % "+Inf") == 300
        assert await prom.value('driftline_model_metric{model="fraud", metric="accuracy"}') == 1
        assert await prom.value('driftline_model_state{model="fraud", state="ok"}') == 1

        acc = 'model="acc", version="unversioned"'
        await prom.wait_for(f'driftline_model_metric{{{acc}, metric="accuracy"}}', 0)
        firing = f'{acc}, monitor="threshold:accuracy:below", severity="critical"'
        await prom.wait_for(f"driftline_alerts_firing{{{firing}}}", 1)
        assert await prom.value(f'driftline_model_state{{{acc}, state="critical"}}') == 1

        latency = await prom.value("driftline_processing_latency_seconds_count")
        assert latency is not None and latency >= 300 + 100 + 3000
        assert await prom.value("up{job='driftline'}") == 1
        await prom.wait_for("sum(driftline_consumer_lag)", 0)  # once the offsets are committed
        received = await prom.value(
            f'driftline_faust_messages_received_total{{topic="{topics.predictions}"}}'
        )
        assert received == 6 + 2 + 5 + 1 + 30  # Faust's own sensor, read at scrape time

        # The rules of deploy/prometheus on real series: all evaluate, and the
        # worker's alert is mirrored (no `for`), with its labels.
        async def alerts() -> list[dict[str, Any]]:
            return (await prom.api("/api/v1/alerts"))["alerts"]

        deadline = time.monotonic() + 10
        while not any(a["labels"]["alertname"] == "DriftlineModelAlert" for a in await alerts()):
            assert time.monotonic() < deadline, await alerts()
            await asyncio.sleep(0.25)
        (mirrored,) = [
            a for a in await alerts() if a["labels"]["alertname"] == "DriftlineModelAlert"
        ]
        assert mirrored["state"] == "firing"
        assert mirrored["labels"]["model"] == "acc"
        assert mirrored["labels"]["severity"] == "critical"
        groups = (await prom.api("/api/v1/rules"))["groups"]
        assert all(r["health"] == "ok" for g in groups for r in g["rules"]), groups

    # The scrapes taken while the worker was busy pass promtool's lint.
    promtool = shutil.which("promtool")
    assert promtool, "promtool not found: install prometheus (scripts/test-deps)"
    assert len(scrapes) >= 2
    for body in (scrapes[0], scrapes[len(scrapes) // 2], scrapes[-1]):
        proc = subprocess.run(
            [promtool, "check", "metrics"], input=body, capture_output=True, timeout=60
        )
        assert proc.returncode == 0 and not proc.stdout + proc.stderr, (
            proc.stdout + proc.stderr
        ).decode()
    print(f"took {time.monotonic() - started:.1f}s")

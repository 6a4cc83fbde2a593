"""The alert bridges against the real local broker and real local HTTP endpoints.

Alerts are produced with a plain aiokafka producer onto topics of the
test's own; the endpoints (``bridge_endpoints.py``) are aiohttp servers on
127.0.0.1 that check the contract and inject faults. What is asserted is
the delivery guarantee itself: every alert reaches the endpoint, the alerts
of one dedup key in the order they were produced, nothing is lost, what the
endpoint refuses for good lands in the dead-letter topic with the
endpoint's answer, and the consumer group's committed offsets end at the
end of the topic. Each test prints its figures (run with ``-s``).
"""

from __future__ import annotations

import asyncio
import logging
import re
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from driftline.bridges.delivery import Bridge, BridgeSettings, BridgeStats
from driftline.bridges.pagerduty import PagerDutyTarget
from driftline.bridges.retry import RetryPolicy
from driftline.bridges.webhook import WebhookTarget
from driftline.core.config import load_config
from integration.bridge_endpoints import FakePagerDuty, FakeWebhook
from integration.worker_harness import DRIFTLINE, Producer, clean_env, consume

pytestmark = pytest.mark.kafka

ROUTING_KEY = "r0ut1ngk3yf0rt3st5only0000000000"  # the shape of a PagerDuty integration key
FAST_RETRY = RetryPolicy(timeout=0.5, base=0.05, cap=0.4)


def alert(model: str, seq: int, *, summary: str | None = None, **over: Any) -> dict[str, Any]:
    """An alert as the worker writes it; ``seq`` alternates firing (even) and resolved (odd)."""
    status = "firing" if seq % 2 == 0 else "resolved"
    body = {
        "alert_id": f"{model}-{seq}",
        "dedup_key": f"driftline/{model}/v1/concept_drift",
        "status": status,
        "severity": "error",
        "kind": "concept_drift",
        "model_id": model,
        "model_version": "v1",
        "segment": None,
        "monitor": "concept_drift",
        "summary": summary or f"{model} v1: error rate rose from 9.8% to 44.0% (#{seq})",
        "value": 0.44,
        "threshold": None,
        "baseline": 0.098,
        "window": {"events": 100, "start": 1_700_000_000.0, "end": 1_700_000_030.0 + seq},
        "event_time": 1_700_000_030.0 + seq,
        "emitted_at": 1_700_000_031.0 + seq,
        "evidence": {"detector": "ADWIN", "seq": seq},
    }
    body.update(over)
    return body


def collapse(seq: list[Any]) -> tuple[list[Any], int]:
    """``seq`` without consecutive repeats, and how many repeats were dropped.

    A re-delivery repeats the alert just delivered (a partition moves on only
    once an alert is accepted), so consecutive repeats are duplicates while
    anything else out of place is a loss or a reordering.
    """
    out: list[Any] = []
    for item in seq:
        if not out or out[-1] != item:
            out.append(item)
    return out, len(seq) - len(out)


async def wait_until(
    condition: Callable[[], bool], what: str, timeout: float, task: asyncio.Task[Any] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if task is not None and task.done():
            task.result()  # raises what the bridge died of
            raise AssertionError(f"the bridge stopped before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"not {what} within {timeout:.0f}s")
        await asyncio.sleep(0.05)


async def committed_and_end(bootstrap: str, group: str, topic: str, partitions: int) -> tuple:
    """The group's committed offset and the end offset of each partition of ``topic``."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        committed = {tp.partition: await consumer.committed(tp) for tp in tps}
        end = {tp.partition: off for tp, off in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()
    return committed, end


def headers_of(message: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in message.headers or ()}


def topic_config(bootstrap: str, alerts_topic: str, dead_topic: str) -> Any:
    return load_config(
        env={
            "DRIFTLINE_BROKER": f"kafka://{bootstrap}",
            "DRIFTLINE_TOPICS__ALERTS": alerts_topic,
            "DRIFTLINE_TOPICS__DEAD_LETTER": dead_topic,
        }
    )


# --------------------------------------------------------------------------
# PagerDuty: contract, faults, order, dead letters


async def test_pagerduty_bridge_delivers_in_order_through_faults(
    kafka_bootstrap, topic_factory, caplog
):
    caplog.set_level(logging.DEBUG, logger="driftline.bridge")
    alerts_topic = await topic_factory(2, prefix="dl-bridge-alerts")
    dead_topic = await topic_factory(1, prefix="dl-bridge-dead")
    config = topic_config(kafka_bootstrap, alerts_topic, dead_topic)

    models = ["fraud", "churn", "ltv", "pricing"]
    messages: list[tuple[bytes, bytes]] = []
    for seq in range(5):
        for model in models:
            long = "pricing v1: " + "the error rate rose well past its baseline; " * 60
            summary = long if (model, seq) == ("pricing", 2) else None
            a = alert(model, seq, summary=summary)
            messages.append((a["dedup_key"].encode(), orjson.dumps(a)))
    refused = alert("refused", 0, summary="refused v1: [refuse] this one, endpoint")
    resolved_after_refusal = alert("refused", 1)
    no_summary = {k: v for k, v in alert("broken", 0).items() if k != "summary"}
    messages[7:7] = [
        (refused["dedup_key"].encode(), orjson.dumps(refused)),
        (b"junk", b"this is not an alert"),
        (resolved_after_refusal["dedup_key"].encode(), orjson.dumps(resolved_after_refusal)),
        (no_summary["dedup_key"].encode(), orjson.dumps(no_summary)),
    ]
    key = {m: f"driftline/{m}/v1/concept_drift" for m in [*models, "refused"]}

    pd = FakePagerDuty(
        ROUTING_KEY,
        faults={
            (key["fraud"], 0): ["429"],
            (key["churn"], 1): ["500", "500"],
            (key["ltv"], 2): ["timeout"],
            (key["pricing"], 3): ["500"],
        },
        refuse=lambda event: "[refuse]" in event.get("payload", {}).get("summary", ""),
    )
    await pd.server.start()
    try:
        async with Producer(kafka_bootstrap) as producer:
            await producer.send_many(alerts_topic, messages)

        group = f"dltest-bridge-pd-{uuid.uuid4().hex[:8]}"
        settings = BridgeSettings(group_id=group, retry=FAST_RETRY, stop_grace=1.0, poll_ms=100)
        target = PagerDutyTarget(
            ROUTING_KEY, events_url=pd.url, dashboard_url="https://dash.example/m/{model_id}"
        )
        bridge = Bridge(config, target, settings)
        stop = asyncio.Event()
        started = time.monotonic()
        task = asyncio.create_task(bridge.run(stop, handle_signals=False))

        async def outage_after(processed: int, seconds: float) -> None:
            await wait_until(lambda: pd.processed_total >= processed, "mid-stream", 30)
            await pd.server.outage(seconds)

        outage = asyncio.create_task(outage_after(10, 1.5))
        expected_deliveries = 5 * len(models) + 1  # and the resolve after the refused trigger
        try:
            await wait_until(
                lambda: (
                    bridge.stats.delivered >= expected_deliveries and bridge.stats.dead_letters >= 3
                ),
                "every alert delivered or dead-lettered",
                45,
                task,
            )
        finally:
            stop.set()
            stats: BridgeStats = await task
            outage.cancel()
        took = time.monotonic() - started
    finally:
        await pd.server.stop()

    assert pd.violations == []
    # Every alert of every key processed, in order; a repeat only right after itself.
    duplicates = 0
    for model in models:
        got = [
            (e["event_action"], e.get("payload", {}).get("custom_details", {}).get("alert_id"))
            for e in pd.processed[key[model]]
        ]
        want = [("trigger", f"{model}-{s}") if s % 2 == 0 else ("resolve", None) for s in range(5)]
        distinct, repeats = collapse(got)
        assert distinct == want, f"{model}: {got}"
        duplicates += repeats
    assert [e["event_action"] for e in pd.processed[key["refused"]]] == ["resolve"]
    # A repeat needs an answer the bridge did not get: only timeouts can cause one.
    assert 1 <= duplicates <= stats.retry_reasons["timeout"]

    # The long summary was cut to PagerDuty's limit, with an ellipsis.
    long_event = pd.processed[key["pricing"]][2]["payload"]
    assert len(long_event["summary"]) == 1024 and long_event["summary"].endswith("…")
    trigger = pd.processed[key["fraud"]][0]
    assert trigger["links"] == [
        {"href": "https://dash.example/m/fraud", "text": "driftline: fraud v1"}
    ]
    assert trigger["payload"]["timestamp"] == "2023-11-14T22:13:50.000Z"

    # Each fault was met and retried; Retry-After was honoured.
    assert stats.retry_reasons["HTTP 429"] == 1
    assert stats.retry_reasons["HTTP 500"] == 3
    assert stats.retry_reasons["timeout"] >= 1
    assert stats.retry_reasons["connection refused"] >= 1, dict(stats.retry_reasons)
    fraud_hits = [h for h in pd.hits if h.key == key["fraud"]]
    assert fraud_hits[0].answer == 429
    assert fraud_hits[1].at - fraud_hits[0].at >= 0.95, "Retry-After: 1 not honoured"

    # The refused trigger and both malformed messages are dead letters, bytes untouched.
    dead = await consume(kafka_bootstrap, dead_topic, expected=3, timeout=20, linger=0.3)
    assert len(dead) == 3
    by_value = {m.value: headers_of(m) for m in dead}
    refused_headers = by_value[orjson.dumps(refused)]
    assert refused_headers["driftline-http-status"] == "400"
    assert refused_headers["driftline-error-class"] == "DeliveryRefused"
    assert "PagerDuty refused it: HTTP 400 Bad Request" in refused_headers["driftline-reason"]
    assert "refused by the test endpoint" in refused_headers["driftline-reason"]
    assert "not valid JSON" in by_value[b"this is not an alert"]["driftline-reason"]
    assert 'missing field "summary"' in by_value[orjson.dumps(no_summary)]["driftline-reason"]
    for m in dead:
        assert ROUTING_KEY.encode() not in (m.value or b"") + b"".join(v for _, v in m.headers)

    # Nothing left uncommitted, and the routing key never reached a log line.
    committed, end = await committed_and_end(kafka_bootstrap, group, alerts_topic, 2)
    assert committed == end
    assert ROUTING_KEY not in caplog.text
    assert stats.delivered == expected_deliveries and stats.dead_letters == 3

    print(
        f"\npagerduty bridge: {len(messages)} messages sent on 2 partitions"
        f" ({expected_deliveries} deliverable, 1 the endpoint refuses, 2 malformed);"
        f" endpoint: {len(pd.hits)} requests,"
        f" {pd.processed_total} processed, {duplicates} duplicate(s) (after timeouts);"
        f" bridge: {stats.delivered} delivered, {stats.retries} retries"
        f" {dict(sorted(stats.retry_reasons.items()))}, {stats.dead_letters} dead letters"
        f" ({stats.malformed} malformed), 1 outage of 1.5 s; {took:.1f} s"
    )


# --------------------------------------------------------------------------
# webhook: the CLI in its own process, stopped mid-stream and started again


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [*DRIFTLINE, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


async def terminate(proc: subprocess.Popen[bytes], timeout: float = 15.0) -> int:
    proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            await asyncio.to_thread(proc.wait)
            raise AssertionError(f"the bridge ignored SIGTERM for {timeout:.0f}s")
        await asyncio.sleep(0.05)
    return proc.returncode


async def test_webhook_bridge_restart_mid_stream_loses_nothing(
    kafka_bootstrap, topic_factory, tmp_path
):
    alerts_topic = await topic_factory(3, prefix="dl-bridge-alerts")
    dead_topic = await topic_factory(1, prefix="dl-bridge-dead")
    secret = f"whsec-{uuid.uuid4().hex}"
    models = [f"model{i}" for i in range(6)]
    produced = [alert(m, seq) for seq in range(5) for m in models]
    hook = FakeWebhook(secret, hang={"model2-2"}, hang_seconds=4.0)
    await hook.server.start()
    log = tmp_path / "bridge.log"
    group = f"dltest-bridge-wh-{uuid.uuid4().hex[:8]}"
    env = clean_env(
        {
            "DRIFTLINE_BROKER": f"kafka://{kafka_bootstrap}",
            "DRIFTLINE_TOPICS__ALERTS": alerts_topic,
            "DRIFTLINE_TOPICS__DEAD_LETTER": dead_topic,
            "DRIFTLINE_WEBHOOK_SECRET": secret,
        }
    )
    args = [
        "bridge",
        "webhook",
        "--url",
        hook.url,
        "--group",
        group,
        "--stop-grace",
        "0.3",
        "--timeout",
        "2",
        "--backoff-base",
        "0.05",
        "--backoff-cap",
        "0.5",
    ]
    procs: list[subprocess.Popen[bytes]] = []
    passed = False
    try:
        async with Producer(kafka_bootstrap) as producer:
            meta = await producer.send_many(
                alerts_topic, [(a["dedup_key"], orjson.dumps(a)) for a in produced]
            )
        where = {
            (m.partition, m.offset): a["alert_id"] for m, a in zip(meta, produced, strict=True)
        }
        started = time.monotonic()

        procs.append(spawn(args, env, log))
        await asyncio.wait_for(hook.hung.wait(), 30)  # model2-2 is in flight, unanswered
        assert await terminate(procs[0]) == 0
        before_restart = len(hook.processed)

        procs.append(spawn(args, env, log))
        everything = {a["alert_id"] for a in produced}
        await wait_until(
            lambda: everything <= {a["alert_id"] for a in hook.processed},
            "every alert delivered after the restart",
            30,
        )
        committed, end = {}, {"not": "read yet"}
        deadline = time.monotonic() + 10
        while committed != end and time.monotonic() < deadline:
            committed, end = await committed_and_end(kafka_bootstrap, group, alerts_topic, 3)
        assert await terminate(procs[1]) == 0
        took = time.monotonic() - started
        text = log.read_text(errors="replace")
        check_webhook_run(hook, produced, models, where, text, secret, committed, end)
        passed = True
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        await hook.server.stop()
        if not passed and log.exists():
            print(f"\n----- bridge log -----\n{log.read_text(errors='replace')}-----")
    duplicates = {
        k: n - 1 for k, n in Counter(a["alert_id"] for a in hook.processed).items() if n > 1
    }
    print(
        f"\nwebhook bridge: {len(produced)} alerts sent on 3 partitions; stopped (SIGTERM) with"
        f" {abandoned_ids(text, where)} in flight after {before_restart} deliveries, restarted;"
        f" endpoint processed {len(hook.processed)} requests, {sum(duplicates.values())}"
        f" duplicate(s) {duplicates}; 0 lost; {took:.1f} s"
    )


def abandoned_ids(log_text: str, where: dict[tuple[int, int], str]) -> set[str]:
    """The alerts the bridge says it gave up in flight (``gave up topic[p]@offset``)."""
    found = re.findall(r"gave up \S+\[(\d+)\]@(\d+)", log_text)
    return {where[(int(p), int(o))] for p, o in found}


def check_webhook_run(
    hook: FakeWebhook,
    produced: list[dict[str, Any]],
    models: list[str],
    where: dict[tuple[int, int], str],
    text: str,
    secret: str,
    committed: Any,
    end: Any,
) -> None:
    assert hook.violations == []
    assert committed == end, "offsets left uncommitted"
    # Order per dedup key, with a repeat only right after itself.
    for model in models:
        got = [a["alert_id"] for a in hook.processed if a["model_id"] == model]
        distinct, _ = collapse(got)
        assert distinct == [f"{model}-{s}" for s in range(5)], f"{model}: {got}"
    counts = Counter(a["alert_id"] for a in hook.processed)
    duplicates = {k: n - 1 for k, n in counts.items() if n > 1}
    # Only what was in flight at the stop may come twice, and the hung one must.
    abandoned = abandoned_ids(text, where)
    assert "model2-2" in abandoned
    assert set(duplicates) <= abandoned and "model2-2" in duplicates, (duplicates, abandoned)
    # The body is the alert exactly as produced; the secret is never logged.
    for a in produced:
        assert hook.bodies[a["alert_id"]] == orjson.dumps(a)
    assert secret not in text
    assert "bridge webhook stopped" in text


# --------------------------------------------------------------------------
# two instances in one group: a rebalance mid-stream


async def test_a_second_instance_joining_mid_stream_loses_nothing(
    kafka_bootstrap, topic_factory, caplog
):
    caplog.set_level(logging.INFO, logger="driftline.bridge")
    alerts_topic = await topic_factory(4, prefix="dl-bridge-alerts")
    dead_topic = await topic_factory(1, prefix="dl-bridge-dead")
    config = topic_config(kafka_bootstrap, alerts_topic, dead_topic)
    models = [f"model{i}" for i in range(8)]
    produced = [alert(m, seq) for seq in range(6) for m in models]
    # After 8 deliveries, requests are processed but left unanswered until the second
    # bridge has its partitions: the rebalance meets deliveries in flight.
    hook = FakeWebhook("s3cret", hold_after=8)
    await hook.server.start()
    group = f"dltest-bridge-scale-{uuid.uuid4().hex[:8]}"
    patient = RetryPolicy(timeout=30.0, base=0.05, cap=0.4)  # held requests must not time out
    settings = BridgeSettings(group_id=group, retry=patient, stop_grace=0.5, poll_ms=100)
    stop = asyncio.Event()
    bridges = [Bridge(config, WebhookTarget(hook.url, secret="s3cret"), settings) for _ in "ab"]
    tasks: list[asyncio.Task[BridgeStats]] = []
    try:
        async with Producer(kafka_bootstrap) as producer:
            meta = await producer.send_many(
                alerts_topic, [(a["dedup_key"], orjson.dumps(a)) for a in produced]
            )
        where = {
            (m.partition, m.offset): a["alert_id"] for m, a in zip(meta, produced, strict=True)
        }
        started = time.monotonic()
        tasks.append(asyncio.create_task(bridges[0].run(stop, handle_signals=False)))
        await wait_until(lambda: len(hook.processed) > 8, "deliveries held", 30, tasks[0])
        tasks.append(asyncio.create_task(bridges[1].run(stop, handle_signals=False)))
        # First bridge: assigned, then re-assigned after the rebalance; second: assigned.
        await wait_until(
            lambda: caplog.text.count("assigned partitions") >= 3, "the rebalance", 30, tasks[1]
        )
        hook.gate.set()
        everything = {a["alert_id"] for a in produced}
        await wait_until(
            lambda: everything <= {a["alert_id"] for a in hook.processed},
            "every alert delivered",
            30,
            tasks[0],
        )
        committed, end = {}, {"not": "read yet"}
        deadline = time.monotonic() + 10
        while committed != end and time.monotonic() < deadline:
            committed, end = await committed_and_end(kafka_bootstrap, group, alerts_topic, 4)
    finally:
        hook.gate.set()
        stop.set()
        stats = [await t for t in tasks]
        await hook.server.stop()
    took = time.monotonic() - started

    assert hook.violations == []
    assert committed == end, "offsets left uncommitted"
    for model in models:
        got = [a["alert_id"] for a in hook.processed if a["model_id"] == model]
        distinct, _ = collapse(got)
        assert distinct == [f"{model}-{s}" for s in range(6)], f"{model}: {got}"
    counts = Counter(a["alert_id"] for a in hook.processed)
    duplicates = {k: n - 1 for k, n in counts.items() if n > 1}
    abandoned = abandoned_ids(caplog.text, where)
    assert abandoned, "no delivery was in flight at the rebalance"
    assert set(duplicates) <= abandoned, (duplicates, abandoned)
    assert all(s.delivered > 0 for s in stats)
    print(
        f"\nrebalance: {len(produced)} alerts on 4 partitions, a second bridge joined with"
        f" {len(abandoned)} deliveries in flight; delivered by each:"
        f" {[s.delivered for s in stats]}; endpoint processed {len(hook.processed)},"
        f" {sum(duplicates.values())} duplicate(s) {sorted(duplicates)}; 0 lost; {took:.1f} s"
    )

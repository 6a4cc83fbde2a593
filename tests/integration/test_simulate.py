"""`driftline simulate` and `driftline alerts tail` against the real local broker.

Both commands run as subprocesses, the way a user runs them (their own event
loop, signal handling, non-TTY output), configured only through
``DRIFTLINE_*`` variables. What they wrote or read is checked with plain
aiokafka clients, so a bug in driftline's own Kafka code cannot hide itself.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
import time
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner

from driftline.alerts_tail import format_alert

DRIFTLINE = [sys.executable, "-m", "driftline.cli"]
SUMMARY = re.compile(
    r"(done|stopped by SIGINT): sent (\d+) predictions in (\d+) messages"
    r" and (\d+) outcomes in (\d+) messages"
)


def _env(bootstrap: str, **topics: str) -> dict[str, str]:
    """The test's environment: no developer DRIFTLINE_* leaks in, the test's topics do."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    env["DRIFTLINE_BROKER"] = f"kafka://{bootstrap}"
    for name, value in topics.items():
        env[f"DRIFTLINE_TOPICS__{name.upper()}"] = value
    return env


async def _cli(*args: str, env: dict[str, str], timeout: float = 45) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *DRIFTLINE,
        *args,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    return proc.returncode, out.decode(), err.decode()


async def _consume_all(bootstrap: str, topic: str) -> list:
    """Every message on ``topic`` now, read with no consumer group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            (described,) = await admin.describe_topics([topic])
        finally:
            await admin.close()
        tps = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        end = await consumer.end_offsets(tps)
        messages = []
        deadline = time.monotonic() + 30
        while any([await consumer.position(tp) < end[tp] for tp in tps]):
            assert time.monotonic() < deadline, f"could not read {topic} to its end"
            for batch in (await consumer.getmany(*tps, timeout_ms=500)).values():
                messages.extend(batch)
        return messages
    finally:
        await consumer.stop()


def _summary(stdout: str) -> tuple[int, int, int, int]:
    found = SUMMARY.findall(stdout)
    assert len(found) == 1, stdout
    _, preds, pred_msgs, outs, out_msgs = found[0]
    return int(preds), int(pred_msgs), int(outs), int(out_msgs)


@pytest.mark.kafka
async def test_simulate_sends_paced_keyed_traffic(kafka_bootstrap, topic_factory):
    predictions = await topic_factory(4)
    outcomes = await topic_factory(4)
    env = _env(kafka_bootstrap, predictions=predictions, outcomes=outcomes)
    before = time.time()
    rc, out, err = await _cli(
        "simulate",
        "--scenario=covid",
        "--models=2",
        "--rate=100",
        "--duration=4",
        "--change-at=2",
        "--label-delay=fixed:0.5",
        "--missing-labels=0.1",
        "--seed=7",
        "--run-id=t1",
        env=env,
    )
    after = time.time()
    assert rc == 0, err
    n_pred, n_pred_msgs, n_out, n_out_msgs = _summary(out)
    assert "drift: pricing v3 abrupt at prediction #100" in out
    assert re.search(r"^\d\d:\d\d:\d\dZ drift: pricing v3 now", out, re.M), out
    assert "\r" not in out  # not a terminal: plain progress lines

    preds = await _consume_all(kafka_bootstrap, predictions)
    outs = await _consume_all(kafka_bootstrap, outcomes)
    assert len(preds) == n_pred == n_pred_msgs
    assert len(outs) == n_out == n_out_msgs
    # 100/s for 4 s: Poisson, so about 400 +- 20.
    assert 300 <= n_pred <= 500
    # 10% never labelled, and those due after the end are not sent.
    assert 0.75 * n_pred <= n_out <= n_pred

    p_by_id = {}
    for m in preds:
        rec = orjson.loads(m.value)
        assert m.key.decode() == rec["request_id"]
        assert rec["request_id"].startswith("t1-")
        assert rec["request_id"] not in p_by_id
        assert rec["model_id"] in ("pricing", "fraud")
        # Event times are real times, and each record was sent when it was due.
        assert before <= rec["timestamp"] <= after
        assert abs(m.timestamp / 1000 - rec["timestamp"]) < 1.0
        p_by_id[rec["request_id"]] = (m, rec)
    sent_at = sorted(m.timestamp for m in preds)
    assert (sent_at[-1] - sent_at[0]) / 1000 > 3.0  # paced over the run, not one burst

    seen = set()
    for m in outs:
        rec = orjson.loads(m.value)
        rid = rec["request_id"]
        assert m.key.decode() == rid
        assert rid not in seen
        seen.add(rid)
        pm, prec = p_by_id[rid]
        assert abs(rec["timestamp"] - prec["timestamp"] - 0.5) < 0.002
        assert m.timestamp >= pm.timestamp  # sent after its prediction
        assert m.partition == pm.partition  # co-partitioned: the join can meet them


@pytest.mark.kafka
async def test_simulate_batches_and_stops_cleanly_on_sigint(kafka_bootstrap, topic_factory):
    predictions = await topic_factory(4)
    outcomes = await topic_factory(4)
    env = _env(kafka_bootstrap, predictions=predictions, outcomes=outcomes)
    proc = await asyncio.create_subprocess_exec(
        *DRIFTLINE,
        "simulate",
        "--scenario=stable",
        "--models=2",
        "--rate=200",
        "--duration=60",
        "--label-delay=fixed:0.2",
        "--batch=10",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        header = b""
        while b"sending to" not in header:
            line = await asyncio.wait_for(proc.stdout.readline(), 30)
            assert line, (await proc.stderr.read()).decode()
            header += line
        await asyncio.sleep(3)
        started = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rest, err = await asyncio.wait_for(proc.communicate(), 20)
        stopped_in = time.monotonic() - started
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    out = (header + rest).decode()
    assert proc.returncode == 130, err.decode()
    assert stopped_in < 5
    assert "Traceback" not in err.decode()
    n_pred, n_pred_msgs, n_out, n_out_msgs = _summary(out)
    assert "stopped by SIGINT" in out

    # Whatever was pending in the batches and the producer was flushed.
    preds = await _consume_all(kafka_bootstrap, predictions)
    outs = await _consume_all(kafka_bootstrap, outcomes)
    assert (len(preds), len(outs)) == (n_pred_msgs, n_out_msgs)
    assert n_pred >= 400  # about 3 s at 200/s

    partitioner = DefaultPartitioner()
    parts = [0, 1, 2, 3]
    where = {}
    for topic_msgs, kind in ((preds, "prediction"), (outs, "outcome")):
        records = 0
        sizes = []
        for m in topic_msgs:
            batch = orjson.loads(m.value)
            assert isinstance(batch, list)
            assert 1 <= len(batch) <= 10
            sizes.append(len(batch))
            assert m.key.decode() == batch[0]["request_id"]
            for rec in batch:
                assert kind in rec
                key = rec["request_id"].encode()
                # Each record sits in the partition its own key maps to.
                assert partitioner(key, parts, parts) == m.partition
                if kind == "prediction":
                    assert rec["request_id"] not in where
                    where[rec["request_id"]] = (m.partition, m.timestamp)
                else:
                    partition, sent = where[rec["request_id"]]
                    assert (m.partition, m.timestamp >= sent) == (partition, True)
            records += len(batch)
        assert records == (n_pred if kind == "prediction" else n_out)
        assert max(sizes) == 10


@pytest.mark.kafka
async def test_simulate_refuses_missing_topics_without_creating_them(kafka_bootstrap):
    missing = f"test-simulate-missing-{uuid.uuid4().hex}"
    env = _env(kafka_bootstrap, predictions=missing + "-p", outcomes=missing + "-o")
    rc, _, err = await _cli("simulate", "--duration=2", env=env)
    assert rc == 1
    assert "do not exist" in err and "driftline topics create" in err
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        assert not [t for t in await admin.list_topics() if t.startswith(missing)]
    finally:
        await admin.close()


async def test_simulate_unreachable_broker_fails_fast():
    env = _env("127.0.0.1:1")
    started = time.monotonic()
    rc, _, err = await _cli("simulate", "--duration=2", env=env)
    assert rc == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in err
    assert "Traceback" not in err
    assert time.monotonic() - started < 15


def _alert(model: str, status: str, t: float) -> dict:
    return {
        "alert_id": str(uuid.uuid4()),
        "dedup_key": f"driftline/{model}/v1/concept_drift",
        "status": status,
        "severity": "error",
        "kind": "concept_drift",
        "model_id": model,
        "model_version": "v1",
        "segment": None,
        "monitor": "concept_drift",
        "summary": f"{model} v1: error rate rose from 5.0% to 30.0%",
        "value": 0.3,
        "threshold": 0.1,
        "baseline": 0.05,
        "window": {"events": 100, "start": t - 10, "end": t},
        "event_time": t,
        "emitted_at": t,
        "evidence": {},
    }


@pytest.mark.kafka
async def test_alerts_tail_prints_alerts_and_warns_on_garbage(kafka_bootstrap, topic_factory):
    topic = await topic_factory(1)
    env = _env(kafka_bootstrap, alerts=topic)
    first, second = _alert("pricing", "firing", 1.7e9), _alert("pricing", "resolved", 1.7e9 + 60)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for value in (orjson.dumps(first), b"not json{", orjson.dumps(second), b"[1, 2]"):
            await producer.send_and_wait(topic, value, key=first["dedup_key"].encode())
    finally:
        await producer.stop()

    rc, out, err = await _cli("alerts", "tail", env=env)
    assert rc == 0, err
    assert out.splitlines() == [format_alert(first), format_alert(second)]
    assert f"warning: {topic}[0]@1 is not an alert (not valid JSON" in err
    assert f"warning: {topic}[0]@3 is not an alert (a JSON array, not an alert object)" in err
    assert "2 alert(s), 2 unreadable" in err

    rc, out, err = await _cli("alerts", "tail", "--from-end", env=env)
    assert (rc, out) == (0, "")

    # --follow: what is there, then what arrives, until Ctrl-C (a quiet exit).
    proc = await asyncio.create_subprocess_exec(
        *DRIFTLINE,
        "alerts",
        "tail",
        "--follow",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        lines = [await asyncio.wait_for(proc.stdout.readline(), 20) for _ in range(2)]
        third = _alert("fraud", "firing", 1.7e9 + 120)
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, orjson.dumps(third))
        finally:
            await producer.stop()
        lines.append(await asyncio.wait_for(proc.stdout.readline(), 20))
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), 10)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert [x.decode().rstrip("\n") for x in lines] == [
        format_alert(first),
        format_alert(second),
        format_alert(third),
    ]
    assert proc.returncode == 0
    assert "Traceback" not in err.decode()


@pytest.mark.kafka
async def test_alerts_tail_missing_topic_is_an_error(kafka_bootstrap):
    env = _env(kafka_bootstrap, alerts=f"test-tail-missing-{uuid.uuid4().hex}")
    rc, out, err = await _cli("alerts", "tail", env=env)
    assert rc == 1 and out == ""
    assert "does not exist" in err


def test_plan_turns_seconds_into_prediction_indices():
    from driftline.simulate import make_plan

    plan = make_plan("covid", models=4, rate=200, duration=150, change_at=30, seed=1)
    assert plan.rate_per_model == 50
    assert plan.change_index == 1500
    pricing = plan.info.model("pricing")
    assert pricing.change_index == 1500
    assert 25 < pricing.change_time < 35  # seconds from the start, Poisson arrivals
    assert [m.kind for m in plan.info.models[1:]] == ["none"] * 3
    # Enough events that Poisson arrivals never run dry before the end.
    assert plan.events >= 7500 + 6 * 7500**0.5

    recurring = make_plan("recurring", models=1, rate=50, duration=40, change_at=10)
    (m,) = recurring.info.models
    assert 10 < m.change_time < m.end_time < 40


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"change_at": 150}, "--change-at must be between 0 and --duration"),
        ({"rate": 0.02}, "under 2 predictions per model"),
        ({"models": 0}, "--models must be at least 1"),
    ],
)
def test_plan_rejects_impossible_runs(kwargs, message):
    from driftline.simulate import make_plan

    args = {"models": 4, "rate": 200.0, "duration": 150.0, "change_at": 30.0} | kwargs
    with pytest.raises(ValueError, match=message):
        make_plan("covid", **args)

"""The streaming worker end to end, against the real local broker.

Each test starts ``driftline worker`` as a subprocess (see
``worker_harness.py``) on topics of its own, feeds it with plain aiokafka
producers, reads what it wrote with plain consumers, and watches ``/models``.
Nothing here sleeps for a fixed time to "let the worker catch up": tests
poll ``/models`` until the counts they expect are reached (and stay there),
with generous timeouts for a shared, two-core machine.
"""

from __future__ import annotations

import asyncio
import heapq
import json
import time
from operator import itemgetter
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from driftline.core.config import load_config
from driftline.core.replay import replay
from driftline.scenarios import generate, write_jsonl
from driftline.streaming.seekfirst import SEEK_DELAY_ENV
from integration.worker_harness import (
    Producer,
    WorkerProcess,
    clean_env,
    consume,
    make_topics,
    run_cli,
    running_worker,
)
from kafka_fixture import delete_topics

pytestmark = pytest.mark.kafka

REPO_ROOT = Path(__file__).resolve().parents[2]
ALERT_SCHEMA = json.loads((REPO_ROOT / "schemas" / "alert.v1.json").read_text())
T0 = 1_700_000_000.0
HOUR = 3600.0


def headers_of(message: Any) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for k, v in message.headers or ():
        out.setdefault(k, []).append(v.decode())
    return out


# --------------------------------------------------------------------------
# start-up checks


def test_startup_fails_fast_when_the_broker_is_unreachable(tmp_path):
    proc, took = run_cli(
        ["worker", "--broker", "kafka://127.0.0.1:1", "--web-port", "0"],
        clean_env(),
        cwd=tmp_path,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "cannot reach Kafka at 127.0.0.1:1" in proc.stderr
    assert "check --broker / DRIFTLINE_BROKER" in proc.stderr
    assert took < 20, f"took {took:.1f}s to give up"


async def test_startup_fails_when_the_inputs_are_not_co_partitioned(
    kafka_bootstrap, topic_factory, tmp_path
):
    topics = await make_topics(topic_factory, 2, outcomes_partitions=3)
    env = clean_env({"DRIFTLINE_BROKER": f"kafka://{kafka_bootstrap}", **topics.env()})
    proc, took = run_cli(["worker", "--web-port", "0"], env, cwd=tmp_path, timeout=30)
    assert proc.returncode != 0
    assert (
        f"topics {topics.predictions} (2 partitions) and {topics.outcomes} (3 partitions)"
        " are not co-partitioned" in proc.stderr
    )
    assert took < 20, f"took {took:.1f}s to give up"


async def test_startup_fails_when_the_inputs_have_more_partitions_than_configured(
    kafka_bootstrap, topic_factory, tmp_path
):
    # The join table's changelog gets topics.partitions partitions; before this
    # check, the join agent crashed on every batch ("Unrecognized partition").
    topics = await make_topics(topic_factory, 3)
    env = clean_env(
        {
            "DRIFTLINE_BROKER": f"kafka://{kafka_bootstrap}",
            "DRIFTLINE_TOPICS__PARTITIONS": "2",
            **topics.env(),
        }
    )
    proc, took = run_cli(["worker", "--web-port", "0"], env, cwd=tmp_path, timeout=30)
    assert proc.returncode != 0
    assert "have 3 partitions, more than topics.partitions = 2" in proc.stderr
    assert "Set topics.partitions (DRIFTLINE_TOPICS__PARTITIONS) to 3." in proc.stderr
    assert took < 20, f"took {took:.1f}s to give up"


async def test_startup_fails_when_the_inputs_are_missing_and_does_not_create_them(
    kafka_bootstrap, topic_factory, tmp_path
):
    # A broker with auto.create.topics.enable (the default, and kafka-local's)
    # creates a topic that a metadata request merely names: the check must
    # not, or the next start finds 1-partition topics and runs on them.
    topics = await make_topics(topic_factory, 2)
    missing = f"{topics.predictions}-missing"
    env = clean_env(
        {
            "DRIFTLINE_BROKER": f"kafka://{kafka_bootstrap}",
            **topics.env(),
            "DRIFTLINE_TOPICS__PREDICTIONS": missing,
        }
    )
    try:
        for _ in range(2):  # the second run must fail the same way
            proc, took = run_cli(["worker", "--web-port", "0"], env, cwd=tmp_path, timeout=30)
            assert proc.returncode != 0
            assert f"topic(s) {missing} do not exist; run `driftline topics create`" in proc.stderr
            assert took < 20
    finally:
        await delete_topics(kafka_bootstrap, [missing])  # in case the check created it


# --------------------------------------------------------------------------
# join, counts, alerts, dead letters

COUNTS_CONFIG = """
label_ttl = "1h"

[alerts]
warmup_predictions = 10

[monitors.label_coverage]
window = 50

[models.acc.monitors.performance]
window = 50
thresholds = [{metric = "accuracy", below = 0.5, for_events = 50, severity = "critical"}]
"""


def prediction(rid: str, model: str, label: Any, t: float, **extra: Any) -> dict[str, Any]:
    return {"request_id": rid, "model_id": model, "prediction": label, "timestamp": t, **extra}


def outcome(rid: str, label: Any, t: float) -> dict[str, Any]:
    return {"request_id": rid, "outcome": label, "timestamp": t}


async def test_join_counts_alerts_and_dead_letters(kafka_bootstrap, topic_factory, tmp_path):
    """Four models through three partitions, in four phases.

    fraud: 60 predictions; 10 outcomes arrive before their predictions (one
    of them twice), 30 after (two of them twice), 20 never (expired); 5
    predictions sent twice; later an outcome for an expired one (late);
    4 malformed records name it. churn (v2, multiclass): 30 joined, 5 of
    them early. acc: 100 joined, every prediction wrong, so a threshold
    pages. cov: 100 predictions, 20 outcomes, so 80 expire and label
    coverage pages.
    """
    partitions = 3
    topics = await make_topics(topic_factory, partitions)
    fraud = [
        prediction(f"f-{i:03}", "fraud", i % 2 == 0, T0 + i, score=0.9 if i % 2 == 0 else 0.2)
        for i in range(60)
    ]
    fraud_early = [outcome(f"f-{i:03}", True, T0 + i + 30) for i in range(10)]
    fraud_after = [outcome(f"f-{i:03}", True, T0 + i + 30) for i in range(10, 40)]
    churn = [
        prediction(
            f"c-{i:02}",
            "churn",
            "stay",
            T0 + i,
            model_version="v2",
            probabilities={"stay": 0.7, "leave": 0.2, "maybe": 0.1},
            segments={"region": "eu" if i % 2 else "us"},
        )
        for i in range(30)
    ]
    churn_outcomes = [
        outcome(f"c-{i:02}", "stay" if i < 20 else "leave", T0 + i + 5) for i in range(30)
    ]
    acc = [
        prediction(f"a-{i:03}", "acc", 1, T0 + i / 2, score=0.9, features={"x": i, "y": "k"})
        for i in range(100)
    ]
    acc_outcomes = [outcome(f"a-{i:03}", 0, T0 + i / 2 + 5) for i in range(100)]
    cov = [prediction(f"v-{i:03}", "cov", 0.5 * i, T0 + i, task="regression") for i in range(100)]
    cov_outcomes = [outcome(f"v-{i:03}", 0.5 * i + 1, T0 + i + 10) for i in range(20)]

    # Malformed messages: (value, what the dead letter's reason says).
    bad_predictions = [
        (b"{not json", "message is not valid JSON"),
        (
            prediction("x-1", "fraud", 1, T0, score=1.7),
            'field "score" must be a number in [0, 1], got 1.7',
        ),
        ({"request_id": "x-2", "prediction": 1}, 'field "model_id" is missing'),
        (
            b'{"request_id": "x-4", "model_id": "fraud", "prediction": NaN}',
            "message is not valid JSON",
        ),
        (b"\xff\xfe\x00garbage", "message is not valid UTF-8: byte 0xff at offset 0"),
        (None, "message has no value (a tombstone)"),
        (b"[]", "message is an empty array"),
    ]
    bad_outcomes = [
        (
            {"request_id": "x-3", "outcome": {"a": 1}},
            'field "outcome" must be a number, string or boolean, got an object',
        ),
    ]

    async with (
        running_worker(
            kafka_bootstrap, topics, tmp_path, partitions=partitions, config_text=COUNTS_CONFIG
        ) as worker,
        Producer(kafka_bootstrap) as producer,
    ):
        sent_bad: list[tuple[Any, Any, str]] = []  # (record metadata, value, reason)

        # Phase A: early outcomes, then on every partition a malformed outcome
        # naming fraud. Once fraud counts 3 dead letters, every early outcome
        # (before those markers in its partition) is in the join buffer.
        await producer.send_records(topics.outcomes, [*fraud_early, fraud_early[5]])
        await producer.send_records(topics.outcomes, churn_outcomes[:5])
        for p in range(partitions):
            value = {"request_id": f"marker-{p}", "model_id": "fraud"}
            md = await producer.send(topics.outcomes, value, key=f"marker-{p}", partition=p)
            sent_bad.append((md, orjson.dumps(value), 'field "outcome" is missing'))
        await worker.wait_models({"fraud": {"dead_letters": 3, "predictions": 0}})

        # Phase B: every prediction (5 twice), the other outcomes (2 twice),
        # and the malformed messages.
        await producer.send_records(topics.predictions, [*fraud, *fraud[:5]])
        await producer.send_records(topics.predictions, [*churn, *acc, *cov])
        await producer.send_records(
            topics.outcomes,
            [*fraud_after, *fraud_after[:2], *churn_outcomes[5:], *acc_outcomes, *cov_outcomes],
        )
        for value, reason in bad_predictions:
            md = await producer.send(topics.predictions, value, key=b"bad")
            sent_bad.append((md, value, reason))
        for value, reason in bad_outcomes:
            md = await producer.send(topics.outcomes, value, key=b"bad")
            sent_bad.append((md, value, reason))
        await worker.wait_models(
            {
                "fraud": {"predictions": 60, "joined": 40, "duplicates": 8, "dead_letters": 4},
                "churn": {"predictions": 30, "joined": 30, "duplicates": 0},
                "acc": {"predictions": 100, "joined": 100},
                "cov": {"predictions": 100, "joined": 20, "expired": 0},
            }
        )

        # Phase C: an outcome nobody predicted, an hour and a bit later in
        # event time, moves the watermark past every pending deadline.
        await producer.send(topics.outcomes, outcome("clock", 0, T0 + HOUR + 200), key="clock")
        await worker.wait_models({"fraud": {"expired": 20}, "cov": {"expired": 80}})

        # Phase D: the outcome of an expired prediction, while its tombstone lives.
        await producer.send(topics.outcomes, outcome("f-040", True, T0 + HOUR + 300), key="f-040")
        models = await worker.wait_models({"fraud": {"late": 1}})

        alerts = await consume(kafka_bootstrap, topics.alerts, expected=2)
        dead = await consume(kafka_bootstrap, topics.dead_letter, expected=len(sent_bad))

    expected_counts = {
        "fraud": dict(predictions=60, outcomes=41, joined=40, expired=20, late=1, duplicates=8),
        "churn": dict(predictions=30, outcomes=30, joined=30, expired=0, late=0, duplicates=0),
        "acc": dict(predictions=100, outcomes=100, joined=100, expired=0, late=0, duplicates=0),
        "cov": dict(predictions=100, outcomes=20, joined=20, expired=80, late=0, duplicates=0),
    }
    assert sorted(models) == sorted(expected_counts)
    for name, counts in expected_counts.items():
        got = {k: models[name][k] for k in counts}
        assert got == counts, name
    assert [models[n]["dead_letters"] for n in ("fraud", "churn", "acc", "cov")] == [4, 0, 0, 0]
    assert models["churn"]["model_version"] == "v2"
    assert models["fraud"]["metrics"]["accuracy"] == pytest.approx(0.5)
    assert models["churn"]["metrics"]["accuracy"] == pytest.approx(20 / 30)
    assert models["acc"]["metrics"]["accuracy"] == 0.0
    assert models["cov"]["task"] == "regression"
    assert models["cov"]["metrics"]["mae"] == pytest.approx(1.0)

    # Alerts: exactly two, valid against the schema, keyed by dedup key.
    by_key = {m.key.decode(): orjson.loads(m.value) for m in alerts}
    assert len(alerts) == 2 and len(by_key) == 2, [m.value for m in alerts]
    for key, alert in by_key.items():
        jsonschema.validate(alert, ALERT_SCHEMA)
        assert alert["dedup_key"] == key and alert["status"] == "firing"
    perf = by_key["driftline/acc/unversioned/threshold:accuracy:below"]
    assert (perf["kind"], perf["severity"], perf["value"], perf["threshold"]) == (
        "performance",
        "critical",
        0.0,
        0.5,
    )
    # The 50th joined outcome decided; which one that is depends on how the
    # partitions interleave, so only its range is known.
    assert T0 + 5 <= perf["event_time"] <= T0 + 99 / 2 + 5
    cov_alert = by_key["driftline/cov/unversioned/label_coverage"]
    assert (cov_alert["kind"], cov_alert["severity"]) == ("label_coverage", "warning")
    # 20 joined, then expiries: the 50th resolution (the 30th expiry) decides.
    # Expiries reach the monitors in deadline order per input partition, so
    # which one that is depends on how the 3 partitions interleave; its
    # event time is its deadline, a prediction's time plus the TTL.
    assert cov_alert["value"] == pytest.approx(20 / 50)
    offset = cov_alert["event_time"] - T0 - HOUR
    assert offset == int(offset) and 20 <= offset <= 99, cov_alert["event_time"]
    assert cov_alert["emitted_at"] > time.time() - 600  # wall clock, not event time
    firing = {a["alert_id"] for m in models.values() for a in m["firing_alerts"]}
    assert firing == {perf["alert_id"], cov_alert["alert_id"]}

    # Dead letters: one per malformed message, original bytes and where they came from.
    assert len(dead) == len(sent_bad)
    by_origin = {
        (
            h["driftline-source-topic"][0],
            int(h["driftline-source-partition"][0]),
            int(h["driftline-source-offset"][0]),
        ): (m, h)
        for m in dead
        for h in [headers_of(m)]
    }
    for md, value, reason in sent_bad:
        m, h = by_origin[(md.topic, md.partition, md.offset)]
        raw = value if value is None or isinstance(value, bytes) else orjson.dumps(value)
        assert m.value == raw
        assert h["driftline-stage"] == ["decode"]
        assert h["driftline-error-class"] == ["RecordError"]
        assert h["driftline-refused-records"] == ["1"]
        where = f"{md.topic}: message at partition {md.partition} offset {md.offset}: "
        (got,) = h["driftline-reason"]
        assert got.startswith(where + reason), got


# --------------------------------------------------------------------------
# batched messages


async def test_a_batched_message_with_one_bad_record(kafka_bootstrap, topic_factory, tmp_path):
    """A JSON array of records in one message: the good ones go through, the bad one is
    dead-lettered alone, with a reason naming its index in the array."""
    partitions = 2
    topics = await make_topics(topic_factory, partitions)
    preds: list[Any] = [
        prediction(f"b-{i}", "batchy", int(i > 0), T0 + i, score=0.5) for i in range(5)
    ]
    preds[2] = prediction("b-2", "batchy", 1, T0 + 2, score=2.0)  # score out of range
    outs: list[Any] = [outcome(f"b-{i}", 1, T0 + 10 + i) for i in range(5)]
    outs[3] = {"outcome": 1, "timestamp": T0 + 13}  # no request id
    async with (
        running_worker(kafka_bootstrap, topics, tmp_path, partitions=partitions) as worker,
        Producer(kafka_bootstrap) as producer,
    ):
        # One message each way, on the same partition so that the join can
        # meet them (a batch has no single request id to key it by).
        md_p = await producer.send(topics.predictions, preds, key=b"batch-1", partition=1)
        md_o = await producer.send(topics.outcomes, outs, key=b"batch-1", partition=1)
        models = await worker.wait_models(
            {"batchy": {"predictions": 4, "joined": 3, "dead_letters": 1}}
        )
        dead = await consume(kafka_bootstrap, topics.dead_letter, expected=2)

    batchy = models["batchy"]
    assert (batchy["duplicates"], batchy["expired"], batchy["late"]) == (0, 0, 0)
    # The refused prediction names its model; the refused outcome names none.
    assert batchy["dead_letters"] == 1
    assert batchy["metrics"]["accuracy"] == pytest.approx(2 / 3)  # b-0 wrong; b-1, b-4 right
    assert len(dead) == 2
    got = {m.value: headers_of(m) for m in dead}
    for md, batch, reason in (
        (md_p, preds, 'record 2: field "score" must be a number in [0, 1], got 2.0'),
        (md_o, outs, 'record 3: field "request_id" is missing'),
    ):
        h = got[orjson.dumps(batch)]  # the whole message, untouched
        assert h["driftline-refused-records"] == ["1"]
        assert h["driftline-source-offset"] == [str(md.offset)]
        assert h["driftline-reason"] == [
            f"{md.topic}: message at partition 1 offset {md.offset} {reason}"
        ]


# --------------------------------------------------------------------------
# expiry on an idle worker


async def test_an_idle_worker_expires_pending_predictions(kafka_bootstrap, topic_factory, tmp_path):
    """With a 5 s label TTL, predictions whose outcome never comes become ``expired``
    although no record arrives after them: a timer, not data, moves event time on."""
    ttl = 5.0
    partitions = 2
    topics = await make_topics(topic_factory, partitions)
    async with (
        running_worker(
            kafka_bootstrap,
            topics,
            tmp_path,
            partitions=partitions,
            env={"DRIFTLINE_LABEL_TTL": f"{ttl:g}s"},
        ) as worker,
        Producer(kafka_bootstrap) as producer,
    ):
        now = time.time()
        sent_at = time.monotonic()
        await producer.send_records(
            topics.predictions,
            [prediction(f"i-{i}", "idle", True, now, score=0.8) for i in range(10)],
        )
        await producer.send_records(
            topics.outcomes, [outcome(f"i-{i}", True, now + 0.5) for i in range(3)]
        )
        await worker.wait_models({"idle": {"predictions": 10, "joined": 3}}, settle=0)
        # Nothing else is sent from here on.
        models = await worker.wait_models({"idle": {"expired": 7}}, timeout=60)
        waited = time.monotonic() - sent_at

    assert waited >= ttl - 1.0, f"expired after {waited:.1f}s, before the {ttl:g}s TTL"
    idle = models["idle"]
    assert (idle["predictions"], idle["joined"], idle["expired"], idle["late"]) == (10, 3, 7, 0)
    assert idle["last_event_time"] == pytest.approx(now + ttl, abs=1e-3)  # the deadlines


async def test_pending_joins_survive_a_restart_in_rocksdb(kafka_bootstrap, topic_factory, tmp_path):
    """Predictions wait in the join table across a worker restart: the table is
    in RocksDB under --data-dir (the default store) and in its changelog, so the
    outcomes that come after the restart still find them."""
    topics = await make_topics(topic_factory, 2)
    now = time.time()
    first = WorkerProcess(kafka_bootstrap, topics, tmp_path, partitions=2)
    try:
        await first.start()
        async with Producer(kafka_bootstrap) as producer:
            await producer.send_records(
                topics.predictions,
                [prediction(f"r-{i}", "restart", i % 2 == 0, now, score=0.7) for i in range(40)],
            )
        await first.wait_models({"restart": {"predictions": 40}}, settle=0)
    except BaseException:
        first.print_log()
        raise
    finally:
        await first.stop()
    databases = sorted(p.parent.name for p in (first.workdir / "data").rglob("CURRENT"))
    assert databases == ["driftline-join-0.db", "driftline-join-1.db"], databases

    async with (
        running_worker(
            kafka_bootstrap, topics, tmp_path, partitions=2, app_id=first.app_id
        ) as second,
        Producer(kafka_bootstrap) as producer,
    ):
        await producer.send_records(
            topics.outcomes, [outcome(f"r-{i}", True, now + 1.0) for i in range(40)]
        )
        models = await second.wait_models({"restart": {"joined": 40}})
    restarted = models["restart"]
    # The monitors start afresh in a new process (their counts are not
    # checkpointed); the join state is what must have survived.
    assert (restarted["joined"], restarted["duplicates"], restarted["late"]) == (40, 0, 0)


async def test_pending_joins_beyond_the_memory_bound_wait_on_disk(
    kafka_bootstrap, topic_factory, tmp_path
):
    """With at most 50 join entries in memory, 400 pending predictions wait in
    RocksDB and every outcome still finds its prediction, across a restart too
    (where the monitors resume from their checkpoint: the counts go on). With
    8,000 more on one partition, the expiry index keeps its items over its
    share (4,096 a partition at the least) on disk as well."""
    topics = await make_topics(topic_factory, 2)
    now = time.time()
    small = ["--join-memory-entries", "50"]
    bulk = 8_000

    def bulk_messages(make: Any, first: int, last: int) -> list[tuple[bytes, Any]]:
        """Records ``first`` to ``last`` of the bulk, 100 per message, all on one partition."""
        return [
            (b"bulk", [make(i) for i in range(start, min(start + 100, last))])
            for start in range(first, last, 100)
        ]

    def bulk_prediction(i: int) -> dict[str, Any]:
        return prediction(f"b-{i}", "disk", True, now, score=0.7)

    def bulk_outcome(i: int) -> dict[str, Any]:
        return outcome(f"b-{i}", True, now + 1.0)

    first = WorkerProcess(kafka_bootstrap, topics, tmp_path, partitions=2, extra_args=small)
    try:
        await first.start()
        async with Producer(kafka_bootstrap) as producer:
            for start in range(0, 400, 100):  # several input batches, so entries spill
                await producer.send_records(
                    topics.predictions,
                    [
                        prediction(f"d-{i}", "disk", i % 2 == 0, now, score=0.7)
                        for i in range(start, start + 100)
                    ],
                )
                await first.wait_models({"disk": {"predictions": start + 100}}, settle=0)
            health = await first.get_json("/healthz")
            assert health["join_entries"] == 400
            assert health["join_entries_in_memory"] <= 150, health  # the bound, plus one batch
            await producer.send_many(topics.predictions, bulk_messages(bulk_prediction, 0, bulk))
            await first.wait_models({"disk": {"predictions": 400 + bulk}}, settle=0)
            health = await first.get_json("/healthz")
            assert health["join_entries"] == 400 + bulk
            assert health["join_entries_in_memory"] <= 150, health
            assert health["join_index_on_disk"] > 0, health
            # The bulk partition's share and one chunk taken back, plus the other partition's.
            assert health["join_index_in_memory"] <= 4096 + 1024 + 400, health
            await producer.send_records(
                topics.outcomes, [outcome(f"d-{i}", True, now + 1.0) for i in range(200)]
            )
            await producer.send_many(topics.outcomes, bulk_messages(bulk_outcome, 0, bulk // 2))
        await first.wait_models({"disk": {"joined": 200 + bulk // 2}})
    except BaseException:
        first.print_log()
        raise
    finally:
        await first.stop()
    async with (
        running_worker(
            kafka_bootstrap, topics, tmp_path, partitions=2, app_id=first.app_id, extra_args=small
        ) as second,
        Producer(kafka_bootstrap) as producer,
    ):
        health = await second.get_json("/healthz")
        assert health["join_entries_in_memory"] <= 50, health  # restored within the bound
        await producer.send_records(
            topics.outcomes, [outcome(f"d-{i}", True, now + 1.0) for i in range(200, 400)]
        )
        await producer.send_many(topics.outcomes, bulk_messages(bulk_outcome, bulk // 2, bulk))
        models = await second.wait_models({"disk": {"joined": 400 + bulk}})
    after = models["disk"]
    assert (after["predictions"], after["joined"], after["duplicates"]) == (400 + bulk,) * 2 + (0,)
    assert (after["late"], after["expired"]) == (0, 0)


async def test_a_second_worker_takes_over_models_and_each_lives_on_one_worker(
    kafka_bootstrap, topic_factory, tmp_path
):
    """Scale out, then in. A second worker of the same app takes partitions:
    afterwards every model lives on exactly one worker (the other forgot it,
    rather than showing frozen figures) and its counts moved with it (from
    its checkpoint). Then the first worker stops and the second has every
    model. Throughout, every pair is counted exactly once."""
    topics = await make_topics(topic_factory, 4)
    models = [f"s{i}" for i in range(8)]
    now = time.time()
    sent = 0  # pairs per model so far

    def traffic(tag: str, n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        nonlocal sent
        sent += n
        preds = [
            prediction(f"{tag}-{m}-{i}", m, i % 2 == 0, now, score=0.6)
            for m in models
            for i in range(n)
        ]
        outs = [outcome(f"{tag}-{m}-{i}", True, now + 1.0) for m in models for i in range(n)]
        return preds, outs

    def exact(names: Any) -> dict[str, dict[str, int]]:
        return {m: {"predictions": sent, "joined": sent, "duplicates": 0} for m in names}

    # Each worker's seek after a rebalance is held back 0.5 s: the window in
    # which Faust's own order lost records (streaming/seekfirst.py).
    slow_seek = {SEEK_DELAY_ENV: "0.5"}
    first = WorkerProcess(kafka_bootstrap, topics, tmp_path / "a", partitions=4, env=slow_seek)
    second = None
    try:
        await first.start()
        async with Producer(kafka_bootstrap) as producer:

            async def send(tag: str, n: int) -> None:
                preds, outs = traffic(tag, n)
                await producer.send_records(topics.predictions, preds)
                await producer.send_records(topics.outcomes, outs)

            await send("before", 10)
            await first.wait_models(exact(models))
            second = WorkerProcess(
                kafka_bootstrap,
                topics,
                tmp_path / "b",
                partitions=4,
                app_id=first.app_id,
                env=slow_seek,
            )
            # Traffic flows through both rebalances, so records are in flight
            # while partitions change hands.
            trickle_on = asyncio.Event()
            rounds = iter(range(1_000_000))

            async def trickle() -> None:
                while trickle_on.is_set():
                    await send(f"t{next(rounds)}", 2)
                    await asyncio.sleep(0.1)

            trickle_on.set()
            flowing = asyncio.create_task(trickle())
            started = time.monotonic()
            await second.start()

            # Wait until the rebalance has given the second worker some models' partitions
            # and the first one has let go of them.
            deadline = time.monotonic() + 90
            while True:
                await asyncio.sleep(0.5)
                a, b = await first.models(), await second.models()
                if b and set(a) | set(b) == set(models) and not set(a) & set(b):
                    break
                assert time.monotonic() < deadline, f"no clean split: {sorted(a)} / {sorted(b)}"
            split = time.monotonic() - started
            trickle_on.clear()
            await flowing
            await send("after", 20)
            a = await first.wait_models(exact(a))
            b = await second.wait_models(exact(b))
            assert set(a).isdisjoint(b) and set(a) | set(b) == set(models), (sorted(a), sorted(b))

            # Scale in: the first worker goes; the second takes its models, counts and all.
            trickle_on.set()
            flowing = asyncio.create_task(trickle())
            stopped = time.monotonic()
            await first.stop()
            while len(await second.models()) < len(models):
                await asyncio.sleep(0.5)
                assert time.monotonic() < stopped + 90, "the second worker did not take over"
            trickle_on.clear()
            await flowing
            await send("last", 5)
            b = await second.wait_models(exact(models))
            print(
                f"scale out: split in {split:.1f} s (second worker start -> clean split);"
                f" scale in: all {len(b)} models on the second worker,"
                f" {time.monotonic() - stopped:.1f} s after the first stopped; {sent} pairs"
                " per model counted once"
            )
    except BaseException:
        first.print_log()
        if second is not None:
            second.print_log()
        raise
    finally:
        if second is not None:
            await second.stop()
        await first.stop()
        await first.delete_internal_topics()


# --------------------------------------------------------------------------
# parity with replay

PARITY_TRAFFIC = dict(
    seed=3,
    rate=10.0,  # predictions per second per model
    label_delay=("uniform", 1.0, 30.0),
    missing_labels=0.02,
    duplicates=0.005,
)
SLICE = 10.0  # seconds of event time produced before waiting for the worker to catch up
# How many of the model's events apart two evaluations of a monitor can be:
# the drift tests run every 500 predictions (the default ``every``); the
# concept-drift watcher is judged every 50 outcomes once river's ADWIN, which
# checks every 32, has fired: 100 covers both.
EVALUATION_EVENTS = {"prediction_drift": 500, "data_drift": 500, "concept_drift": 100}


def parity_records() -> list[dict[str, Any]]:
    """Three models over 500 s of event time, about 30,000 records in event-time order.

    From the covid scenario, pricing's world changes at its 3000th
    prediction (concept drift, prediction drift, data drift) and fraud
    stays stable; from the recurring scenario, a third model's concept
    changes at 1500 and comes back at 3000 (firing, then resolved).
    """
    covid = generate("covid", models=2, events=5000, change_at=3000, **PARITY_TRAFFIC)
    recurring = [
        {**r, "request_id": f"rec-{r['request_id']}"}
        | ({"model_id": "recurring"} if "model_id" in r else {})
        for r in generate("recurring", models=1, events=5000, change_at=1500, **PARITY_TRAFFIC)
    ]
    return list(heapq.merge(covid, recurring, key=itemgetter("timestamp")))


async def test_the_stream_raises_the_same_alerts_as_replay(
    kafka_bootstrap, topic_factory, tmp_path
):
    """The worker and ``replay`` on the same records raise the same alerts.

    Same alerts means, per dedup key, the same sequence of (status, kind,
    severity, monitor, alert id) (the alert id derives from the dedup key
    and the transition number, so it matches too), and the same final
    counts per model.

    The event time of an alert may differ, within a bound. Replay feeds the
    records in event-time order; the worker sees them in arrival order,
    which Kafka keeps only within a partition: it interleaves the partitions
    of two topics as they come, and a worker catching up on a backlog
    drains one partition's fetched batch (thousands of records) before the
    next. So the test produces the history in slices of ``SLICE`` seconds of
    event time, each only once the worker has processed the one before
    (``/models`` shows its counts): every record is then processed after
    all records of earlier slices, and the order of a model's events
    differs from replay's only inside a slice, by less than ``SLICE``
    seconds of event time. A monitor that decides at its k-th event then
    decides on an event at most ``SLICE`` seconds away; one whose decision
    was borderline may tip at its next evaluation instead (the drift tests
    compare windows every 500 predictions, which is 50 s at 10 predictions
    a second). Hence the bound on ``|event_time(stream) - event_time(replay)|``:

        SLICE + EVALUATION_EVENTS[kind] / rate   (60 s for drift tests, 20 s for concept drift)

    ``emitted_at`` is the wall clock in the worker and the event time in a
    replay, so it is not compared.
    """
    partitions = 3
    records = parity_records()
    history = tmp_path / "history.jsonl"
    write_jsonl(history, records)
    expected = replay([history], load_config(env={}))
    assert expected.error_count == 0
    assert sorted((a["model_id"], a["kind"], a["status"]) for a in expected.alerts) == [
        ("pricing", "concept_drift", "firing"),
        ("pricing", "data_drift", "firing"),
        ("pricing", "prediction_drift", "firing"),
        ("recurring", "concept_drift", "firing"),
        ("recurring", "concept_drift", "resolved"),
    ], "the scenarios no longer page as this test expects: pick other parameters"

    # Per slice, the counts /models must show once the worker has processed it.
    start = records[0]["timestamp"]
    slices: dict[int, list[dict[str, Any]]] = {}
    for r in records:
        slices.setdefault(int((r["timestamp"] - start) // SLICE), []).append(r)
    model_of: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    counts: dict[str, dict[str, int]] = {}
    checkpoints = []
    for index in sorted(slices):
        for r in slices[index]:
            side = "prediction" if "prediction" in r else "outcome"
            if side == "prediction":
                model_of[r["request_id"]] = r["model_id"]
            c = counts.setdefault(
                model_of[r["request_id"]], {"predictions": 0, "joined": 0, "duplicates": 0}
            )
            if (side, r["request_id"]) in seen:
                c["duplicates"] += 1
            else:
                seen.add((side, r["request_id"]))
                c["predictions" if side == "prediction" else "joined"] += 1
        checkpoints.append({m: dict(c) for m, c in counts.items()})

    topics = await make_topics(topic_factory, partitions)
    async with (
        running_worker(kafka_bootstrap, topics, tmp_path, partitions=partitions) as worker,
        Producer(kafka_bootstrap) as producer,
    ):
        for index, checkpoint in zip(sorted(slices), checkpoints, strict=True):
            await producer.send_many(
                topics.predictions,
                [(r["request_id"], r) for r in slices[index] if "prediction" in r],
            )
            await producer.send_many(
                topics.outcomes, [(r["request_id"], r) for r in slices[index] if "outcome" in r]
            )
            await worker.wait_models(checkpoint, settle=0, poll=0.02)
        models = await worker.wait_models(checkpoints[-1], settle=1.0)
        messages = await consume(kafka_bootstrap, topics.alerts, expected=len(expected.alerts))

    # The same counts as replay.
    fields = ("predictions", "joined", "expired", "late", "duplicates")
    assert {m["model_id"]: {f: m[f] for f in fields} for m in expected.models} == {
        name: {f: m[f] for f in fields} for name, m in models.items()
    }

    # The same alerts, per dedup key, in the same order.
    def by_key(alerts: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        out: dict[str, list[dict[str, Any]]] = {}
        for a in alerts:
            out.setdefault(a["dedup_key"], []).append(a)
        return out

    streamed = [orjson.loads(m.value) for m in messages]  # in partition order
    for m, alert in zip(messages, streamed, strict=True):
        assert m.key.decode() == alert["dedup_key"]
        jsonschema.validate(alert, ALERT_SCHEMA)
    got, want = by_key(streamed), by_key(expected.alerts)
    identity = ("status", "kind", "severity", "monitor", "model_id", "model_version", "alert_id")

    def shape(alerts: dict[str, list[dict[str, Any]]]) -> dict[str, list[tuple[Any, ...]]]:
        return {k: [tuple(a[f] for f in identity) for a in v] for k, v in alerts.items()}

    assert shape(got) == shape(want)
    for key, alerts in want.items():
        for replayed, live in zip(alerts, got[key], strict=True):
            bound = SLICE + EVALUATION_EVENTS[replayed["kind"]] / PARITY_TRAFFIC["rate"]
            drift = live["event_time"] - replayed["event_time"]
            print(f"{key} {live['status']}: event time {drift:+.3f}s from replay's")
            assert abs(drift) <= bound, (key, replayed["status"], drift, bound)

"""The broker restarts mid-run: worker, simulator and bridge reconnect, counts stay exact.

A module fixture starts a broker of this module's own with
``scripts/kafka-local`` on free ports (never the shared one on 9092, which
other tests use and which is never stopped here), and stops it and removes
its data at the end. A broker that cannot start fails the test: it never
skips. The test is a short run of ``scripts/broker_restart.py``
(:func:`driftline.bench.broker_restart.run_broker_restart`): real
``driftline worker``, ``bridge webhook`` and ``simulate`` processes, the
broker stopped with ``kafka-local stop`` ~6 s into the traffic and started
again 5 s later. It asserts, per model, exact ``predictions`` and
``joined`` against what the broker acknowledged to the simulator, no
duplicate, expired or late record, committed lag zero, and every alert on
the topic delivered to the webhook receiver.
"""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from driftline.bench.broker_restart import (
    BrokerError,
    LocalBroker,
    RestartOptions,
    report,
    run_broker_restart,
)

pytestmark = pytest.mark.kafka

# 25 s of traffic is too little for the default detectors to page: a threshold on
# pricing's accuracy (about 0.9 before the covid shift, 0.56 after) pages within seconds.
QUICK_ALERTS = """
[alerts]
warmup_predictions = 20

[models.pricing.monitors.performance]
window = 100
thresholds = [{metric = "accuracy", below = 0.75, for_events = 30, severity = "critical"}]
"""


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port_pair() -> int:
    """A port whose next port is free too (the broker's and its controller's).

    Below Linux's ephemeral range (32768 and up by default): while the
    broker is down, the clients keep connecting to its port, and one whose
    own source port happens to be that very port connects to itself (TCP
    simultaneous open) and holds it, so the broker cannot bind again. That
    failed this test once in a fresh-clone CI run ("Address already in use").
    """
    rng = random.Random()
    for _ in range(100):
        base = rng.randrange(20_000, 32_000)
        if base not in (9092, 9091) and _port_free(base) and _port_free(base + 1):
            return base
    raise RuntimeError("no two consecutive free ports found")


@pytest.fixture(scope="module")
def own_broker() -> Iterator[LocalBroker]:
    """A broker of this module's own; stopped and wiped at the end, whatever happened."""
    broker = LocalBroker(_free_port_pair())
    try:
        try:
            broker.start()
        except BrokerError as exc:
            pytest.fail(str(exc), pytrace=False)
        yield broker
    finally:
        try:
            broker.stop()
        except BrokerError as exc:
            print(exc)
        else:
            broker.wipe()


async def test_clients_reconnect_and_counts_stay_exact_across_a_broker_restart(
    own_broker: LocalBroker, tmp_path: Path
) -> None:
    options = RestartOptions(
        rate=200.0,
        duration=25.0,
        change_at=8.0,
        stop_at=6.0,
        down=5.0,
        catch_up_timeout=60.0,
        workdir=tmp_path,
        config_text=QUICK_ALERTS,
    )
    result = await run_broker_restart(own_broker, options)
    print(report(result))
    assert result.truth["predictions"] > 0
    assert not result.problems, report(result)
    for model in result.models:
        assert model["duplicates"] == model["expired"] == model["late"] == 0
    assert result.alert_ids_on_topic, "no alert fired: the bridge was not exercised"
    assert all(result.delivered_ids[i] for i in result.alert_ids_on_topic)

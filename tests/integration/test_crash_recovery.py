"""kill -9 the worker twice mid-run: after each restart on the same data, counts stay exact.

The reduced ``scripts/crash_recovery.py``
(:func:`driftline.bench.crash_recovery.run_crash_recovery`): a broker of
the run's own on free ports (never the shared one on 9092, which other
tests use), real ``driftline worker``, ``bridge webhook`` and ``simulate``
processes, about 20,000 predictions (5% without an outcome, 20 records per
message) and two SIGKILLs of the worker, each followed by a restart with
the same data directory. A broker that cannot start fails the test: it
never skips. The run stops and wipes its broker at the end, whatever
happened.

The worker runs with ``--instance-id`` (Kafka static membership), so a
restarted worker gets its partitions back within seconds rather than
after the session timeout; a kill only lands once the previous restart
has caught up. Run with ``-s`` to see the
report (the kills, their recovery times, the counts per model, the alerts).

It asserts, per model, ``predictions`` and ``joined`` equal to what the
broker acknowledged to the simulator, ``expired`` equal to the predictions
sent without an outcome (the label TTL is 30 s), no duplicate or late
record, committed lag zero, the ``pricing`` concept-drift alert on the
alert topic, one dedup key per condition, and every alert delivered.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from driftline.bench.broker_restart import BrokerError
from driftline.bench.crash_recovery import CrashOptions, report, run_crash_recovery
from integration.test_broker_restart import _free_port_pair

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_counts_stay_exact_across_two_kill_9s_of_the_worker(tmp_path: Path) -> None:
    options = CrashOptions(
        port=_free_port_pair(),
        rate=350.0,
        duration=60.0,
        batch=20,
        kills=2,
        kill_window=(0.05, 0.5),
        catch_up_timeout=150.0,
        workdir=tmp_path,
    )
    try:
        result = await run_crash_recovery(options)
    except BrokerError as exc:
        pytest.fail(str(exc), pytrace=False)
    text = report(result)
    print(text)
    assert result.truth.get("predictions", 0) >= 20_000, text
    assert len(result.kills) == 2, text
    assert result.problems == [], text

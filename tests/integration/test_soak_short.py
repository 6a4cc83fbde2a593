"""A short soak through a real worker: the reduced ``scripts/soak.py``.

35 s of ``driftline simulate --scenario stable`` at 200 predictions/s over
2 models (single-record messages, lognormal label delay of median 5 s) with
a 10 s label TTL, so the join's entries (kept up to two TTLs) turn over
within the run. Asserts no error in the worker's log, the lag back to 0
once the traffic stops, and RSS after a 20 s warm-up growing less than 50%:
the machine is shared and the run short (RocksDB's memtables alone grow
by the bytes written), so only a gross leak fails it. The 10-minute figures
are in docs/reliability.md, section 5.
"""

from __future__ import annotations

import pytest

from driftline.bench.soak import run_soak, soak_report

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


async def test_short_soak_has_no_errors_drains_and_does_not_leak(kafka_bootstrap):
    result = await run_soak(
        kafka_bootstrap,
        seconds=35.0,
        rate=200.0,
        models=2,
        label_ttl="10s",
        interval=3.0,
        warmup=20.0,
        max_growth=0.5,
        echo=lambda line: None,
    )
    text = soak_report(result)
    assert result.alive and result.failure is None, text
    assert result.errors == 0, text
    assert result.drained_lag == 0, text
    assert result.growth < 0.5, text
    last = result.samples[-1]
    assert last.predictions >= 0.9 * 35 * 200, text
    assert last.joined > 0.5 * last.predictions, text
    assert not result.problems, text

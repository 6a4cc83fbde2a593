"""Hostile input through a real worker: the small version of ``scripts/hostile_input.py``.

Every kind of :mod:`driftline.hostile` (invalid UTF-8, 10k-deep nesting,
multi-megabyte messages, NaN, huge numbers, wrong types, control
characters, 10k features, a record from year 9999, ...) once, mixed into
2,000 good pairs over 4 partitions, plus floods of new model ids, versions
and feature names against caps set low (``limits.max_models = 50``,
``limits.max_versions_per_model = 10``). The worker must stay up, put every
bad record in the dead letter with its reason, join every good record and
every odd-but-valid one, refuse the floods past the caps with
"limit reached", and commit its input offsets to the end (lag zero).

:func:`driftline.bench.hostile.run_hostile` does the sending and the
tallying (the script shares it); the contract is restated here as asserts.
"""

from __future__ import annotations

import pytest

from driftline.bench.hostile import report, run_hostile
from driftline.hostile import KINDS

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

PAIRS = 2_000
MAX_MODELS = 50
MAX_VERSIONS = 10


async def test_hostile_input_is_dead_lettered_and_good_records_all_join(kafka_bootstrap):
    result = await run_hostile(
        kafka_bootstrap,
        pairs=PAIRS,
        repeat=1,
        partitions=4,
        max_models=MAX_MODELS,
        max_versions=MAX_VERSIONS,
        timeout=120.0,
        echo=lambda line: None,
    )
    tally = report(result)
    assert result.alive, tally
    assert not result.problems, tally

    # Every kind was sent; each refusal is in the dead letter with its reason.
    kinds = {k.kind: k for k in result.kinds}
    assert set(kinds) == {k.name for k in KINDS}
    for k in result.kinds:
        assert k.refused == k.expected and not k.wrong, f"{k.kind}: {k}"
    assert kinds["multi_megabyte"].reason.startswith("message is 3145")
    assert "ahead of the message's Kafka timestamp" in kinds["timestamp_year_9999"].reason
    assert kinds["ten_thousand_bad_records"].refused == 10_000
    assert sum(k.expected for k in result.kinds) > 10_000 + 60

    # Every good pair and every accepted odd record joined; nothing expired.
    assert result.good_joined == PAIRS
    assert result.accepted_joined == result.accepted_expected > 1_800
    assert result.duplicates == result.duplicates_expected == 1

    # The floods: bounded by the caps, the rest refused with a reason, none lost.
    floods = {f.kind: f for f in result.floods}
    for f in result.floods:
        assert f.monitored + f.refused == f.sent, f
    assert floods["model_id_flood"].refused >= 2 * MAX_MODELS - MAX_MODELS
    assert "limit reached" in floods["model_id_flood"].reason
    assert floods["model_version_flood"].refused >= MAX_VERSIONS
    assert floods["feature_name_flood"].refused == 0
    assert result.max_versions_seen <= MAX_VERSIONS

    # No stalled partition: the worker's committed offsets are the end offsets.
    assert len(result.lag) == 2 and not any(result.lag.values()), result.lag
    assert result.seconds < 90, tally

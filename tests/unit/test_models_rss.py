"""Memory per monitored model, small: the reduced ``scripts/models_rss.py``.

200 fresh monitors and 20 of them warmed with 4,000 joined predictions each
(drift reference frozen, every window full). The bounds are generous, about
four times what the development machine measures (26 KiB fresh, 230 KiB
warm): RSS is noisy and allocator-dependent, and the test is there to catch
a per-model structure that grows with the traffic or a buffer that is
never released, not to pin a figure.
"""

from __future__ import annotations

import sys

import pytest

from driftline.bench.models_rss import components, measure_models_rss, report

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

FRESH_BOUND = 128 * 1024
WARM_BOUND = 1024 * 1024


def test_rss_per_model_is_bounded() -> None:
    result, ms = measure_models_rss(200, warm_models=20, per_model=4_000)
    text = report(result)
    assert len(ms.monitors) == 200
    assert result.fresh_per_model < FRESH_BOUND, text
    assert result.warm_per_model < WARM_BOUND, text

    warm = ms.monitors[("model-0", "v1")]
    assert warm.predictions == warm.joined == 4_000
    assert warm.feature_drift is not None and warm.feature_drift.frozen
    parts = dict(components(warm))
    # The rolling window's deferred events are trimmed to at most 1.25 windows.
    assert parts["rolling._pending"] < 1.25 * 1_000 * 100 + 16_384, parts
    assert sum(parts.values()) < WARM_BOUND / 2, parts

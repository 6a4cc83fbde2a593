import pickle
import random

import pytest
from river import drift

from driftline.core.config import DETECTORS, ConceptDriftConfig, ConfigError
from driftline.core.detectors import LossDriftMonitor, make_detector


def stream(rates, n_each, seed=1):
    rng = random.Random(seed)
    for rate in rates:
        for _ in range(n_each):
            yield float(rng.random() < rate)


def verdicts(mon, losses):
    return [(i, v) for i, x in enumerate(losses) if (v := mon.update(x))]


@pytest.mark.parametrize("name", DETECTORS)
def test_every_detector_confirms_a_doubling_error_rate(name):
    mon = LossDriftMonitor(ConceptDriftConfig(detector=name))
    got = verdicts(mon, stream([0.1, 0.4], 5000))
    degraded = [i for i, v in got if v == "degraded"]
    assert degraded, f"{name} missed it"
    assert 5000 < degraded[0] < 7000, f"{name} confirmed at {degraded[0]}"


@pytest.mark.parametrize("name", ["ADWIN", "PageHinkley", "DDM", "HDDM_A"])
def test_an_improving_model_never_degrades(name):
    mon = LossDriftMonitor(ConceptDriftConfig(detector=name))
    got = verdicts(mon, stream([0.4, 0.1], 5000))
    assert "degraded" not in [v for _, v in got]


def test_improvement_is_recorded_and_becomes_the_new_baseline():
    mon = LossDriftMonitor(ConceptDriftConfig())
    got = verdicts(mon, stream([0.4, 0.1, 0.3], 5000))
    kinds = [v for _, v in got]
    assert "improved" in kinds
    assert mon.improvements >= 1
    # 0.3 is worse than the improved baseline of 0.1: it must page now.
    assert "degraded" in kinds


def test_stable_stream_never_degrades():
    for seed in range(5):
        mon = LossDriftMonitor(ConceptDriftConfig())
        got = verdicts(mon, stream([0.2], 50000, seed=seed))
        assert "degraded" not in [v for _, v in got], seed


def test_recovery_after_degradation():
    mon = LossDriftMonitor(ConceptDriftConfig())
    got = [v for _, v in verdicts(mon, stream([0.1, 0.5, 0.1], 4000))]
    assert got.index("degraded") < got.index("recovered")


def test_regression_losses_use_a_real_valued_detector():
    mon = LossDriftMonitor(ConceptDriftConfig(detector="DDM"), binary_loss=False)
    assert mon.detector_name == "ADWIN"
    rng = random.Random(2)
    losses = [abs(rng.gauss(0, 1)) * (1 if i < 4000 else 1.6) for i in range(8000)]
    got = verdicts(mon, losses)
    assert any(v == "degraded" and i > 4000 for i, v in got)


def test_small_noise_is_not_a_degradation():
    # A rise smaller than the margins is not worth a page even if detected.
    mon = LossDriftMonitor(ConceptDriftConfig(absolute_margin=0.05, relative_margin=0.5))
    got = verdicts(mon, stream([0.2, 0.24], 20000))
    assert "degraded" not in [v for _, v in got]


def test_pickle_round_trip_continues_identically():
    losses = list(stream([0.1, 0.35], 3000, seed=4))
    a = LossDriftMonitor(ConceptDriftConfig())
    for x in losses[:2900]:
        a.update(x)
    b = pickle.loads(pickle.dumps(a))
    assert [a.update(x) for x in losses[2900:]] == [b.update(x) for x in losses[2900:]]


def test_bad_detector_params_are_a_config_error():
    with pytest.raises(ConfigError, match="bad parameters"):
        make_detector("ADWIN", {"nonsense": 1})


@pytest.mark.parametrize("name", ["DDM", "ADWIN", "EDDM"])
def test_a_lucky_start_does_not_make_ordinary_errors_a_degradation(name):
    """DDM fires within its first samples; a 0% baseline of 40 outcomes must not page."""
    for seed in range(10):
        rng = random.Random(seed)
        losses = [0.0] * 40 + [float(rng.random() < 0.08) for _ in range(4000)]
        mon = LossDriftMonitor(ConceptDriftConfig(detector=name))
        assert "degraded" not in [v for _, v in verdicts(mon, losses)], seed


def test_adwin_driven_directly_detects_exactly_where_river_does():
    # The monitor bypasses ADWIN's Python shim; it must see the same drifts.
    rng = random.Random(7)
    losses = [float(rng.random() < (0.1 if i < 3000 else 0.4)) for i in range(6000)]
    mon = LossDriftMonitor(ConceptDriftConfig(detector="ADWIN"))
    assert mon.adwin
    reference = drift.ADWIN()
    ours, theirs = [], []
    for i, x in enumerate(losses):
        mon.update(x, float(i))
        reference.update(x)
        if mon.detector.drift_detected:
            ours.append(i)
        if reference.drift_detected:
            theirs.append(i)
    assert theirs, "the stream must contain a drift for this test to mean anything"
    assert ours == theirs
    assert mon.detections == len(theirs)

import pickle

from driftline.core.alerts import AlertPolicy, Condition, Finding, dedup_key
from driftline.core.config import AlertsConfig

COND = Condition("concept_drift", "concept_drift", "error")


def run(policy, pattern, cond=COND, start=0.0, step=1.0, may_page=True):
    out = []
    for i, active in enumerate(pattern):
        a = policy.observe(cond, active, start + i * step, Finding("x", 1.0), may_page=may_page)
        if a:
            out.append((start + i * step, a["status"]))
    return out


def test_fires_once_and_resolves_after_hysteresis():
    p = AlertPolicy("m", "v1", AlertsConfig(resolve_after=3, cooldown=0))
    got = run(p, [True, True, False, True, False, False, False, False])
    assert got == [(0.0, "firing"), (6.0, "resolved")]


def test_cooldown_holds_a_refire_until_it_passes():
    p = AlertPolicy("m", "v1", AlertsConfig(resolve_after=1, cooldown=10))
    got = run(p, [True, False, True, True], step=4)  # active again at 8 and 12
    assert got == [(0.0, "firing"), (4.0, "resolved")]
    assert p.suppressed() == 2
    assert run(p, [True], start=15.0) == [(15.0, "firing")]


def test_warmup_suppresses_and_counts():
    p = AlertPolicy("m", "v1", AlertsConfig())
    assert run(p, [True, True], may_page=False) == []
    assert p.suppressed() == 2
    assert run(p, [True]) == [(0.0, "firing")]


def test_resolved_always_follows_firing_and_keys_are_stable():
    p = AlertPolicy("m", "v1", AlertsConfig(resolve_after=1, cooldown=0))
    msgs = []
    for i, active in enumerate([False, True, False, False, True, False]):
        a = p.observe(COND, active, float(i), Finding("s"))
        if a:
            msgs.append(a)
    assert [m["status"] for m in msgs] == ["firing", "resolved", "firing", "resolved"]
    assert {m["dedup_key"] for m in msgs} == {"driftline/m/v1/concept_drift"}
    assert len({m["alert_id"] for m in msgs}) == 4


def test_same_history_gives_same_alert_ids():
    def ids():
        p = AlertPolicy("m", "v1", AlertsConfig(resolve_after=1, cooldown=0))
        return [
            a["alert_id"] for i in range(6) if (a := p.observe(COND, i % 2 == 0, i, Finding("s")))
        ]

    assert ids() == ids()


def test_segment_is_part_of_the_key_and_message():
    cond = Condition("data_drift", "data_drift", "warning", segment=(("region", "eu"),))
    assert dedup_key("m", "v", cond) == "driftline/m/v/data_drift/region=eu"
    p = AlertPolicy("m", "v", AlertsConfig())
    a = p.observe(cond, True, 1.0, Finding("s"))
    assert a["segment"] == {"region": "eu"}


def test_summary_is_capped_and_non_finite_values_become_null():
    p = AlertPolicy("m", "v", AlertsConfig())
    a = p.observe(COND, True, 1.0, Finding("x" * 5000, value=float("nan"), baseline=float("inf")))
    assert len(a["summary"]) == 1024
    assert a["value"] is None and a["baseline"] is None


def test_policy_pickles_mid_incident():
    p = AlertPolicy("m", "v1", AlertsConfig(resolve_after=2, cooldown=0))
    run(p, [True, False])
    q = pickle.loads(pickle.dumps(p))
    assert run(q, [False]) == [(0.0, "resolved")]
    assert p.firing() and not q.firing()

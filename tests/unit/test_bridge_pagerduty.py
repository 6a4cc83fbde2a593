"""The PagerDuty Events v2 event built for each alert: mapping, limits, links, secrecy."""

import orjson
import pytest

from driftline.bridges.pagerduty import (
    EVENTS_URL,
    SEVERITY,
    PagerDutyTarget,
    dashboard_link,
    encode_event,
    pagerduty_dedup_key,
    pagerduty_event,
    rfc3339,
    truncate,
)
from driftline.core.alerts import AlertPolicy, Condition, Finding
from driftline.core.config import SEVERITIES, AlertsConfig
from integration.bridge_endpoints import check_pagerduty_event

KEY = "r0ut1ngk3yf0rt3st5only0000000000"


def _alert(**over):
    alert = {
        "alert_id": "6d3c0e9e-0000-0000-0000-000000000000",
        "dedup_key": "driftline/pricing/v3/concept_drift",
        "status": "firing",
        "severity": "error",
        "kind": "concept_drift",
        "model_id": "pricing",
        "model_version": "v3",
        "segment": None,
        "monitor": "concept_drift",
        "summary": "pricing v3: error rate rose from 8.9% to 53.0% over the 100 outcomes",
        "value": 0.53,
        "threshold": None,
        "baseline": 0.089,
        "window": {"events": 100, "start": 1700000030.0, "end": 1700000035.0},
        "event_time": 1700000035.25,
        "emitted_at": 1700000036.0,
        "evidence": {"detector": "ADWIN", "delta": 0.002},
    }
    alert.update(over)
    return alert


def test_firing_is_a_trigger_with_every_field_mapped():
    event = pagerduty_event(_alert(), routing_key=KEY, source="ml-prod")
    assert check_pagerduty_event(event, KEY) == []
    assert event["routing_key"] == KEY
    assert event["event_action"] == "trigger"
    assert event["dedup_key"] == "driftline/pricing/v3/concept_drift"
    assert event["payload"] == {
        "summary": "pricing v3: error rate rose from 8.9% to 53.0% over the 100 outcomes",
        "source": "ml-prod",
        "severity": "error",
        "timestamp": "2023-11-14T22:13:55.250Z",
        "component": "pricing",
        "group": "v3",
        "class": "concept_drift",
        "custom_details": {
            "value": 0.53,
            "threshold": None,
            "baseline": 0.089,
            "window": {"events": 100, "start": 1700000030.0, "end": 1700000035.0},
            "kind": "concept_drift",
            "model_id": "pricing",
            "model_version": "v3",
            "segment": None,
            "monitor": "concept_drift",
            "event_time": 1700000035.25,
            "emitted_at": 1700000036.0,
            "alert_id": "6d3c0e9e-0000-0000-0000-000000000000",
            "dedup_key": "driftline/pricing/v3/concept_drift",
            "evidence": {"detector": "ADWIN", "delta": 0.002},
        },
    }
    assert "links" not in event and "client_url" not in event


def test_resolved_is_a_resolve_with_the_same_dedup_key_and_nothing_else():
    event = pagerduty_event(_alert(status="resolved"), routing_key=KEY)
    assert event == {
        "routing_key": KEY,
        "event_action": "resolve",
        "dedup_key": "driftline/pricing/v3/concept_drift",
    }
    assert check_pagerduty_event(event, KEY) == []


@pytest.mark.parametrize("severity", SEVERITIES)
def test_every_driftline_severity_maps_to_a_pagerduty_one(severity):
    event = pagerduty_event(_alert(severity=severity), routing_key=KEY)
    assert event["payload"]["severity"] == SEVERITY[severity] == severity
    assert set(SEVERITY.values()) == {"critical", "error", "warning", "info"}


@pytest.mark.parametrize(("length", "expected"), [(1023, 1023), (1024, 1024), (1025, 1024)])
def test_summary_is_cut_to_1024_characters_with_an_ellipsis(length, expected):
    summary = "é" * length  # characters, not bytes
    got = pagerduty_event(_alert(summary=summary), routing_key=KEY)["payload"]["summary"]
    assert len(got) == expected
    assert got.endswith("…") == (length > 1024)
    assert truncate("x" * 5000).startswith("x" * 1023)


def test_links_to_the_dashboard_when_one_is_configured():
    event = pagerduty_event(
        _alert(model_version="v3 beta"),
        routing_key=KEY,
        dashboard_url="https://grafana.example/d/ml?var-model={model_id}&var-v={model_version}",
    )
    href = "https://grafana.example/d/ml?var-model=pricing&var-v=v3%20beta"
    assert event["links"] == [{"href": href, "text": "driftline: pricing v3 beta"}]
    assert event["client_url"] == href
    assert check_pagerduty_event(event, KEY) == []


def test_dashboard_link_keeps_other_braces_and_quotes_values():
    assert dashboard_link('https://d/x?q={"a":1}&m={model_id}', {"model_id": "a/b"}) == (
        'https://d/x?q={"a":1}&m=a%2Fb'
    )
    assert dashboard_link("https://d/{monitor}", {}) == "https://d/"


def test_timestamp_falls_back_to_emitted_at_then_is_left_out():
    p = pagerduty_event(_alert(event_time="?"), routing_key=KEY)["payload"]
    assert p["timestamp"] == "2023-11-14T22:13:56.000Z"
    p = pagerduty_event(_alert(event_time=None, emitted_at=None), routing_key=KEY)["payload"]
    assert "timestamp" not in p
    assert rfc3339(0) == "1970-01-01T00:00:00.000Z"
    assert rfc3339(-1) is None and rfc3339(True) is None and rfc3339(1e300) is None


def test_optional_fields_may_be_missing():
    minimal = {
        "dedup_key": "k",
        "status": "firing",
        "severity": "info",
        "model_id": "m",
        "summary": "m: something",
    }
    event = pagerduty_event(minimal, routing_key=KEY)
    assert check_pagerduty_event(event, KEY) == []
    assert "group" not in event["payload"] and "class" not in event["payload"]
    assert (
        pagerduty_event({**minimal, "kind": "data_drift"}, routing_key=KEY)["payload"]["class"]
        == "data_drift"
    )


def test_a_dedup_key_too_long_for_pagerduty_becomes_a_stable_short_one():
    long_key = "driftline/" + "m" * 128 + "/" + "v" * 128 + "/concept_drift/region=eu"
    firing = pagerduty_event(_alert(dedup_key=long_key), routing_key=KEY)
    resolve = pagerduty_event(_alert(dedup_key=long_key, status="resolved"), routing_key=KEY)
    assert len(firing["dedup_key"]) == 255
    assert firing["dedup_key"] == resolve["dedup_key"]
    assert firing["payload"]["custom_details"]["dedup_key"] == long_key
    other = pagerduty_dedup_key(long_key[:-2] + "us")
    assert other != firing["dedup_key"]
    assert check_pagerduty_event(firing, KEY) == []


def test_the_real_alert_policy_output_makes_a_valid_event():
    policy = AlertPolicy("fraud", "v12", AlertsConfig(resolve_after=1, cooldown=0))
    cond = Condition("data_drift", "data_drift", "warning", segment=(("region", "eu"),))
    fired = policy.observe(cond, True, 1_700_000_000.0, Finding("fraud v12: 2 drifted", 0.3))
    resolved = policy.observe(cond, False, 1_700_000_100.0, Finding("fraud v12: back", 0.0))
    for msg in (fired, resolved):
        event = pagerduty_event(msg, routing_key=KEY)
        assert check_pagerduty_event(event, KEY) == []
        assert event["dedup_key"] == "driftline/fraud/v12/data_drift/region=eu"
    assert pagerduty_event(fired, routing_key=KEY)["payload"]["custom_details"]["segment"] == {
        "region": "eu"
    }


def test_oversized_evidence_is_dropped_not_the_page():
    event = pagerduty_event(_alert(evidence={"bins": list(range(200_000))}), routing_key=KEY)
    body = encode_event(event)
    assert len(body) < 512 * 1024
    details = orjson.loads(body)["payload"]["custom_details"]
    assert details["evidence"].startswith("omitted: ") and details["value"] == 0.53
    small = pagerduty_event(_alert(), routing_key=KEY)
    assert encode_event(small) == orjson.dumps(small)


def test_target_builds_the_request_and_never_shows_the_routing_key():
    target = PagerDutyTarget(KEY, dashboard_url="https://d/{model_id}")
    request = target.request(_alert(), b"ignored")
    assert request.url == EVENTS_URL
    assert request.headers == {"Content-Type": "application/json"}
    assert orjson.loads(request.body)["routing_key"] == KEY
    assert KEY not in repr(target) and KEY not in target.display_url
    assert target.redact(f'{{"error": "bad key {KEY}"}}') == '{"error": "bad key [redacted]"}'
    with pytest.raises(ValueError, match="routing key"):
        PagerDutyTarget("")

"""The line `driftline alerts tail` prints for an alert, and for what is not one."""

import pytest

from driftline.alerts_tail import decode_alert, format_alert, format_time, format_unreadable
from driftline.core.alerts import AlertPolicy, Condition, Finding
from driftline.core.config import AlertsConfig


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
        "threshold": 0.12,
        "baseline": 0.089,
        "window": {"events": 100, "start": 1700000030.0, "end": 1700000035.0},
        "event_time": 1700000035.25,
        "emitted_at": 1700000036.0,
        "evidence": {},
    }
    alert.update(over)
    return alert


def test_firing_alert_line():
    assert format_alert(_alert()) == (
        "2023-11-14T22:13:55Z  error     firing    pricing/v3        concept_drift     "
        "pricing v3: error rate rose from 8.9% to 53.0% over the 100 outcomes"
    )


def test_resolved_alert_line_uses_event_time_not_emitted_at():
    line = format_alert(_alert(status="resolved", event_time=1700000100.0, emitted_at=1800000000.0))
    assert line.startswith("2023-11-14T22:15:00Z  error     resolved  pricing/v3")


def test_columns_line_up_across_alerts():
    a = format_alert(_alert())
    b = format_alert(_alert(severity="warning", monitor="data_drift", model_id="fraud"))
    assert a.index("pricing v3:") == b.index("pricing v3:")


def test_segment_is_shown_with_the_model():
    line = format_alert(_alert(segment={"region": "eu-west", "channel": "app"}))
    assert "pricing/v3{region=eu-west,channel=app}" in line


def test_long_names_are_not_truncated():
    line = format_alert(
        _alert(model_id="a-very-long-model-name", monitor="threshold:accuracy:below")
    )
    assert "a-very-long-model-name/v3  threshold:accuracy:below  pricing v3" in line


def test_missing_and_odd_fields_print_as_question_marks():
    line = format_alert({"status": "firing"})
    assert line.split() == ["?", "?", "firing", "?/?", "?", "?"]
    assert format_alert(_alert(event_time="yesterday")).startswith("?  ")
    assert format_alert(_alert(event_time=float("nan"))).startswith("?  ")
    assert format_alert(_alert(event_time=1e300)).startswith("?  ")


def test_control_characters_cannot_reach_the_terminal():
    line = format_alert(_alert(summary="line one\nline two \x1b[2J\x07", model_id="m\rx"))
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\x07" not in line
    assert "line one line two \\x1b[2J\\x07" in line
    assert "m x/v3" in line


def test_real_policy_message_formats():
    policy = AlertPolicy("fraud", "v12", AlertsConfig(resolve_after=1, cooldown=0))
    cond = Condition("data_drift", "data_drift", "warning")
    msg = policy.observe(
        cond, True, 1_700_000_000.0, Finding("fraud v12: 2 of 10 features drifted")
    )
    assert format_alert(msg) == (
        "2023-11-14T22:13:20Z  warning   firing    fraud/v12         data_drift        "
        "fraud v12: 2 of 10 features drifted"
    )


@pytest.mark.parametrize(
    ("t", "expected"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1700000000.999, "2023-11-14T22:13:20Z"),
        (None, "?"),
        (False, "?"),
        (float("inf"), "?"),
    ],
)
def test_format_time(t, expected):
    assert format_time(t) == expected


def test_decode_alert_accepts_an_object():
    assert decode_alert(b'{"status": "firing", "model_id": "m"}') == {
        "status": "firing",
        "model_id": "m",
    }


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty message"),
        (b"", "empty message"),
        (b"not json{", "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
        (b"[1, 2]", "a JSON array, not an alert object"),
        (b'"firing"', "a JSON string, not an alert object"),
        (b"42", "a JSON number, not an alert object"),
        (b"null", "a JSON null, not an alert object"),
        (b"true", "a JSON boolean, not an alert object"),
    ],
)
def test_decode_alert_rejects_what_is_not_an_alert(value, reason):
    with pytest.raises(ValueError, match="^" + reason.replace("(", r"\(")):
        decode_alert(value)


def test_unreadable_line_names_the_message_and_previews_it():
    assert format_unreadable("alerts", 3, 41, b"garbage", "not valid JSON: x") == (
        "warning: alerts[3]@41 is not an alert (not valid JSON: x): b'garbage'"
    )
    line = format_unreadable("alerts", 0, 0, b"x" * 500, "not valid JSON")
    assert line.endswith("... (500 bytes)")
    assert len(line) < 200
    assert format_unreadable("alerts", 0, 7, None, "empty message").endswith("(empty message): b''")

"""Which messages a bridge refuses as malformed, and the reason it gives."""

import orjson
import pytest

from driftline.bridges.alert import AlertError, parse_alert, redact

GOOD = {
    "dedup_key": "driftline/m/v1/concept_drift",
    "status": "firing",
    "severity": "error",
    "model_id": "m",
    "summary": "m v1: error rate rose",
}


def test_a_good_alert_passes_with_unknown_fields_kept():
    alert = parse_alert(orjson.dumps({**GOOD, "new_field_of_v1_1": 3}))
    assert alert["new_field_of_v1_1"] == 3


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty message"),
        (b"", "empty message"),
        (b"not json", "not valid JSON"),
        (b"[1]", "a JSON array, not an alert object"),
        (orjson.dumps({**GOOD, "dedup_key": None}), 'missing field "dedup_key"'),
        (
            orjson.dumps({k: v for k, v in GOOD.items() if k != "summary"}),
            'missing field "summary"',
        ),
        (orjson.dumps({**GOOD, "summary": "  "}), 'field "summary" must be a non-empty string'),
        (orjson.dumps({**GOOD, "model_id": 7}), 'field "model_id" must be a non-empty string'),
        (
            orjson.dumps({**GOOD, "status": "acked"}),
            'field "status" must be one of firing, resolved',
        ),
        (orjson.dumps({**GOOD, "severity": "page"}), 'field "severity" must be one of critical'),
    ],
)
def test_malformed_messages_are_refused_with_the_reason(value, reason):
    with pytest.raises(AlertError) as err:
        parse_alert(value)
    assert str(err.value).startswith(reason)


def test_redact_replaces_every_secret_and_ignores_empty_ones():
    assert redact("k=abc, again abc", ["abc", ""]) == "k=[redacted], again [redacted]"
    assert redact("nothing here", []) == "nothing here"

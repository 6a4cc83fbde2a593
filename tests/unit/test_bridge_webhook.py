"""What the webhook bridge sends: the exact alert bytes, the HMAC signature, Slack's shape."""

import hashlib
import hmac

import orjson

from driftline.bridges.webhook import (
    SIGNATURE_HEADER,
    WebhookTarget,
    display_url,
    sign,
    slack_body,
    slack_text,
    verify_signature,
)

ALERT = {
    "alert_id": "a-1",
    "dedup_key": "driftline/pricing/v3/concept_drift",
    "status": "firing",
    "severity": "error",
    "model_id": "pricing",
    "model_version": "v3",
    "monitor": "concept_drift",
    "summary": "pricing v3: error rate rose from 9.8% to 44.0%",
}
# As on the topic: key order and spacing of the producer, which the body must keep.
RAW = b'{"status": "firing",  "dedup_key": "driftline/pricing/v3/concept_drift"}'


def test_signature_is_hex_hmac_sha256_of_the_exact_body():
    expected = hmac.new(b"s3cret", RAW, hashlib.sha256).hexdigest()
    assert sign(RAW, "s3cret") == f"sha256={expected}"
    assert sign(RAW, "other") != sign(RAW, "s3cret")
    assert sign(RAW + b" ", "s3cret") != sign(RAW, "s3cret")


def test_verify_accepts_the_signature_and_rejects_tampering():
    header = sign(RAW, "s3cret")
    assert verify_signature(RAW, "s3cret", header)
    assert verify_signature(RAW, "s3cret", f"  {header} ")
    assert not verify_signature(RAW.replace(b"firing", b"resolved"), "s3cret", header)
    assert not verify_signature(RAW, "wrong", header)
    assert not verify_signature(RAW, "s3cret", "")
    assert not verify_signature(RAW, "s3cret", header.replace("sha256=", "sha1="))


def test_body_is_the_message_bytes_untouched_and_signed():
    request = WebhookTarget("https://hooks.example/driftline", secret="s3cret").request(ALERT, RAW)
    assert request.body == RAW
    assert request.headers[SIGNATURE_HEADER] == sign(RAW, "s3cret")
    assert request.headers["Content-Type"] == "application/json"


def test_no_signature_header_without_a_secret():
    request = WebhookTarget("https://hooks.example/x").request(ALERT, RAW)
    assert SIGNATURE_HEADER not in request.headers
    assert not WebhookTarget("https://hooks.example/x", secret="").signed


def test_slack_body_is_text_only_and_the_signature_covers_it():
    request = WebhookTarget("https://hooks.slack.com/services/T/B/X", secret="k", slack=True)
    built = request.request(ALERT, RAW)
    assert orjson.loads(built.body) == {
        "text": ":red_circle: *FIRING* error · pricing/v3 · concept_drift:"
        " pricing v3: error rate rose from 9.8% to 44.0%"
    }
    assert built.headers[SIGNATURE_HEADER] == sign(built.body, "k")


def test_slack_text_escapes_markup_and_stays_short():
    text = slack_text({**ALERT, "summary": "<!channel> a & b > c", "status": "resolved"})
    assert text.startswith(":large_green_circle: *RESOLVED* ")
    assert "&lt;!channel&gt; a &amp; b &gt; c" in text and "<!channel>" not in text
    assert len(slack_text({**ALERT, "summary": "x" * 10_000})) == 3000
    assert orjson.loads(slack_body(ALERT))["text"] == slack_text(ALERT)


def test_urls_and_secrets_stay_out_of_logs():
    url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET?token=abc"
    target = WebhookTarget(url, secret="s3cret")
    assert target.display_url == "https://hooks.slack.com/…" == display_url(url)
    assert "XXXX" not in repr(target) and "s3cret" not in repr(target)
    said = f"POST {url} failed; path /services/T000/B000/XXXXSECRET; secret s3cret"
    cleaned = target.redact(said)
    assert "XXXXSECRET" not in cleaned and "s3cret" not in cleaned and "abc" not in cleaned
    assert display_url("http://127.0.0.1:8080") == "http://127.0.0.1:8080"
    assert display_url("http://user:pw@h/") == "http://h/…"

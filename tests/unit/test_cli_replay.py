"""`driftline replay` as a user runs it: stdout alerts, stderr summary, exit status."""

import json
from pathlib import Path

import jsonschema
from click.testing import CliRunner

from driftline.cli import main

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "covid.jsonl.gz"
ALERT_SCHEMA = json.loads((ROOT / "schemas" / "alert.v1.json").read_text())


def run(*args):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def test_bundled_example_prints_alerts_and_a_summary(tmp_path):
    out = tmp_path / "alerts.jsonl"
    r = run("replay", str(EXAMPLE), "--alerts-out", str(out))
    assert r.exit_code == 0
    alerts = [json.loads(line) for line in r.stdout.splitlines()]
    assert {a["model_id"] for a in alerts} == {"pricing"}
    for a in alerts:
        jsonschema.validate(a, ALERT_SCHEMA)
    assert out.read_text() == r.stdout
    assert "pricing  v3" in r.stderr and "3 alert messages" in r.stderr


def test_malformed_lines_are_reported_and_strict_fails(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"request_id": "a", "model_id": "m", "prediction": 1, "timestamp": 5}\nnope\n')
    r = run("replay", str(bad))
    assert r.exit_code == 0
    assert f"{bad}:2: not valid JSON" in r.stderr
    assert "1 malformed lines" in r.stderr
    assert run("replay", "--strict", str(bad)).exit_code == 1


def test_bad_config_is_a_clear_error(tmp_path):
    cfg = tmp_path / "driftline.toml"
    cfg.write_text("[monitors.concept_drift]\ndetectr = 'DDM'\n")
    r = run("replay", "--config", str(cfg), str(EXAMPLE))
    assert r.exit_code != 0
    assert "unknown key 'monitors.concept_drift.detectr'" in r.output


def test_missing_input_file_is_a_usage_error(tmp_path):
    r = run("replay", str(tmp_path / "nope.jsonl"))
    assert r.exit_code == 2
    assert "does not exist" in r.output

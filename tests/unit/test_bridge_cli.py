"""The bridge commands' set-up: secrets from the environment, never echoed; bad input named."""

from click.testing import CliRunner

from driftline.cli import main


def run(args, env):
    return CliRunner().invoke(main, args, env=env, catch_exceptions=False)


def test_both_bridges_are_registered():
    result = run(["bridge", "--help"], {})
    assert result.exit_code == 0
    assert "pagerduty" in result.output and "webhook" in result.output


def test_pagerduty_without_a_routing_key_says_which_variable():
    result = run(["bridge", "pagerduty"], {"PAGERDUTY_ROUTING_KEY": None})
    assert result.exit_code == 2
    assert "environment variable PAGERDUTY_ROUTING_KEY is not set" in result.output


def test_an_empty_secret_is_an_error_not_an_unsigned_webhook():
    result = run(
        ["bridge", "webhook", "--url", "https://h/x", "--secret-env", "MY_HOOK_SECRET"],
        {"MY_HOOK_SECRET": "  "},
    )
    assert result.exit_code == 2
    assert "environment variable MY_HOOK_SECRET is set but empty" in result.output


def test_a_bad_url_is_refused_without_printing_its_path():
    result = run(["bridge", "webhook", "--url", "ftp://hooks.example/T0/B0/SECRET"], {})
    assert result.exit_code == 2
    assert "ftp://hooks.example/…" in result.output and "SECRET" not in result.output


def test_the_webhook_secret_variable_is_not_read_as_a_setting(tmp_path):
    # DRIFTLINE_WEBHOOK_SECRET has the settings prefix; the configuration must not see it
    # (it would be an unknown key, and the error would name it). Nothing listens on
    # port 1, so the command stops right after loading the configuration.
    config = tmp_path / "driftline.toml"
    config.write_text("[topics]\nalerts = 'my-alerts'\n")
    result = run(
        ["bridge", "webhook", "--url", "http://127.0.0.1:9/x", "--config", str(config)],
        {"DRIFTLINE_WEBHOOK_SECRET": "s3cret-value", "DRIFTLINE_BROKER": "kafka://127.0.0.1:1"},
    )
    assert result.exit_code == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in result.output
    assert "webhook_secret" not in result.output and "s3cret-value" not in result.output


def test_a_config_error_is_reported_without_the_secret(tmp_path):
    config = tmp_path / "driftline.toml"
    config.write_text("[topics]\nalertz = 'x'\n")
    result = run(
        ["bridge", "pagerduty", "--config", str(config)],
        {"PAGERDUTY_ROUTING_KEY": "r0ut1ngk3y-value"},
    )
    assert result.exit_code == 1
    assert "unknown key 'topics.alertz'" in result.output
    assert "r0ut1ngk3y-value" not in result.output

import pytest

from driftline.core.config import ConfigError, Threshold, load_config, parse_duration


def test_defaults_need_no_file():
    cfg = load_config(env={})
    assert cfg.label_ttl == 86400.0
    assert cfg.model("x").monitors.concept_drift.detector == "ADWIN"
    assert cfg.topics.predictions == "predictions"


def test_per_model_override_changes_only_that_model():
    text = """
[monitors.prediction_drift]
window = 1000
[models.fraud]
task = "binary"
[models.fraud.monitors.concept_drift]
detector = "DDM"
params = { warm_start = 50 }
"""
    cfg = load_config(text=text, env={})
    fraud, other = cfg.model("fraud"), cfg.model("pricing")
    assert fraud.monitors.concept_drift.detector == "DDM"
    assert fraud.monitors.concept_drift.params == {"warm_start": 50}
    assert fraud.monitors.prediction_drift.window == 1000  # inherited default override
    assert other.monitors.concept_drift.detector == "ADWIN"
    assert fraud.task == "binary" and other.task is None


def test_env_overrides_file():
    cfg = load_config(
        text="label_ttl = '1h'",
        env={
            "DRIFTLINE_LABEL_TTL": "2h",
            "DRIFTLINE_MONITORS__DATA_DRIFT__BINS": "20",
            "HOME": "/",
        },
    )
    assert cfg.label_ttl == 7200.0
    assert cfg.model("m").monitors.data_drift.bins == 20


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("labl_ttl = 5", {}, "unknown key 'labl_ttl'"),
        (
            "[models.m.monitors.concept_drift]\nthreshold = 1",
            {},
            "models.m.monitors.concept_drift.threshold",
        ),
        ("[monitors.concept_drift]\ndetector = 'XYZ'", {}, "must be one of ADWIN"),
        ("[monitors.data_drift]\nseverity = 'page-me'", {}, "severity must be one of critical"),
        ("label_ttl = 'soon'", {}, "expected a duration"),
        ("", {"DRIFTLINE_NOPE": "1"}, "unknown key 'nope'"),
        ("[monitors.performance]\nthresholds = [{metric='accuracy'}]", {}, "exactly one of"),
        ("task = 'ranking'", {}, "task: must be one of"),
        ("[limits]\nmax_features = 'many'", {}, "expected an integer"),
        ("not toml [", {}, "not valid TOML"),
    ],
)
def test_bad_config_is_an_error_naming_the_key(text, env, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_config(text=text, env=env)


def test_thresholds_parse_into_objects():
    cfg = load_config(
        text="[monitors.performance]\n"
        "thresholds = [{metric='accuracy', below=0.8, for_events=100}]",
        env={},
    )
    (th,) = cfg.model("m").monitors.performance.thresholds
    assert th == Threshold(metric="accuracy", below=0.8, for_events=100)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.toml", env={})


def test_durations():
    assert parse_duration("250ms") == 0.25
    with pytest.raises(ConfigError):
        parse_duration(-1)
    with pytest.raises(ConfigError):
        parse_duration(True)

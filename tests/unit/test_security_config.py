"""The ``[security]`` settings and :class:`Secret`: from file and environment, never shown."""

from __future__ import annotations

import copy
import dataclasses
import json
import pickle

import pytest

from driftline.core.config import ConfigError, SecurityConfig, load_config
from driftline.core.secret import Secret, redact

PASSWORD = "s3cr3t-Pa55word"

SASL_TOML = f"""
[security]
protocol = "SASL_SSL"
sasl_mechanism = "SCRAM-SHA-512"
username = "driftline"
password = "{PASSWORD}"
ssl_cafile = "ca.pem"
"""


# -- Secret -----------------------------------------------------------------


def test_secret_never_shows_its_value():
    s = Secret(PASSWORD)
    shown = [repr(s), str(s), f"{s}", f"{s!r}", f"{s:>10}", "%s" % (s,), repr([s])]  # noqa: UP031
    assert all(PASSWORD not in text for text in shown), shown
    assert str(s) == "***" and repr(s) == "Secret('***')"
    assert s.reveal() == PASSWORD


def test_secret_refuses_the_ways_a_str_would_leak():
    s = Secret(PASSWORD)
    with pytest.raises(TypeError):
        "".join([s])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        "password=" + s  # type: ignore[operator]
    with pytest.raises(TypeError):
        json.dumps({"password": s})
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(s)


def test_secret_compares_and_copies_by_value():
    s = Secret(PASSWORD)
    assert s == Secret(PASSWORD) and s != Secret("other") and s != PASSWORD
    assert hash(s) == hash(Secret(PASSWORD))
    assert copy.copy(s) is s and copy.deepcopy(s) is s
    assert bool(s) and not Secret("") and len(s) == len(PASSWORD)


def test_secret_of_the_wrong_type_does_not_quote_it():
    with pytest.raises(TypeError) as err:
        Secret(123456)  # type: ignore[arg-type]
    assert "123456" not in str(err.value)


def test_redact_replaces_every_secret():
    text = f"login {PASSWORD} failed; key abc"
    assert redact(text, [Secret(PASSWORD), "abc", None, ""]) == "login *** failed; key ***"


# -- loading ------------------------------------------------------------------


def test_default_is_plaintext_without_credentials():
    sec = load_config(env={}).security
    assert sec == SecurityConfig()
    assert (sec.protocol, sec.username, sec.password) == ("PLAINTEXT", None, None)
    assert not sec.uses_sasl and not sec.uses_tls


def test_security_from_the_file():
    sec = load_config(text=SASL_TOML, env={}).security
    assert sec.protocol == "SASL_SSL" and sec.uses_sasl and sec.uses_tls
    assert sec.username == "driftline" and sec.ssl_cafile == "ca.pem"
    assert isinstance(sec.password, Secret) and sec.password.reveal() == PASSWORD
    assert sec.ssl_check_hostname is True


def test_security_from_the_environment_overrides_the_file():
    env = {
        "DRIFTLINE_SECURITY__PASSWORD": "from-env",
        "DRIFTLINE_SECURITY__SASL_MECHANISM": "SCRAM-SHA-256",
        "DRIFTLINE_SECURITY__SSL_CHECK_HOSTNAME": "false",
    }
    sec = load_config(text=SASL_TOML, env=env).security
    assert sec.password is not None and sec.password.reveal() == "from-env"
    assert sec.sasl_mechanism == "SCRAM-SHA-256" and sec.ssl_check_hostname is False


def test_environment_alone_is_enough():
    env = {
        "DRIFTLINE_SECURITY__PROTOCOL": "SASL_PLAINTEXT",
        "DRIFTLINE_SECURITY__USERNAME": "driftline",
        "DRIFTLINE_SECURITY__PASSWORD": PASSWORD,
    }
    sec = load_config(env=env).security
    assert sec.protocol == "SASL_PLAINTEXT" and sec.password == Secret(PASSWORD)


def test_the_config_never_shows_the_password():
    env = {
        "DRIFTLINE_SECURITY__SSL_CERTFILE": "client.pem",
        "DRIFTLINE_SECURITY__SSL_KEY_PASSWORD": "k3y-pass",
    }
    cfg = load_config(text=SASL_TOML, env=env)
    cfg = dataclasses.replace(cfg, broker="kafka://b:9093")  # still a Secret after a copy
    for text in (repr(cfg), str(cfg), repr(cfg.security), f"{cfg.security}"):
        assert PASSWORD not in text and "k3y-pass" not in text
        assert "password=Secret('***')" in text


# -- refusals that name the key, never the value ----------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ('[security]\nprotocol = "SASL"', "security.protocol: must be one of PLAINTEXT, SSL"),
        (
            '[security]\nprotocol = "SASL_SSL"\nsasl_mechanism = "MD5"\nusername = "u"\n'
            'password = "p"',
            "security.sasl_mechanism: must be one of SCRAM-SHA-512",
        ),
        (
            '[security]\nprotocol = "SASL_SSL"\nusername = "u"',
            "security.password: required when security.protocol is SASL_SSL"
            " (set it in the file or with DRIFTLINE_SECURITY__PASSWORD)",
        ),
        (
            '[security]\nprotocol = "SASL_PLAINTEXT"\npassword = "p"',
            "security.username: required",
        ),
        (
            '[security]\nssl_cafile = "ca.pem"\nprotocol = "SASL_PLAINTEXT"\nusername = "u"\n'
            'password = "p"',
            "security.ssl_cafile: set, but security.protocol is SASL_PLAINTEXT, which does not"
            " use TLS",
        ),
        (
            '[security]\nprotocol = "SSL"\nssl_keyfile = "client.key"',
            "security.ssl_keyfile: needs security.ssl_certfile",
        ),
    ],
)
def test_inconsistent_settings_are_refused(text: str, message: str):
    with pytest.raises(ConfigError) as err:
        load_config(text=text, env={})
    assert message in str(err.value)


def test_credentials_without_a_sasl_protocol_are_refused_without_quoting_them():
    # Would otherwise connect unauthenticated while the operator believes otherwise.
    env = {"DRIFTLINE_SECURITY__USERNAME": "u", "DRIFTLINE_SECURITY__PASSWORD": PASSWORD}
    with pytest.raises(ConfigError) as err:
        load_config(env=env)
    assert "security.username: set, but security.protocol is PLAINTEXT" in str(err.value)
    assert PASSWORD not in str(err.value)


@pytest.mark.parametrize(
    "text",
    [
        "[security]\npassword = 739164821",  # not a string
        "[security]\npasword = 'hunter2-739164821'",  # a typo in the key
        "[security]\npassword = hunter2-739164821",  # not valid TOML
    ],
)
def test_errors_about_the_password_never_quote_it(text: str):
    with pytest.raises(ConfigError) as err:
        load_config(text=text, env={})
    assert "739164821" not in str(err.value), str(err.value)

"""From ``[security]`` to Kafka clients: aiokafka kwargs, Faust credentials, failures, binds.

No broker here: these check what every client is built with and what a
failed connection says. ``tests/integration/test_security.py`` runs the
same code against a real SCRAM/TLS broker.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError
from click.testing import CliRunner
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import AuthProtocol, SASLMechanism

from driftline.core.config import Config, SecurityConfig, load_config
from driftline.core.secret import Secret
from driftline.streaming.kafka import (
    KafkaSetupError,
    aiokafka_auth,
    connect_failure,
    faust_credentials,
    ssl_context,
    start_client,
)

PASSWORD = "pa55-w0rd-never-shown"


def sasl(protocol: str = "SASL_PLAINTEXT", **over: Any) -> SecurityConfig:
    return SecurityConfig(
        protocol=protocol, username="driftline", password=Secret(PASSWORD), **over
    )


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed certificate and its key, encrypted with the password ``right``."""
    d = tmp_path_factory.mktemp("tls")
    new_cert = ["req", "-x509", "-newkey", "rsa:2048", "-days", "2", "-subj", "/CN=test"]
    files = ["-keyout", str(d / "key.pem"), "-out", str(d / "cert.pem")]
    subprocess.run(
        ["openssl", *new_cert, *files, "-passout", "pass:right"], check=True, capture_output=True
    )
    return d


# -- aiokafka -------------------------------------------------------------------


def test_plaintext_adds_nothing():
    assert aiokafka_auth(SecurityConfig()) == {}
    assert ssl_context(SecurityConfig()) is None
    assert faust_credentials(SecurityConfig()) is None


def test_sasl_plaintext_kwargs():
    assert aiokafka_auth(sasl()) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "driftline",
        "sasl_plain_password": PASSWORD,  # aiokafka needs the str itself
    }


def test_sasl_ssl_kwargs_verify_the_broker():
    kwargs = aiokafka_auth(sasl("SASL_SSL", sasl_mechanism="SCRAM-SHA-256"))
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    context = kwargs["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname


def test_hostname_check_can_be_turned_off():
    context = ssl_context(SecurityConfig(protocol="SSL", ssl_check_hostname=False))
    assert context is not None and not context.check_hostname
    assert context.verify_mode == ssl.CERT_REQUIRED  # the chain is still verified


def test_client_certificate_with_its_key_password(tls_files: Path):
    sec = SecurityConfig(
        protocol="SSL",
        ssl_cafile=str(tls_files / "cert.pem"),
        ssl_certfile=str(tls_files / "cert.pem"),
        ssl_keyfile=str(tls_files / "key.pem"),
        ssl_key_password=Secret("right"),
    )
    assert aiokafka_auth(sec)["security_protocol"] == "SSL"


def test_a_wrong_key_password_fails_without_prompting_or_quoting(tls_files: Path):
    sec = SecurityConfig(
        protocol="SSL",
        ssl_certfile=str(tls_files / "cert.pem"),
        ssl_keyfile=str(tls_files / "key.pem"),
        ssl_key_password=Secret("wrong-9f8e7d"),
    )
    with pytest.raises(KafkaSetupError) as err:
        aiokafka_auth(sec)
    assert "cannot load the TLS files" in str(err.value)
    assert "wrong-9f8e7d" not in str(err.value)
    # No password at all must fail too, not wait for one on the terminal.
    with pytest.raises(KafkaSetupError):
        ssl_context(sec.__class__(**{**sec.__dict__, "ssl_key_password": None}))


def test_a_missing_tls_file_is_named(tmp_path: Path):
    missing = tmp_path / "nope.pem"
    with pytest.raises(KafkaSetupError) as err:
        aiokafka_auth(SecurityConfig(protocol="SSL", ssl_cafile=str(missing)))
    assert f"security.ssl_cafile: no such file '{missing}'" in str(err.value)


# -- Faust ---------------------------------------------------------------------


def test_faust_sasl_credentials_carry_the_mechanism():
    creds = faust_credentials(sasl())
    assert isinstance(creds, faust.SASLCredentials)
    assert creds.protocol is AuthProtocol.SASL_PLAINTEXT
    assert creds.mechanism is SASLMechanism.SCRAM_SHA_512
    assert PASSWORD not in repr(creds)


def test_faust_credentials_match_the_aiokafka_kwargs():
    """Faust's consumer and producer get exactly what driftline's own clients get."""
    for sec in (
        sasl(),
        sasl("SASL_SSL", sasl_mechanism="SCRAM-SHA-256"),
        sasl(sasl_mechanism="PLAIN"),
    ):
        from_faust = credentials_to_aiokafka_auth(faust_credentials(sec))
        ours = aiokafka_auth(sec)
        assert isinstance(from_faust.pop("ssl_context"), ssl.SSLContext | None)
        ours.pop("ssl_context", None)
        assert from_faust == ours


def test_faust_ssl_credentials():
    creds = faust_credentials(SecurityConfig(protocol="SSL"))
    assert isinstance(creds, faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(creds)["security_protocol"] == "SSL"


def test_the_worker_app_and_its_changelog_writer_get_the_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from driftline.streaming import app as app_module

    captured: dict[str, Any] = {}
    real = app_module.ChangelogWriter

    def recording_writer(servers: str, topic: str, **options: Any) -> Any:
        captured.update(options)
        return real(servers, topic, **options)

    monkeypatch.setattr(app_module, "ChangelogWriter", recording_writer)
    config = load_config(
        env={
            "DRIFTLINE_SECURITY__PROTOCOL": "SASL_PLAINTEXT",
            "DRIFTLINE_SECURITY__USERNAME": "driftline",
            "DRIFTLINE_SECURITY__PASSWORD": PASSWORD,
        }
    )
    settings = app_module.WorkerSettings(store="memory://", data_dir=str(tmp_path))
    app, _state = app_module.make_app(config, settings)
    creds = app.conf.broker_credentials
    assert isinstance(creds, faust.SASLCredentials)
    assert (creds.username, creds.password) == ("driftline", PASSWORD)
    assert creds.mechanism is SASLMechanism.SCRAM_SHA_512
    assert captured["security_protocol"] == "SASL_PLAINTEXT"
    assert captured["sasl_plain_password"] == PASSWORD


# -- failures ------------------------------------------------------------------


async def test_nothing_listening_reads_as_unreachable():
    sec = sasl()
    admin = AIOKafkaAdminClient(bootstrap_servers="127.0.0.1:1", **aiokafka_auth(sec))
    with pytest.raises(KafkaSetupError) as err:
        await start_client(admin, sec, "127.0.0.1:1", 5)
    assert str(err.value).startswith("cannot reach Kafka at 127.0.0.1:1 (")
    assert PASSWORD not in str(err.value)


async def test_a_listener_that_hangs_up_gets_a_protocol_hint():
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4)
        writer.close()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        err = await connect_failure(SecurityConfig(), f"127.0.0.1:{port}", KafkaConnectionError())
    finally:
        server.close()
        await server.wait_closed()
    assert f"Kafka at 127.0.0.1:{port} accepted the connection, then hung up" in str(err)
    assert "set security.protocol (SASL_SSL, SASL_PLAINTEXT or SSL)" in str(err)


async def test_a_library_error_quoting_the_password_is_redacted():
    err = await connect_failure(sasl(), "127.0.0.1:1", KafkaConnectionError(f"bad {PASSWORD}"))
    assert PASSWORD not in str(err) and "bad ***" in str(err)


# -- HTTP binds to loopback unless told otherwise ------------------------------------


def test_worker_web_server_defaults_to_loopback():
    from driftline.cli import worker
    from driftline.streaming.app import WorkerSettings

    assert WorkerSettings().web_host == "127.0.0.1"
    option = next(p for p in worker.params if p.name == "web_host")
    assert option.default == "127.0.0.1"
    result = CliRunner().invoke(worker, ["--help"])
    assert "[default: 127.0.0.1]" in result.output


def test_default_config_is_plaintext_to_localhost():
    config = Config()
    assert config.broker == "kafka://127.0.0.1:9092" and aiokafka_auth(config.security) == {}

"""Kafka SASL/TLS settings reach every client the same way; secrets stay out of reprs and errors;
the tool registry cannot be extended by what an event carries."""

from __future__ import annotations

import subprocess
import types

import certifi
import pytest
from faststream.kafka import KafkaBroker
from faststream.kafka.security import parse_security

from distillery.contracts.events import ToolCall
from distillery.contracts.settings import ConfigError, ServiceSettings, load_settings
from distillery.domain.tools import REGISTRY, call_tool
from distillery.runtime.kafka import client_kwargs
from distillery.runtime.service import broker_security

SECRET = "s3cr3t-Passw0rd-never-logged"


def settings(**fields) -> ServiceSettings:
    return load_settings(ServiceSettings, kafka_bootstrap_servers="kafka:9093", **fields)


@pytest.fixture(scope="module")
def client_cert(tmp_path_factory):
    """A self-signed client certificate and key (mutual TLS), made with openssl."""
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=distillery",
                    "-keyout", str(folder / "client.key"), "-out", str(folder / "client.pem")],
                   check=True, capture_output=True, timeout=60)
    return folder / "client.pem", folder / "client.key"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
@pytest.mark.parametrize("protocol", ["SASL_PLAINTEXT", "SASL_SSL"])
def test_sasl_reaches_the_aiokafka_clients_and_the_faststream_broker_alike(mechanism: str, protocol: str) -> None:
    s = settings(kafka_security_protocol=protocol, kafka_sasl_mechanism=mechanism, kafka_sasl_username="svc",
                 kafka_sasl_password=SECRET, kafka_ssl_cafile=certifi.where())
    plain = client_kwargs(s)
    assert (plain["security_protocol"], plain["sasl_mechanism"], plain["sasl_plain_username"],
            plain["sasl_plain_password"]) == (protocol, mechanism, "svc", SECRET)
    assert ("ssl_context" in plain) == (protocol == "SASL_SSL")
    broker = parse_security(broker_security(s))  # what FastStream hands aiokafka for the consumers
    for key in ("security_protocol", "sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
        assert broker[key] == plain[key], key
    KafkaBroker(s.kafka_bootstrap_servers, security=broker_security(s))  # make_bus's call; it once failed here


def test_tls_with_a_ca_and_a_client_certificate(client_cert) -> None:
    cert, key = client_cert
    s = settings(kafka_security_protocol="SSL", kafka_ssl_cafile=certifi.where(), kafka_ssl_certfile=cert,
                 kafka_ssl_keyfile=key)
    context = client_kwargs(s)["ssl_context"]
    assert context.verify_mode.name == "CERT_REQUIRED" and context.get_ca_certs()
    broker = parse_security(broker_security(s))
    assert broker["security_protocol"] == "SSL" and broker["ssl_context"] is not None
    assert broker_security(settings()) is None  # PLAINTEXT: nothing to pass


def test_the_password_can_come_from_a_mounted_secret_file(tmp_path) -> None:
    (tmp_path / "password").write_text(SECRET + "\n")
    s = settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN", kafka_sasl_username="svc",
                 kafka_sasl_password_file=tmp_path / "password")
    assert client_kwargs(s)["sasl_plain_password"] == SECRET


def test_secrets_never_show_in_reprs_or_errors(tmp_path) -> None:
    s = settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="PLAIN", kafka_sasl_username="svc",
                 kafka_sasl_password=SECRET)
    assert SECRET not in repr(s) and SECRET not in str(s) and SECRET not in s.model_dump_json()
    with pytest.raises(ConfigError) as err:  # an invalid setting next to the secret: the error names the field only
        settings(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism="GSSAPI", kafka_sasl_username="svc",
                 kafka_sasl_password=SECRET)
    assert "kafka_sasl_mechanism" in str(err.value) and SECRET not in str(err.value)


@pytest.mark.parametrize("fields, message", [
    ({"kafka_security_protocol": "SASL_SSL"}, "kafka_sasl_mechanism is required with SASL_SSL"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_mechanism": "PLAIN"}, "kafka_sasl_username and"),
    ({"kafka_ssl_cafile": "/nowhere/ca.pem"}, "kafka_ssl_cafile: file not found"),
    ({"kafka_sasl_password_file": "/nowhere/pw"}, "kafka_sasl_password_file: cannot read"),
])
def test_incomplete_security_settings_stop_the_service_with_the_field_named(fields, message) -> None:
    with pytest.raises(ConfigError, match=message):
        settings(**fields)


def test_the_tool_registry_is_read_only_and_payload_tools_never_run() -> None:
    assert isinstance(REGISTRY, types.MappingProxyType)
    with pytest.raises(TypeError):
        REGISTRY["shell"] = REGISTRY["calculator"]  # type: ignore[index]
    # a task may *declare* any tool in its payload; only the unit's registered tools ever run
    observation, error = call_tool(ToolCall(name="shell", arguments={"cmd": "id"}), ["shell", "calculator"], 1.0)
    assert observation == "" and error == "unknown_function:shell"

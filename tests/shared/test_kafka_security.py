"""The Kafka security settings reach every client: shared/kafka.py builds the aiokafka options once."""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.client import AIOKafkaClient
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pydantic import ValidationError

from shared.kafka import client_options
from shared.settings import Settings


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def _ca_file(path: Path, common_name: str) -> Path:
    """A self-signed CA certificate, as an operator's MKR_KAFKA_SSL_CAFILE would hold."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def test_plaintext_default_adds_nothing_but_the_protocol() -> None:
    assert client_options(_settings()) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
def test_sasl_plaintext_passes_mechanism_user_and_password(mechanism: str) -> None:
    settings = _settings(
        kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism=mechanism,
        kafka_sasl_username="mkr-intake", kafka_sasl_password="s3cret",
    )  # fmt: skip
    assert client_options(settings) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "mkr-intake",
        "sasl_plain_password": "s3cret",
    }
    assert "s3cret" not in repr(settings), "the password must not show in a repr (or a log of the settings)"


def test_sasl_ssl_verifies_the_broker_with_the_ca_file(tmp_path: Path) -> None:
    cafile = _ca_file(tmp_path / "ca.pem", "MKR test Kafka CA")
    settings = _settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_username="mkr-referral", kafka_sasl_password="pw",
        kafka_ssl_cafile=cafile,
    )  # fmt: skip
    options = client_options(settings)
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"  # the default mechanism
    context = options["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is True
    subjects = [dict(item[0] for item in cert["subject"]) for cert in context.get_ca_certs()]
    assert {"commonName": "MKR test Kafka CA"} in subjects, "the CA of MKR_KAFKA_SSL_CAFILE is trusted"


def test_ssl_without_sasl_has_a_context_and_no_credentials(tmp_path: Path) -> None:
    options = client_options(_settings(kafka_security_protocol="SSL", kafka_ssl_cafile=_ca_file(tmp_path / "c", "x")))
    assert options.keys() == {"security_protocol", "ssl_context"}


@pytest.mark.parametrize(
    "values",
    [
        {"kafka_security_protocol": "SASL_PLAINTEXT"},  # no user, no password
        {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_username": "u"},  # no password
        {"kafka_security_protocol": "TLS"},  # not a protocol
        {
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_mechanism": "GSSAPI",  # not one MKR supports
            "kafka_sasl_username": "u",
            "kafka_sasl_password": "p",
        },
        {"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/nonexistent/ca.pem"},
    ],
)
def test_incomplete_or_unknown_security_settings_refuse_to_start(values: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _settings(**values)


async def test_every_kind_of_client_accepts_the_options(tmp_path: Path) -> None:
    """The producer, the consumer, the admin client and the probe's bare client take the same options."""
    settings = _settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_username="mkr-shelter", kafka_sasl_password="pw",
        kafka_ssl_cafile=_ca_file(tmp_path / "ca.pem", "ca"),
    )  # fmt: skip
    options = client_options(settings)
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", **options)
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1", **options)
    admin = AIOKafkaAdminClient(bootstrap_servers="127.0.0.1:1", **options)
    client = AIOKafkaClient(bootstrap_servers="127.0.0.1:1", **options)
    for built in (producer.client, consumer._client, admin._client, client):
        assert built._security_protocol == "SASL_SSL"
        assert built._sasl_mechanism == "SCRAM-SHA-512"
        assert built._sasl_plain_username == "mkr-shelter"
        assert built._ssl_context is options["ssl_context"]
    await client.close()
    await admin.close()
    await producer.stop()
    await consumer.stop()


def test_every_kafka_client_in_the_code_is_built_with_client_options() -> None:
    """No producer, consumer or admin client of the services bypasses the security settings."""
    import ast

    root = Path(__file__).resolve().parents[2]
    kinds = {"AIOKafkaProducer", "AIOKafkaConsumer", "AIOKafkaAdminClient", "AIOKafkaClient"}
    found: list[str] = []
    sources = [path for folder in ("shared", "services", "deploy") for path in (root / folder).rglob("*.py")]
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name not in kinds:
                continue
            where = f"{path.relative_to(root)}:{node.lineno}"
            found.append(where)
            spread = [
                kw.value
                for kw in node.keywords
                if kw.arg is None
                and isinstance(kw.value, ast.Call)
                and getattr(kw.value.func, "id", None) == "client_options"
            ]
            assert spread, f"{where}: {name}(...) without **client_options(settings)"
    assert len(found) >= 5, f"the producer, consumers, admin client and probe should all be found: {found}"

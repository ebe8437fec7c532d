"""How every Kafka client of MKR connects: the security settings, in one place.

Every aiokafka producer, consumer and admin client (and the bare client of the readiness probe) is
built with `**client_options(settings)`, so a broker that requires SASL/SCRAM or TLS is reached the
same way by all of them. PLAINTEXT (the default) adds nothing: the embedded Tansu broker and the
tests keep working unchanged.
"""

from __future__ import annotations

import ssl
from typing import Any

from shared.settings import Settings

TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})


def ssl_context(settings: Settings) -> ssl.SSLContext:
    """A client TLS context that verifies the broker's certificate and host name.

    `MKR_KAFKA_SSL_CAFILE` names the CA bundle to trust; without it the system's CAs are used.
    """
    from aiokafka.helpers import create_ssl_context

    context = create_ssl_context(cafile=settings.kafka_ssl_cafile)
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_options(settings: Settings) -> dict[str, Any]:
    """The keyword arguments that every aiokafka client gets, besides `bootstrap_servers`."""
    protocol = settings.kafka_security_protocol
    options: dict[str, Any] = {"security_protocol": protocol}
    if protocol in TLS_PROTOCOLS:
        options["ssl_context"] = ssl_context(settings)
    if protocol in SASL_PROTOCOLS:
        options["sasl_mechanism"] = settings.kafka_sasl_mechanism
        options["sasl_plain_username"] = settings.kafka_sasl_username
        password = settings.kafka_sasl_password
        options["sasl_plain_password"] = password.get_secret_value() if password is not None else None
    return options


__all__ = ["client_options", "ssl_context"]

"""How every Kafka client of MKR connects: the security settings, in one place.

Every aiokafka producer, consumer and admin client (and the bare client of the readiness probe) is
built with `**client_options(settings)`, so a broker that requires SASL/SCRAM or TLS is reached the
same way by all of them. PLAINTEXT (the default) adds nothing: the embedded Tansu broker and the
tests keep working unchanged. Also here: `leave_group`, the LeaveGroup that aiokafka leaves out for a
group's generation 0 (Tansu's first), used when a consumer is stopped or recreated.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from shared.settings import Settings

log = logging.getLogger("mkr.kafka")

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


def group_membership(consumer: Any) -> tuple[str, int] | None:
    """The (member id, generation) a started group consumer holds now; None when it holds none."""
    coordinator = getattr(consumer, "_coordinator", None)
    member_id = getattr(coordinator, "member_id", "")
    generation = getattr(coordinator, "generation", -1)
    return (member_id, generation) if member_id and generation >= 0 else None


async def leave_group(settings: Settings, group_id: str, member_id: str, timeout: float = 5.0) -> bool:
    """Take `member_id` out of `group_id` at once (LeaveGroup), from a bare client of its own.

    aiokafka's `stop()` sends LeaveGroup only from generation 1 on (Apache Kafka's first generation);
    Tansu numbers a group's generations from 0, so a consumer stopped in its group's first generation
    stayed a member until its session timed out, and a replacement joining meanwhile was made a
    follower of that dead leader: its SyncGroup waited out the session (10 s) before a second join.
    Called after `stop()` for such a member; a failure only leaves the session timeout to do it.
    """
    from aiokafka.client import AIOKafkaClient, ConnectionGroup, CoordinationType
    from aiokafka.errors import for_code
    from aiokafka.protocol.group import LeaveGroupRequest

    client = AIOKafkaClient(bootstrap_servers=settings.kafka_bootstrap,
                            request_timeout_ms=int(timeout * 1000), **client_options(settings))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout=timeout)
        node = await asyncio.wait_for(client.coordinator_lookup(CoordinationType.GROUP, group_id), timeout)
        response = await asyncio.wait_for(
            client.send(node, LeaveGroupRequest(group_id, member_id), group=ConnectionGroup.COORDINATION), timeout
        )
        error = for_code(response.error_code)
        ok = error.errno == 0
        if not ok:
            log.info("LeaveGroup refused", extra={"group": group_id, "error_class": error.__name__})
        return ok
    except Exception as exc:
        log.info("LeaveGroup not sent", extra={"group": group_id, "error_class": type(exc).__name__})
        return False
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(client.close(), timeout=timeout)


__all__ = ["client_options", "group_membership", "leave_group", "ssl_context"]

"""Nothing stalls silently: /readyz names a consumer without partitions and a broker without the
idempotent producer; the watchdog recreates a consumer stuck after the broker died."""

from __future__ import annotations

import logging
import signal
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from shared import db
from shared.embedded import free_port, start_broker, stop_process
from shared.settings import Settings
from tests.support import auth, contract_report, new_municipality, running_stack, wait_for


def _private(settings: Settings, **overrides: object) -> Settings:
    """Databases and topics of its own: the session's services must not share this test's groups."""
    run = uuid.uuid4().hex[:6]
    return settings.model_copy(
        update={"kafka_topic_prefix": f"w{run}.", "database_prefix": f"{settings.database_prefix}w{run}_",
                **overrides}
    )


@pytest.fixture
async def private_settings(settings: Settings) -> AsyncIterator[Settings]:
    private = _private(settings, ready_stall_seconds=2.0)
    yield private
    for service in ("intake", "referral"):
        await db.drop_database(private, service)
    await db.drop_database_at(db.keystore_url(private))  # intake's key store


async def _readyz(client: httpx.AsyncClient) -> httpx.Response:
    return await client.get("/readyz")


async def test_readyz_is_503_naming_a_consumer_without_partitions_and_200_once_it_has_them_again(
    private_settings: Settings,
) -> None:
    async with running_stack(private_settings, ("referral",)) as stack:
        client = stack.referral

        async def ready() -> bool:
            return (await _readyz(client)).status_code == 200

        consumer = stack.apps["referral"].state.runtime.consumers[0]

        async def assigned() -> bool:
            return consumer.unassigned_for() == 0

        await wait_for(assigned, timeout=45, what="the referral consumer to hold its partitions")
        await wait_for(ready, timeout=15, what="referral ready")
        await consumer.stop()  # holds no partition from now on

        async def unready() -> httpx.Response | None:
            response = await _readyz(client)
            return response if response.status_code == 503 else None

        response = await wait_for(unready, timeout=15, what="/readyz to notice the consumer without partitions")
        body = response.json()
        assert body["status"] == "unready"
        assert body["checks"] == {"database": True, "broker": True, "consumers": False, "relay": True}
        [problem] = body["problems"]
        assert problem["component"] == "consumer"
        assert problem["consumer"] == "referral.routing"
        assert problem["problem"] == "no_assignment"
        assert problem["seconds"] >= 2

        await consumer.start()
        await wait_for(ready, timeout=45, what="/readyz to recover once the consumer holds partitions again")
        body = (await _readyz(client)).json()
        assert body["checks"]["consumers"] is True and "problems" not in body


async def test_a_broker_without_the_idempotent_producer_is_named_in_the_log_and_in_readyz(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    broker = start_broker(port, tmp_path / "tansu.log")  # Tansu: no InitProducerId
    private = _private(settings, kafka_bootstrap=f"127.0.0.1:{port}", kafka_enable_idempotence=True)
    try:
        with caplog.at_level(logging.ERROR, logger="mkr.events"):
            async with running_stack(private, ("intake",)) as stack:

                async def unready() -> httpx.Response | None:
                    response = await _readyz(stack.intake)
                    return response if response.status_code == 503 else None

                response = await wait_for(unready, timeout=30, what="/readyz to name the idempotence mismatch")
                body = response.json()
                assert body["checks"]["relay"] is False
                assert body["checks"]["broker"] is True
                [problem] = [p for p in body["problems"] if p["component"] == "relay"]
                assert problem["problem"] == "idempotence_unsupported"
                assert "MKR_KAFKA_ENABLE_IDEMPOTENCE" in problem["detail"]
                # Reports are still accepted (the outbox keeps them); they are not published.
                municipality = new_municipality()
                created = await stack.intake.post(
                    "/v1/cases", json=contract_report(municipality), headers=auth(private, "coordinator", municipality)
                )
                assert created.status_code == 201, created.text
        named = [r for r in caplog.records if "MKR_KAFKA_ENABLE_IDEMPOTENCE" in r.getMessage()]
        assert named, "no log line names MKR_KAFKA_ENABLE_IDEMPOTENCE"
        assert all(r.levelno == logging.ERROR for r in named)
    finally:
        stop_process(broker)
        await db.drop_database(private, "intake")
        await db.drop_database_at(db.keystore_url(private))  # intake's key store


async def test_consumers_route_again_after_the_broker_is_sigkilled_and_returns_empty(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    broker = start_broker(port, tmp_path / "tansu.log")
    private = _private(settings, kafka_bootstrap=f"127.0.0.1:{port}", kafka_consumer_stall_seconds=3.0,
                       ready_stall_seconds=5.0)
    municipality = new_municipality()
    headers = auth(private, "coordinator", municipality)
    try:
        async with running_stack(private, ("intake", "referral")) as stack:

            async def ready() -> bool:
                codes = [(await _readyz(c)).status_code for c in (stack.intake, stack.referral)]
                return codes == [200, 200]

            await wait_for(ready, timeout=45, what="intake and referral ready")
            for kind in ("social_services", "police"):
                member = await stack.referral.post(
                    "/v1/members", headers=headers,
                    json={"name": f"{kind} office", "kind": kind, "municipality": municipality,
                          "services": [kind]},
                )
                assert member.status_code == 201, member.text
            broker.send_signal(signal.SIGKILL)
            broker.wait(10)
            case = await stack.intake.post("/v1/cases", json=contract_report(municipality), headers=headers)
            assert case.status_code == 201, case.text

            async def unready() -> bool:
                return (await _readyz(stack.referral)).status_code == 503

            await wait_for(unready, timeout=30, interval=0.5, what="/readyz 503 while the broker is dead")

            broker = start_broker(port, tmp_path / "tansu.log")  # back, empty

            async def routed() -> bool:
                found = await stack.referral.get("/v1/referrals", params={"case_id": case.json()["id"]},
                                                 headers=headers)
                return found.status_code == 200 and len(found.json()["items"]) >= 1

            await wait_for(routed, timeout=30, interval=0.5, what="the case routed within 30 s of the return")
            await wait_for(ready, timeout=30, what="readiness back")
    finally:
        stop_process(broker)
        for service in ("intake", "referral"):
            await db.drop_database(private, service)
        await db.drop_database_at(db.keystore_url(private))  # intake's key store

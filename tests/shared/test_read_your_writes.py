"""Read-your-writes across services (shared/projection.py), against the real stack.

A write about a case the service's projection does not know yet waits for intake's event (bounded by
`MKR_PROJECTION_WAIT_SECONDS`); if it still does not know the case it answers 409 `projection-behind`
with `Retry-After` and writes nothing; once it knows the case, another municipality still gets 404."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from services.shelter.config import ShelterConfig
from shared.projection import PROJECTION_BEHIND
from tests.conftest import drop_databases, make_settings
from tests.referral.helpers import add_member
from tests.shelter.helpers import placement_body, register
from tests.support import Stack, contract_report, new_municipality, running_stack

WAIT = 1.0


def referral_body(case_id: str, member_id: str) -> dict[str, Any]:
    # health is neither in the report's consent nor routed automatically for it: only this call refers to it.
    return {"case_id": case_id, "to_member_id": member_id, "urgency": "high", "service": "health",
            "consent_override_reason": "the survivor asked for a doctor on the phone"}  # fmt: skip


@pytest.fixture(scope="module")
async def patient(
    database_server_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """Intake and referral with a longer bound on the wait: on two shared cores the projection can be more
    than the default 2 s behind, and what this module checks is that the write waits, not how long."""
    settings = make_settings(
        database_server_url, kafka_bootstrap, tmp_path_factory.mktemp("patient"), projection_wait_seconds=20.0
    )
    try:
        async with running_stack(settings, ("intake", "referral")) as running:
            yield running
    finally:
        await drop_databases(settings)


async def test_a_referral_posted_right_after_the_report_succeeds(patient: Stack) -> None:
    """What an integrator does: report, then refer at once — before the fix this was `404 No such case`."""
    stack = patient
    m = new_municipality()
    health = await add_member(stack, m, "health")
    coordinator = stack.auth("coordinator", m)
    for _ in range(3):
        case = await stack.intake.post("/v1/cases", json=contract_report(m), headers=coordinator)
        assert case.status_code == 201, case.text
        referred = await stack.referral.post(
            "/v1/referrals", json=referral_body(case.json()["id"], health["id"]), headers=coordinator
        )
        assert referred.status_code == 201, referred.text
        assert referred.json()["case_number"] == case.json()["case_number"]


@pytest.fixture(scope="module")
async def behind(
    database_server_url: str, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    """Intake, referral and shelter (requiring known cases) on databases and topics of their own, with
    the referral and shelter consumers stopped: their projections learn of no case."""
    settings = make_settings(
        database_server_url, kafka_bootstrap, tmp_path_factory.mktemp("behind"), projection_wait_seconds=WAIT
    )
    options = {"shelter": {"config": ShelterConfig(require_known_case=True)}}
    try:
        async with running_stack(settings, ("intake", "referral", "shelter"), options) as running:
            for service in ("referral", "shelter"):
                for consumer in running.apps[service].state.runtime.consumers:
                    await consumer.stop()
            yield running
    finally:
        await drop_databases(settings)


async def _count(stack: Stack, service: str, sql: str, **params: Any) -> int:
    async with stack.apps[service].state.runtime.sessions() as session:
        return int(await session.scalar(sa.text(sql), params) or 0)


def assert_projection_behind(response: Any) -> None:
    assert response.status_code == 409, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"] == "1"
    assert response.json()["type"] == PROJECTION_BEHIND and response.json()["title"] == "Projection behind"


async def test_with_the_projection_stopped_writes_are_409_with_retry_after_and_write_nothing(behind: Stack) -> None:
    m = new_municipality()
    coordinator = behind.auth("coordinator", m)
    health = await add_member(behind, m, "health")
    case = await behind.intake.post("/v1/cases", json=contract_report(m), headers=coordinator)
    assert case.status_code == 201, case.text
    case_id = case.json()["id"]

    started = time.monotonic()
    refused = await behind.referral.post(
        "/v1/referrals", json=referral_body(case_id, health["id"]), headers=coordinator
    )
    waited = time.monotonic() - started
    assert_projection_behind(refused)
    assert WAIT <= waited < WAIT + 2, waited  # it waited for the projection, boundedly
    assert await _count(behind, "referral", "SELECT count(*) FROM referrals WHERE case_id = :c", c=case_id) == 0
    assert (
        await _count(behind, "referral", "SELECT count(*) FROM outbox WHERE payload LIKE '%\"referral.created\"%'") == 0
    )

    meeting = {"municipality": m, "scheduled_for": "2026-12-20T10:00:00+01:00", "case_ids": [case_id]}
    assert_projection_behind(await behind.referral.post("/v1/etn-meetings", json=meeting, headers=coordinator))
    assert await _count(behind, "referral", "SELECT count(*) FROM etn_meetings") == 0

    shelter = await register(behind, m)
    placed = await behind.shelter.post(
        "/v1/placements", json=placement_body(shelter["id"], case_id), headers=coordinator
    )
    assert_projection_behind(placed)
    beds = (await behind.shelter.get(f"/v1/shelters/{shelter['id']}", headers=coordinator)).json()["free_beds"]
    assert beds == shelter["free_beds"]
    application = {"case_id": case_id, "municipality": m, "monthly_rent": "20000.00", "household_size": 2,
                   "requested_months": 3}  # fmt: skip
    applied = await behind.shelter.post("/v1/rent-bonus/applications", json=application, headers=coordinator)
    assert_projection_behind(applied)
    with_key = await behind.shelter.post(
        "/v1/rent-bonus/applications", json=application, headers={**coordinator, "Idempotency-Key": "k-1"}
    )
    assert_projection_behind(with_key)
    for table in ("placements", "rent_bonus_applications"):
        assert await _count(behind, "shelter", f"SELECT count(*) FROM {table} WHERE case_id = :c", c=case_id) == 0
    assert await _count(behind, "shelter", "SELECT count(*) FROM idempotency_keys") == 0


async def test_a_waiting_write_is_released_by_the_projection_and_other_municipalities_still_get_404(
    behind: Stack,
) -> None:
    m = new_municipality()
    coordinator = behind.auth("coordinator", m)
    health = await add_member(behind, m, "health")
    case = (await behind.intake.post("/v1/cases", json=contract_report(m), headers=coordinator)).json()
    runtime = behind.apps["referral"].state.runtime
    behind.settings.projection_wait_seconds = 60  # long enough for the consumer to rejoin its group
    try:
        started = time.monotonic()
        waiting = asyncio.create_task(
            behind.referral.post("/v1/referrals", json=referral_body(case["id"], health["id"]), headers=coordinator)
        )
        await asyncio.sleep(1.5)
        assert not waiting.done()  # held while the projection does not know the case
        for consumer in runtime.consumers:
            await consumer.start()
        referred = await asyncio.wait_for(waiting, timeout=60)
        assert referred.status_code == 201, referred.text
        assert time.monotonic() - started > 1.5
        assert referred.json()["case_number"] == case["case_number"]
        # Known now: a coordinator of another municipality, or an institution with no part in it, gets 404.
        elsewhere = new_municipality()
        other_member = await add_member(behind, elsewhere, "health")
        foreign = await behind.referral.post(
            "/v1/referrals",
            json=referral_body(case["id"], other_member["id"]),
            headers=behind.auth("coordinator", elsewhere),
        )
        assert foreign.status_code == 404 and foreign.json()["detail"] == "No such case."
        stranger = behind.auth("police", m, member_id=str(uuid.uuid4()))
        unrelated = await behind.referral.post(
            "/v1/referrals", json=referral_body(case["id"], health["id"]), headers=stranger
        )
        assert unrelated.status_code == 404
    finally:
        behind.settings.projection_wait_seconds = WAIT
        for consumer in runtime.consumers:
            await consumer.stop()

"""Intake under a country profile (CONTRACT §10): Kosovo's case-number prefixes and calendar."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from shared import db
from shared.settings import Settings
from tests.support import Stack, contract_report, running_stack


@pytest.fixture(scope="module")
async def kosovo_intake(settings: Settings) -> AsyncIterator[Stack]:
    run = uuid.uuid4().hex[:4]
    own = settings.model_copy(update={"profile": "kosovo", "database_prefix": f"{settings.database_prefix}ks{run}_",
                                      "kafka_topic_prefix": f"{settings.kafka_topic_prefix}ks{run}."})
    try:
        async with running_stack(own, ("intake",)) as stack:
            yield stack
    finally:
        await db.drop_database(own, "intake")


async def test_kosovo_numbers_cases_with_its_prefixes_in_its_own_calendar(kosovo_intake: Stack) -> None:
    stack = kosovo_intake
    config = stack.apps["intake"].state.intake_config
    assert config.timezone == "Europe/Belgrade" and config.case_prefixes["prishtine"] == "PR"
    # 23:30 UTC on New Year's Eve is already the new year in Prishtina (UTC+1).
    body = contract_report("prishtine", reported_at="2025-12-31T23:30:00+00:00")
    response = await stack.intake.post("/v1/cases", json=body, headers=stack.auth("coordinator", "prishtine"))
    assert response.status_code == 201, response.text
    assert response.json()["case_number"].startswith("PR-2026-")
    screen = await stack.intake.get("/v1/risk-screen", headers=stack.auth("coordinator", "prishtine"))
    assert screen.json()["is_default"] is True and screen.json()["high_yes_count"] == 8


async def test_kosovo_transfers_go_to_kosovo_municipalities_only(kosovo_intake: Stack) -> None:
    """The profile names the country's municipalities: a Kosovo case moves to Prizren, never to Elbasan."""
    stack = kosovo_intake
    config = stack.apps["intake"].state.intake_config
    assert len(config.municipalities) == 38 and "prizren" in config.municipalities
    assert "elbasan" not in config.municipalities
    coordinator = stack.auth("coordinator", "prishtine")
    case = await stack.intake.post("/v1/cases", json=contract_report("prishtine"), headers=coordinator)
    assert case.status_code == 201, case.text
    body = {"reason": "She moved to her mother", "consent_given_at": "2026-11-30T10:00:00+01:00"}
    url = f"/v1/cases/{case.json()['id']}/transfers"
    refused = await stack.intake.post(url, json={**body, "to_municipality": "elbasan"}, headers=coordinator)
    assert refused.status_code == 422, refused.text
    accepted = await stack.intake.post(url, json={**body, "to_municipality": "prizren"}, headers=coordinator)
    assert accepted.status_code == 201, accepted.text

"""Intake's own in-process service on the session's real PostgreSQL and broker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from shared import db
from shared.settings import Settings
from tests.support import Stack, contract_report, running_stack


@pytest.fixture(scope="package")
async def intake(settings: Settings) -> AsyncIterator[Stack]:
    """Only the intake service, on a database of its own, stopped when this package's tests end.

    Its own database keeps its outbox relay away from other tests' intake databases (a relay
    publishes every row of the database it serves), and keeps these tests independent of the
    other services' state.
    """
    run = uuid.uuid4().hex[:4]
    # Own topics too: in the session's consumer groups, the session stack's intake would take its events.
    own = settings.model_copy(update={"database_prefix": f"{settings.database_prefix}in{run}_",
                                      "kafka_topic_prefix": f"{settings.kafka_topic_prefix}in{run}."})
    try:
        async with running_stack(own, ("intake",)) as stack:
            yield stack
    finally:
        await db.drop_database(own, "intake")


async def report(
    stack: Stack, municipality: str, role: str = "police", member_id: str | None = "m-police", **overrides: Any
) -> httpx.Response:
    claims: dict[str, Any] = {"member_id": member_id} if member_id else {}
    headers = stack.auth(role, municipality, **claims)
    return await stack.intake.post("/v1/cases", json=contract_report(municipality, **overrides), headers=headers)


async def reported(stack: Stack, municipality: str, **overrides: Any) -> dict[str, Any]:
    response = await report(stack, municipality, **overrides)
    assert response.status_code == 201, response.text
    return dict(response.json())

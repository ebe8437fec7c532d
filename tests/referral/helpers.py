"""Helpers of the referral tests: intake's events produced straight onto the broker, members, waiting."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from shared.events import INTAKE_TOPIC, SHELTER_TOPIC, Envelope, make_event
from shared.settings import Settings
from tests.support import Stack, wait_for


def reported(municipality: str, **overrides: Any) -> dict[str, Any]:
    """`case.reported` data as intake publishes it (coded facts only, invented)."""
    case_id = str(uuid.uuid4())
    data: dict[str, Any] = {
        "case_id": case_id,
        "case_number": f"T-2026-{uuid.uuid4().int % 10**6:06d}",
        "source": "police",
        "reported_at": datetime.now(UTC).isoformat(),
        "risk_level": "low",
        "sex": "female",
        "age_group": "25-39",
        "ethnicity": None,
        "disability": False,
        "violence_types": ["physical"],
        "perpetrator_relationship": "spouse",
        "needs": [],
        "children_count": 0,
        "children_ages": [],
        "consent_share_with": ["social_services"],
        "reported_by_role": "police",
        "reported_by_member_id": None,
    }
    data.update(overrides)
    return data


async def produce(
    producer: AIOKafkaProducer,
    settings: Settings,
    type_: str,
    municipality: str,
    data: dict[str, Any],
    *,
    topic: str = INTAKE_TOPIC,
    event: Envelope | None = None,
) -> Envelope:
    source = "mkr/intake" if topic == INTAKE_TOPIC else "mkr/shelter"
    key = str(data.get("case_id") or data.get("shelter_id"))
    event = event or make_event(type_=type_, source=source, subject=key, municipality=municipality, data=data)
    await producer.send_and_wait(settings.topic(topic), event.model_dump_json().encode(), key=key.encode())
    return event


async def add_member(stack: Stack, municipality: str, kind: str, name: str | None = None) -> dict[str, Any]:
    response = await stack.referral.post(
        "/v1/members",
        json={
            "name": name or f"{kind} office",
            "kind": kind,
            "municipality": municipality,
            "services": [kind],
            "contact": {"email": f"{kind}@example.org", "phone": "+355 4 000 000"},
        },
        headers=stack.auth("admin", municipality),
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def referrals_of(stack: Stack, municipality: str, case_id: str, count: int, timeout: float = 10) -> list[Any]:
    """Wait until the coordinator sees at least `count` referrals for the case."""

    async def probe() -> list[Any]:
        response = await stack.referral.get(
            "/v1/referrals", params={"case_id": case_id}, headers=stack.auth("coordinator", municipality)
        )
        assert response.status_code == 200, response.text
        found = list(response.json()["items"])
        return found if len(found) >= count else []

    return await wait_for(probe, timeout=timeout, what=f"{count} referrals for case {case_id}")


async def routing_of(stack: Stack, municipality: str, case_id: str, timeout: float = 10) -> dict[str, Any]:
    """Wait until the case is routed (the projection knows it and decisions exist)."""

    async def probe() -> dict[str, Any] | None:
        response = await stack.referral.get(
            f"/v1/cases/{case_id}/routing", headers=stack.auth("coordinator", municipality)
        )
        if response.status_code == 200 and response.json()["decisions"]:
            return dict(response.json())
        return None

    return await wait_for(probe, timeout=timeout, what=f"routing of case {case_id}")


__all__ = ["SHELTER_TOPIC", "add_member", "produce", "referrals_of", "reported", "routing_of"]


async def published(stack: Stack, type_: str, **data: str) -> list[dict[str, Any]]:
    """Events of `type_` the referral service wrote to its outbox whose data has the given values."""
    import json

    import sqlalchemy as sa

    from shared.events import outbox_table

    runtime = stack.apps["referral"].state.runtime
    async with runtime.sessions() as session:
        query = sa.select(outbox_table.c.payload).where(
            sa.cast(outbox_table.c.payload, sa.dialects.postgresql.JSONB)["type"].astext == type_
        )
        for name, value in data.items():
            query = query.where(
                sa.cast(outbox_table.c.payload, sa.dialects.postgresql.JSONB)["data"][name].astext == value
            )
        rows = (await session.execute(query.order_by(outbox_table.c.id))).scalars().all()
    return [json.loads(row) for row in rows]

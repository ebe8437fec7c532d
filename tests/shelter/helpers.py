"""Helpers of the shelter tests: registering shelters, reading the outbox, feeding intake events."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from shared.events import INTAKE_TOPIC, make_event, outbox_table
from tests.support import Stack, wait_for

FUTURE = (date.today() + timedelta(days=30)).isoformat()


def shelter_body(municipality: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Strehëza e Testit",
        "operator": "Invented NGO",
        "kind": "emergency",
        "municipality": municipality,
        "capacity": 5,
        "accepts_children": True,
        "address": "Rruga e Fshehtë 7",
        "phone": "+355690000001",
    }
    body.update(overrides)
    return body


async def register(stack: Stack, municipality: str, **overrides: Any) -> dict[str, Any]:
    response = await stack.shelter.post(
        "/v1/shelters", json=shelter_body(municipality, **overrides), headers=stack.auth("coordinator", municipality)
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def staff(stack: Stack, municipality: str, shelter_id: str) -> dict[str, str]:
    return stack.auth("shelter_staff", municipality, shelter_id=shelter_id)


def placement_body(shelter_id: str, case_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "case_id": case_id or str(uuid.uuid4()),
        "shelter_id": shelter_id,
        "adults": 1,
        "children": 0,
        "planned_until": FUTURE,
    }
    body.update(overrides)
    return body


async def outbox_events(stack: Stack, type_: str, **data: Any) -> list[dict[str, Any]]:
    """The shelter's events of a type whose `data` matches, from its outbox (same transaction as the change)."""
    sessions = stack.apps["shelter"].state.runtime.sessions
    async with sessions() as session:
        rows = (await session.execute(sa.select(outbox_table.c.payload).order_by(outbox_table.c.id))).scalars().all()
    found = []
    for payload in rows:
        event = json.loads(payload)
        if event["type"] == type_ and all(event["data"].get(k) == v for k, v in data.items()):
            found.append(event)
    return found


async def report_case(stack: Stack, municipality: str, **data: Any) -> dict[str, Any]:
    """Publish intake's `case.reported` to the real broker (as intake would) and wait for the projection."""
    case_id = str(uuid.uuid4())
    case_number = f"T-{uuid.uuid4().hex[:6].upper()}"
    body: dict[str, Any] = {
        "case_id": case_id,
        "case_number": case_number,
        "source": "police",
        "reported_at": "2026-11-21T09:00:00+00:00",
        "risk_level": "high",
        "sex": "female",
        "age_group": "25-39",
        "ethnicity": None,
        "disability": False,
        "violence_types": ["physical"],
        "perpetrator_relationship": "spouse",
        "needs": ["shelter", "legal_aid"],
        "children_count": 2,
        "children_ages": [4, 7],
        "consent_share_with": ["shelter"],
        "reported_by_role": "police",
        "reported_by_member_id": None,
    }
    body.update(data)
    await send_intake_event(stack, "case.reported", municipality, body)
    return body


async def send_intake_event(stack: Stack, type_: str, municipality: str, data: dict[str, Any]) -> None:
    """Publish one of intake's case events to the real broker, keyed by case id as intake does."""
    case_id = str(data["case_id"])
    event = make_event(type_=type_, source="mkr/intake", subject=case_id, municipality=municipality, data=data)
    settings = stack.settings
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=False, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(
            settings.topic(INTAKE_TOPIC), value=event.model_dump_json().encode(), key=case_id.encode()
        )
    finally:
        await producer.stop()


async def wait_projected(stack: Stack, case_id: str, municipality: str, shelter_id: str) -> dict[str, Any]:
    """Wait until a placement listing shows the case number (the projection has the case)."""
    headers = stack.auth("coordinator", municipality)

    async def probe() -> dict[str, Any] | None:
        response = await stack.shelter.get("/v1/placements", params={"case_id": case_id}, headers=headers)
        items = response.json()["items"]
        return items[0] if items and items[0]["case_number"] else None

    return await wait_for(probe, timeout=20, what="the case projection")

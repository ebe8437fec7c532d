"""What notifications consumes: every topic; alerts are written once per event."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.models import Alert
from shared.events import INTAKE_TOPIC, REFERRAL_TOPIC, SHELTER_TOPIC, Envelope

CONSUMED_TOPICS = (INTAKE_TOPIC, REFERRAL_TOPIC, SHELTER_TOPIC)


async def on_event(session: AsyncSession, event: Envelope) -> None:
    if event.type == "referral.created":
        session.add(
            Alert(
                event_id=event.id,
                type=event.type,
                severity="info",
                municipality=event.municipality,
                role="coordinator",
                case_id=uuid.UUID(event.data["case_id"]),
                case_number=event.data.get("case_number"),
            )
        )

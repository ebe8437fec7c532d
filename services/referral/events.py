"""What referral consumes (intake's cases) and publishes (referrals)."""

from __future__ import annotations

import uuid

from sqlalchemy.ext.asyncio import AsyncSession

from services.referral.models import Referral
from shared.events import INTAKE_TOPIC, REFERRAL_TOPIC, Envelope, make_event, publish
from shared.settings import Settings

SOURCE = "mkr/referral"


def make_handler(settings: Settings):  # type: ignore[no-untyped-def]
    async def on_intake_event(session: AsyncSession, event: Envelope) -> None:
        if event.type != "case.reported":
            return
        data = event.data
        referral = Referral(
            case_id=uuid.UUID(data["case_id"]),
            case_number=data["case_number"],
            municipality=event.municipality,
            to_member_kind="social_services",
            reason="always_social_services",
        )
        session.add(referral)
        await session.flush()
        await publish(
            session,
            settings,
            REFERRAL_TOPIC,
            make_event(
                type_="referral.created",
                source=SOURCE,
                subject=str(referral.case_id),
                municipality=referral.municipality,
                data={
                    "referral_id": str(referral.id),
                    "case_id": str(referral.case_id),
                    "case_number": referral.case_number,
                    "to_member_kind": referral.to_member_kind,
                    "reason": referral.reason,
                },
            ),
            key=str(referral.case_id),
        )

    return on_intake_event


CONSUMED_TOPICS = (INTAKE_TOPIC,)

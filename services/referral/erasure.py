"""`case.anonymised` (intake erased the case, on request or by retention): referral's free text about the
case goes too — referral notes, override and decline reasons, outcomes, and the case's plan actions
(meeting minutes are kept per case as plan actions). Coded facts (statuses, kinds, dates, routing
decisions) stay, so reports do not change. Idempotent: a replay clears what is already clear."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.referral.models import PlanAction, Referral
from shared.events import Envelope

ERASED_ACTION = ""  # plan_actions.action is NOT NULL: an erased action reads as empty text


async def erase_case_text(session: AsyncSession, case_id: uuid.UUID) -> None:
    await session.execute(
        sa.update(Referral)
        .where(Referral.case_id == case_id)  # type: ignore[arg-type]
        .values(note=None, consent_override_reason=None, decline_reason=None, outcome=None)
    )
    await session.execute(
        sa.update(PlanAction).where(PlanAction.case_id == case_id).values(action=ERASED_ACTION)  # type: ignore[arg-type]
    )


async def on_case_anonymised(session: AsyncSession, event: Envelope) -> None:
    await erase_case_text(session, uuid.UUID(str(event.data["case_id"])))

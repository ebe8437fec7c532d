"""`case.anonymised` (intake erased the case, on request or by retention): shelter's free text about the
case goes too — discharge reasons of its placements and the decision reasons of its rent-bonus
applications. Coded facts (beds, dates, months, amounts) stay. Idempotent."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.shelter.models import Placement, RentBonusApplication
from shared.events import Envelope


async def erase_case_text(session: AsyncSession, case_id: uuid.UUID) -> None:
    await session.execute(
        sa.update(Placement).where(Placement.case_id == case_id).values(end_reason=None)  # type: ignore[arg-type]
    )
    await session.execute(
        sa.update(RentBonusApplication)
        .where(RentBonusApplication.case_id == case_id)  # type: ignore[arg-type]
        .values(decision_reason=None)
    )


async def on_case_anonymised(session: AsyncSession, event: Envelope) -> None:
    await erase_case_text(session, uuid.UUID(str(event.data["case_id"])))

"""A case transferred to another municipality (`case.transferred`, CONTRACT §10), as shelter sees it.

Placements and the rent bonus continue: the case's projection, its active placements, its rent-bonus
applications and their unpaid payments now belong to the receiving municipality, so its coordinator
and housing office see (and pay) them and the sender's no longer do. A placement's beds stay where the
shelter is, and its staff keep seeing it (staff see their shelter's placements, whoever's case). Paid
payments stay with the budget they were paid from. Setting the same values twice changes nothing, so a
repeated event is harmless.
"""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.shelter.models import CaseProjection, Placement, RentBonusApplication, RentBonusPayment
from shared.db import table_of
from shared.events import Envelope

CASES = table_of(CaseProjection)
PLACEMENTS = table_of(Placement)
APPS = table_of(RentBonusApplication)
PAYMENTS = table_of(RentBonusPayment)


async def on_case_transferred(session: AsyncSession, event: Envelope) -> None:
    case_id = uuid.UUID(str(event.data["case_id"]))
    to = event.municipality
    await session.execute(
        sa.update(CASES)
        .where(CASES.c.case_id == case_id)
        .values(municipality=to, case_number=event.data["case_number"])
    )
    await session.execute(
        sa.update(PLACEMENTS)
        .where(PLACEMENTS.c.case_id == case_id, PLACEMENTS.c.ended_at.is_(None))
        .values(municipality=to)
    )
    applications = sa.select(APPS.c.id).where(APPS.c.case_id == case_id).scalar_subquery()
    await session.execute(
        sa.update(PAYMENTS)
        .where(PAYMENTS.c.application_id.in_(applications), PAYMENTS.c.paid_at.is_(None))
        .values(municipality=to)
    )
    await session.execute(sa.update(APPS).where(APPS.c.case_id == case_id).values(municipality=to))

"""HTTP routes of the referral service."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends
from sqlmodel import select

from services.referral.models import Referral
from services.referral.schemas import ReferralOut
from shared.auth import Principal, Role, allow
from shared.db import SessionDep

router = APIRouter(prefix="/v1", tags=["referrals"])
Coordinator = Annotated[Principal, Depends(allow(Role.coordinator))]


@router.get("/referrals", response_model=list[ReferralOut])
async def list_referrals(
    principal: Coordinator, session: SessionDep, case_id: uuid.UUID | None = None
) -> list[ReferralOut]:
    query = select(Referral).where(Referral.municipality == principal.municipality)
    if case_id is not None:
        query = query.where(Referral.case_id == case_id)
    rows = (await session.execute(query.order_by(Referral.created_at))).scalars().all()
    return [ReferralOut.model_validate(r, from_attributes=True) for r in rows]

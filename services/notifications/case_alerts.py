"""The alerts raised about one case (issue #17, the survivor's file): for the coordinator of its
municipality, to whom they went (role, institution, shelter) and when — never a person's data."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel
from sqlmodel import col

from services.notifications import domain
from services.notifications.models import Alert
from shared.auth import Principal, Role, allow
from shared.db import SessionDep

router = APIRouter(prefix="/v1", tags=["inbox"])
Coordinator = Annotated[Principal, Depends(allow(Role.coordinator))]


class CaseAlertOut(BaseModel):
    id: uuid.UUID
    type: str
    severity: str
    title: str
    event_type: str
    role: str | None
    member_id: str | None
    shelter_id: str | None
    created_at: datetime
    read_at: datetime | None


class CaseAlertPage(BaseModel):
    items: list[CaseAlertOut]
    next_cursor: str | None = None


@router.get("/cases/{case_id}/alerts", response_model=CaseAlertPage, summary="The alerts raised about a case")
async def case_alerts(
    case_id: uuid.UUID,
    principal: Coordinator,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 200,
) -> CaseAlertPage:
    """Oldest first; only alerts of the caller's municipality (a case of another reads as empty)."""
    async with session.begin():
        rows = (
            await session.execute(
                sa.select(Alert)
                .where(col(Alert.case_id) == case_id, col(Alert.municipality) == principal.municipality)
                .order_by(col(Alert.seq))
                .limit(limit)
            )
        ).scalars().all()
    return CaseAlertPage(
        items=[
            CaseAlertOut(
                id=a.id, type=a.type, severity=a.severity, title=domain.render(a.type, a.params, "en")[0],
                event_type=a.event_type, role=a.role, member_id=a.member_id, shelter_id=a.shelter_id,
                created_at=a.created_at, read_at=a.read_at,
            )
            for a in rows
        ]
    )

"""The alerts raised about one case (issue #17, the survivor's file): for the coordinator of its
municipality, to whom they went (role, institution, shelter) and when — never a person's data."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends
from pydantic import BaseModel
from sqlmodel import col

from services.notifications import access, domain
from services.notifications.models import Alert
from shared.auth import Principal, Role, allow
from shared.db import SessionDep
from shared.paging import Cursor, Keyset, Limit, Page, fetch_page

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


ORDER = Keyset("case_alerts", (col(Alert.seq),))


@router.get("/cases/{case_id}/alerts", response_model=Page[CaseAlertOut], summary="The alerts raised about a case")
async def case_alerts(
    case_id: uuid.UUID,
    principal: Coordinator,
    session: SessionDep,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[CaseAlertOut]:
    """Oldest first; only alerts of the caller's municipality (a case of another reads as empty)."""
    query = sa.select(Alert).where(access.case_alerts_visible(principal, case_id))
    async with session.begin():
        rows, next_cursor = await fetch_page(session, query, ORDER, limit, cursor)
    return Page(
        next_cursor=next_cursor,
        items=[
            CaseAlertOut(
                id=a.id, type=a.type, severity=a.severity, title=domain.render(a.type, a.params, "en")[0],
                event_type=a.event_type, role=a.role, member_id=a.member_id, shelter_id=a.shelter_id,
                created_at=a.created_at, read_at=a.read_at,
            )
            for a in rows
        ]
    )

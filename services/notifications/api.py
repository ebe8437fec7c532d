"""HTTP routes of the notifications service."""

from __future__ import annotations

from fastapi import APIRouter
from sqlmodel import select

from services.notifications.models import Alert
from services.notifications.schemas import AlertOut
from shared.auth import AnyRole
from shared.db import SessionDep

router = APIRouter(prefix="/v1", tags=["inbox"])


@router.get("/inbox", response_model=list[AlertOut])
async def inbox(principal: AnyRole, session: SessionDep) -> list[AlertOut]:
    query = (
        select(Alert)
        .where(Alert.municipality == principal.municipality, Alert.role == principal.role)
        .order_by(Alert.created_at.desc())  # type: ignore[attr-defined]
    )
    rows = (await session.execute(query)).scalars().all()
    return [
        AlertOut(
            id=a.id,
            type=a.type,
            severity=a.severity,
            title=f"New referral {a.case_number}",
            body=f"Case {a.case_number} was referred.",
            case_id=a.case_id,
            created_at=a.created_at,
            read_at=a.read_at,
        )
        for a in rows
    ]

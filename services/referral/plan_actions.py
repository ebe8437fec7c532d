"""`GET /v1/plan-actions`: the caller's actions of the individual case plans, by due date — all of the
municipality for the coordinator, those it is responsible for for an institution (or a shelter's member),
so that an institution finds its ETN tasks without knowing which cases hold them."""

from __future__ import annotations

import base64
import binascii
import uuid
from datetime import date
from typing import Annotated, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Query, Request
from sqlmodel import col

from services.referral.api import PlanReader, _sealer, action_out, member_ids_of
from services.referral.models import PlanAction
from services.referral.schemas import PlanActionPage
from shared.auth import Role
from shared.db import SessionDep
from shared.errors import invalid

router = APIRouter(prefix="/v1")


def encode_cursor(due: date, action_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(f"{due.isoformat()}|{action_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[date, uuid.UUID]:
    try:
        due, _, action_id = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().partition("|")
        return date.fromisoformat(due), uuid.UUID(action_id)
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise invalid(["query", "cursor"], "not a cursor of this list") from exc


@router.get("/plan-actions", response_model=PlanActionPage, tags=["meetings"])
async def list_plan_actions(
    principal: PlanReader,
    session: SessionDep,
    request: Request,
    status: Literal["open", "completed"] | None = None,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> PlanActionPage:
    """The caller's plan actions by due date: the coordinator's municipality's all; an institution's those
    it is responsible for. `status` filters; `cursor` is the previous page's `next_cursor`."""
    query = sa.select(PlanAction).where(col(PlanAction.municipality) == principal.municipality)
    if status is not None:
        query = query.where(col(PlanAction.status) == status)
    if cursor:
        due, after = decode_cursor(cursor)
        query = query.where(sa.tuple_(col(PlanAction.due_date), col(PlanAction.id)) > sa.tuple_(due, after))
    query = query.order_by(col(PlanAction.due_date), col(PlanAction.id)).limit(limit + 1)
    async with session.begin():
        if principal.role is not Role.coordinator:
            ids = await member_ids_of(session, principal)
            query = query.where(col(PlanAction.responsible_member_id).in_(ids))
        rows = list((await session.execute(query)).scalars().all())
    page = rows[:limit]
    next_cursor = encode_cursor(page[-1].due_date, page[-1].id) if len(rows) > limit else None
    sealer = _sealer(request)
    return PlanActionPage(items=[action_out(a, sealer) for a in page], next_cursor=next_cursor)

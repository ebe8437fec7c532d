"""`GET /v1/plan-actions`: the caller's actions of the individual case plans, by due date — all of the
municipality for the coordinator, those it is responsible for for an institution (or a shelter's member),
so that an institution finds its ETN tasks without knowing which cases hold them."""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from fastapi import APIRouter, Request
from sqlmodel import col

from services.referral.api import PlanReader, _sealer, action_out, member_ids_of
from services.referral.models import PlanAction
from services.referral.schemas import PlanActionOut
from shared.auth import Role
from shared.db import SessionDep
from shared.paging import Cursor, Keyset, Limit, Page, fetch_page

router = APIRouter(prefix="/v1")

PLAN_ACTION_ORDER = Keyset("plan_actions", (col(PlanAction.due_date), col(PlanAction.id)))


@router.get("/plan-actions", response_model=Page[PlanActionOut], tags=["meetings"])
async def list_plan_actions(
    principal: PlanReader,
    session: SessionDep,
    request: Request,
    status: Literal["open", "completed"] | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[PlanActionOut]:
    """The caller's plan actions by due date: the coordinator's municipality's all; an institution's those
    it is responsible for. `status` filters."""
    query = sa.select(PlanAction).where(col(PlanAction.municipality) == principal.municipality)
    if status is not None:
        query = query.where(col(PlanAction.status) == status)
    if principal.role is not Role.coordinator:
        query = query.where(col(PlanAction.responsible_member_id).in_(await member_ids_of(session, principal)))
    rows, next_cursor = await fetch_page(session, query, PLAN_ACTION_ORDER, limit, cursor)
    sealer = _sealer(request)
    return Page[PlanActionOut](items=[action_out(a, sealer) for a in rows], next_cursor=next_cursor)

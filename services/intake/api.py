"""HTTP routes of the intake service."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request

from services.intake import domain, events
from services.intake.models import Case
from services.intake.schemas import CaseOut, CaseReport
from shared.auth import INSTITUTION_ROLES, Principal, Role, allow, require_own_municipality
from shared.db import SessionDep
from shared.errors import not_found

router = APIRouter(prefix="/v1", tags=["cases"])
Reporter = Annotated[Principal, Depends(allow(Role.coordinator, INSTITUTION_ROLES))]


def _out(case: Case) -> CaseOut:
    return CaseOut.model_validate(case, from_attributes=True)


@router.post("/cases", status_code=201, response_model=CaseOut)
async def report_case(body: CaseReport, principal: Reporter, session: SessionDep, request: Request) -> CaseOut:
    require_own_municipality(principal, body.municipality)
    now = datetime.now(UTC)
    async with session.begin():
        number = await domain.next_case_number(session, municipality=body.municipality, year=now.year)
        case = Case(
            municipality=body.municipality,
            case_number=number,
            source=body.source,
            facts={"sex": body.survivor.sex.value},
            reported_at=now,
            reported_by_sub=principal.sub,
            reported_by_role=principal.role,
            reported_by_member_id=principal.member_id,
        )
        session.add(case)
        await session.flush()
        await events.case_reported(session, request.app.state.settings, case)
    request.app.state.runtime.relay.wake()
    return _out(case)


@router.get("/cases/{case_id}", response_model=CaseOut)
async def get_case(case_id: uuid.UUID, principal: Reporter, session: SessionDep) -> CaseOut:
    case = await session.get(Case, case_id)
    if case is None or case.municipality != principal.municipality:
        raise not_found("case")
    return _out(case)

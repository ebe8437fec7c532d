"""HTTP routes of the rent bonus (bonusi i qirasë): applications, decisions, payments, budgets (CONTRACT §7)."""

from __future__ import annotations

import uuid
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from services.shelter import access, commands, domain
from services.shelter.context import await_case, config_of, text_sealer_of
from services.shelter.models import CaseProjection, RentBonusApplication, RentBonusPayment
from services.shelter.schemas import ApplicationCreate, ApplicationOut, BudgetIn, BudgetOut, Decision, PaymentOut
from shared import idempotency
from shared.auth import Principal, Role, allow, require_own_municipality
from shared.db import SessionDep, table_of
from shared.paging import Cursor, Keyset, Limit, Page, fetch_page
from shared.projection import PROJECTION_RESPONSES
from shared.sealed import TextSealer
from shared.text import SLUG_PATTERN

router = APIRouter(prefix="/v1/rent-bonus", tags=["rent bonus"])

Applicant = Annotated[Principal, Depends(allow(Role.coordinator, Role.social_services, Role.housing_officer))]
HousingOfficer = Annotated[Principal, Depends(allow(Role.housing_officer))]
BudgetReader = Annotated[Principal, Depends(allow(Role.housing_officer, Role.coordinator, Role.auditor))]
Year = Annotated[int, Path(ge=2000, le=2100)]
MunicipalityPath = Annotated[str, Path(pattern=SLUG_PATTERN)]

APPS = table_of(RentBonusApplication)
PAYMENTS = table_of(RentBonusPayment)


async def _application_out(session: AsyncSession, app: RentBonusApplication, sealer: TextSealer) -> ApplicationOut:
    payments = (
        (await session.execute(sa.select(RentBonusPayment).where(PAYMENTS.c.application_id == app.id))).scalars().all()
    )
    case = await session.get(CaseProjection, app.case_id)
    approved = None if app.status == "pending" else app.status == "approved"
    total = app.monthly_amount * app.months if approved and app.monthly_amount and app.months else None
    return ApplicationOut(
        id=app.id,
        case_id=app.case_id,
        case_number=case.case_number if case else None,
        municipality=app.municipality,
        monthly_rent=app.monthly_rent,
        household_size=app.household_size,
        requested_months=app.requested_months,
        status=app.status,
        submitted_at=app.submitted_at,
        decided_at=app.decided_at,
        approved=approved,
        monthly_amount=app.monthly_amount,
        start_month=domain.format_month(app.start_month) if app.start_month else None,
        months=app.months,
        total=total,
        reason=sealer.open("rent_bonus_applications", app.id, "decision_reason", app.decision_reason),
        payments=[_payment_out(p) for p in sorted(payments, key=lambda p: p.month)],
    )


def _payment_out(payment: RentBonusPayment) -> PaymentOut:
    return PaymentOut(
        id=payment.id,
        month=domain.format_month(payment.month),
        amount=payment.amount,
        status=payment.status,
        paid_at=payment.paid_at,
    )


@router.post("/applications", status_code=201, response_model=ApplicationOut, responses=PROJECTION_RESPONSES)
async def apply(
    body: ApplicationCreate,
    principal: Applicant,
    session: SessionDep,
    request: Request,
    idempotency_key: idempotency.IdempotencyKey = None,
) -> ApplicationOut | JSONResponse:
    """Submit an application (pending). With `Idempotency-Key`, a retry returns the first application."""
    require_own_municipality(principal, body.municipality)  # before the wait for the case
    await await_case(session, request, body.case_id)
    # Its own scope: a key a caller also used for a placement is not mistaken for this request.
    once = idempotency.IdempotentRequest.of(
        scope=f"{body.municipality}:rent-bonus", caller=principal.sub, key=idempotency_key, body=body
    )
    async with session.begin():
        if await once.claim(session):
            app = await commands.submit_application(session, config_of(request), principal, body)
            out = await _application_out(session, app, text_sealer_of(request))
            await once.remember(session, 201, out)
            return out
    return await once.replay(session)


APPLICATION_ORDER = Keyset("applications", (APPS.c.submitted_at, APPS.c.id), descending=True)


@router.get("/applications", response_model=Page[ApplicationOut])
async def list_applications(
    principal: Applicant,
    session: SessionDep,
    request: Request,
    case_id: uuid.UUID | None = None,
    status: Annotated[str | None, Query(pattern="^(pending|approved|rejected)$")] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ApplicationOut]:
    """Newest first; who may read which application is part of the WHERE, so `limit` rows are readable."""
    stmt = sa.select(RentBonusApplication).where(access.readable_applications(principal))
    if case_id is not None:
        stmt = stmt.where(APPS.c.case_id == case_id)
    if status is not None:
        stmt = stmt.where(APPS.c.status == status)
    async with session.begin():
        apps, next_cursor = await fetch_page(session, stmt, APPLICATION_ORDER, limit, cursor)
        sealer = text_sealer_of(request)
        items = [await _application_out(session, a, sealer) for a in apps]
    return Page[ApplicationOut](items=items, next_cursor=next_cursor)


@router.get("/applications/{application_id}", response_model=ApplicationOut)
async def get_application(
    application_id: uuid.UUID, principal: Applicant, session: SessionDep, request: Request
) -> ApplicationOut:
    async with session.begin():
        app = await access.readable_application(session, application_id, principal)
        return await _application_out(session, app, text_sealer_of(request))


@router.post("/applications/{application_id}/decision", response_model=ApplicationOut)
async def decide(
    application_id: uuid.UUID, body: Decision, principal: HousingOfficer, session: SessionDep, request: Request
) -> ApplicationOut:
    """Approve (one payment per month, each committed against its calendar year's budget) or reject; once."""
    commands.check_decision(body)
    async with session.begin():
        app = await commands.decide_application(
            session, request.app.state.settings, text_sealer_of(request), principal, application_id, body
        )
        return await _application_out(session, app, text_sealer_of(request))


@router.post("/payments/{payment_id}/pay", response_model=PaymentOut)
async def pay(payment_id: uuid.UUID, principal: HousingOfficer, session: SessionDep, request: Request) -> PaymentOut:
    """Mark a payment paid; only once (again is 409)."""
    async with session.begin():
        payment = await commands.pay(session, request.app.state.settings, principal, payment_id)
    return _payment_out(payment)


def _budget_out(state: commands.BudgetState) -> BudgetOut:
    return BudgetOut(
        municipality=state.budget.municipality,
        year=state.budget.year,
        amount=state.budget.amount,
        committed=state.committed,
        paid=state.paid,
        remaining=domain.remaining(state.budget.amount, state.committed),
    )


@router.put("/budgets/{municipality}/{year}", response_model=BudgetOut)
async def set_budget(
    municipality: MunicipalityPath, year: Year, body: BudgetIn, principal: HousingOfficer, session: SessionDep
) -> BudgetOut:
    """Set the year's budget; 409 when it would fall below what is already committed."""
    async with session.begin():
        return _budget_out(await commands.set_budget(session, principal, municipality, year, body.amount))


@router.get("/budgets/{municipality}/{year}", response_model=BudgetOut)
async def get_budget(
    municipality: MunicipalityPath, year: Year, principal: BudgetReader, session: SessionDep
) -> BudgetOut:
    async with session.begin():
        return _budget_out(await commands.read_budget(session, principal, municipality, year))

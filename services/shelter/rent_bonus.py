"""HTTP routes of the rent bonus (bonusi i qirasë): applications, decisions, payments, budgets (CONTRACT §7)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.shelter import domain, events
from services.shelter.context import await_case, config_of, known_case, text_sealer_of
from services.shelter.models import CaseProjection, RentBonusApplication, RentBonusBudget, RentBonusPayment
from services.shelter.schemas import ApplicationCreate, ApplicationOut, BudgetIn, BudgetOut, Decision, PaymentOut
from shared import idempotency
from shared.auth import Principal, Role, allow, require_own_municipality
from shared.db import SessionDep, table_of
from shared.errors import Problem, conflict, invalid, not_found
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
BUDGETS = table_of(RentBonusBudget)


def _now() -> datetime:
    return datetime.now(UTC)


def _readable(principal: Principal) -> sa.ColumnElement[bool]:
    """`_may_read` as a WHERE clause: lists filter in SQL, never in Python after a fixed fetch."""
    own = APPS.c.municipality == principal.municipality
    if principal.role is Role.social_services:
        mine = APPS.c.submitted_by_sub == principal.sub
        if principal.member_id is not None:
            mine = sa.or_(mine, APPS.c.submitted_by_member_id == principal.member_id)
        return sa.and_(own, mine)
    return own


def _may_read(principal: Principal, app: RentBonusApplication) -> bool:
    if app.municipality != principal.municipality:
        return False
    if principal.role is Role.social_services:
        # Social services follow the applications their institution (or they) submitted.
        return app.submitted_by_sub == principal.sub or (
            principal.member_id is not None and app.submitted_by_member_id == principal.member_id
        )
    return True


async def _load_application(
    session: AsyncSession, application_id: uuid.UUID, principal: Principal, *, for_update: bool = False
) -> RentBonusApplication:
    stmt = sa.select(RentBonusApplication).where(APPS.c.id == application_id)
    if for_update:
        stmt = stmt.with_for_update()
    app = (await session.execute(stmt)).scalar_one_or_none()
    if app is None or not _may_read(principal, app):
        raise not_found("rent-bonus application")
    return app


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
    require_own_municipality(principal, body.municipality)
    await await_case(session, request, body.case_id)
    # Its own scope: a key a caller also used for a placement is not mistaken for this request.
    once = idempotency.IdempotentRequest.of(
        scope=f"{body.municipality}:rent-bonus", caller=principal.sub, key=idempotency_key, body=body
    )
    async with session.begin():
        if await once.claim(session):
            out = await _submit(session, body, principal, request)
            await once.remember(session, 201, out)
            return out
    return await once.replay(session)


async def _submit(
    session: AsyncSession, body: ApplicationCreate, principal: Principal, request: Request
) -> ApplicationOut:
    await known_case(session, body.case_id, body.municipality, config_of(request))
    app = RentBonusApplication(
        municipality=body.municipality,
        case_id=body.case_id,
        monthly_rent=body.monthly_rent,
        household_size=body.household_size,
        requested_months=body.requested_months,
        submitted_by_role=principal.role.value,
        submitted_by_sub=principal.sub,
        submitted_by_member_id=principal.member_id,
        submitted_at=_now(),
    )
    session.add(app)
    await session.flush()
    return await _application_out(session, app, text_sealer_of(request))


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
    stmt = sa.select(RentBonusApplication).where(_readable(principal))
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
        app = await _load_application(session, application_id, principal)
        return await _application_out(session, app, text_sealer_of(request))


async def _committed(session: AsyncSession, municipality: str, year: int) -> tuple[Decimal, Decimal]:
    """(committed, paid) of a municipality's budget year: SUMs of its payments, never a counter."""
    row = (
        await session.execute(
            sa.select(
                sa.func.coalesce(sa.func.sum(PAYMENTS.c.amount), 0),
                sa.func.coalesce(sa.func.sum(PAYMENTS.c.amount).filter(PAYMENTS.c.status == "paid"), 0),
            ).where(
                PAYMENTS.c.municipality == municipality,
                PAYMENTS.c.month >= date(year, 1, 1),
                PAYMENTS.c.month < date(year + 1, 1, 1),
            )
        )
    ).one()
    return domain.cents(Decimal(row[0])), domain.cents(Decimal(row[1]))


async def _lock_budget(session: AsyncSession, municipality: str, year: int) -> RentBonusBudget | None:
    stmt = (
        sa.select(RentBonusBudget)
        .where(BUDGETS.c.municipality == municipality, BUDGETS.c.year == year)
        .with_for_update()
    )
    return (await session.execute(stmt)).scalar_one_or_none()


async def _require_budget(session: AsyncSession, municipality: str, start: date, months: int, amount: Decimal) -> None:
    """409 unless each calendar year's budget has room for its share of the approval.

    Budget rows are locked in year order: concurrent decisions queue here and never deadlock."""
    for year, share in domain.commitment_by_year(start, months, amount).items():
        budget = await _lock_budget(session, municipality, year)
        if budget is None:
            raise conflict(
                f"No rent-bonus budget is set for {year}.",
                type_="https://mkr.al/problems/budget-exhausted",
                year=year,
            )
        committed, _ = await _committed(session, municipality, year)
        left = domain.remaining(budget.amount, committed)
        if share > left:
            raise conflict(
                f"The {year} budget has {left} left; this approval needs {share}.",
                type_="https://mkr.al/problems/budget-exhausted",
                year=year,
                remaining=str(left),
                needed=str(share),
            )


@router.post("/applications/{application_id}/decision", response_model=ApplicationOut)
async def decide(
    application_id: uuid.UUID, body: Decision, principal: HousingOfficer, session: SessionDep, request: Request
) -> ApplicationOut:
    """Approve (one payment per month, each committed against its calendar year's budget) or reject; once."""
    if body.approved:
        for name in ("monthly_amount", "start_month", "months"):
            if getattr(body, name) is None:
                raise invalid(["body", name], "required when approved")
    elif body.reason is None:
        raise invalid(["body", "reason"], "required when rejected")
    async with session.begin():
        app = await _load_application(session, application_id, principal, for_update=True)
        if app.status != "pending":
            raise conflict(f"The application is already {app.status}.")
        now = _now()
        if body.approved:
            case = await session.get(CaseProjection, app.case_id)
            if case is not None and case.closed_at is not None:
                raise conflict("The case is closed; reopen it at intake first, or reject the application.")
            assert body.monthly_amount is not None and body.start_month is not None and body.months is not None
            start = domain.parse_month(body.start_month)
            await _require_budget(session, app.municipality, start, body.months, body.monthly_amount)
            months = domain.payment_months(start, body.months)
            for month in months:
                session.add(
                    RentBonusPayment(
                        application_id=app.id, municipality=app.municipality, month=month, amount=body.monthly_amount
                    )
                )
            app.status = "approved"
            app.monthly_amount = body.monthly_amount
            app.start_month = start
            app.months = body.months
            app.last_month = months[-1]
        else:
            app.status = "rejected"
        app.decision_reason = text_sealer_of(request).seal(
            "rent_bonus_applications", app.id, "decision_reason", body.reason
        )
        app.decided_at = now
        app.decided_by_sub = principal.sub
        await session.flush()
        case = await session.get(CaseProjection, app.case_id)
        await events.rent_bonus_decided(session, request.app.state.settings, app, case.case_number if case else None)
        out = await _application_out(session, app, text_sealer_of(request))
    return out


@router.post("/payments/{payment_id}/pay", response_model=PaymentOut)
async def pay(payment_id: uuid.UUID, principal: HousingOfficer, session: SessionDep, request: Request) -> PaymentOut:
    """Mark a payment paid; only once (again is 409)."""
    now = _now()
    async with session.begin():
        paid = (
            await session.execute(
                sa.update(PAYMENTS)
                .where(
                    PAYMENTS.c.id == payment_id,
                    PAYMENTS.c.municipality == principal.municipality,
                    PAYMENTS.c.status == "due",
                )
                .values(status="paid", paid_at=now, paid_by_sub=principal.sub)
                .returning(PAYMENTS.c.id)
            )
        ).first()
        payment = await session.get(RentBonusPayment, payment_id, populate_existing=True)
        if payment is None or payment.municipality != principal.municipality:
            raise not_found("payment")
        if paid is None:
            raise conflict("The payment is already paid.")
        app = await session.get(RentBonusApplication, payment.application_id)
        assert app is not None
        case = await session.get(CaseProjection, app.case_id)
        await events.payment_paid(
            session,
            request.app.state.settings,
            payment,
            case_id=app.case_id,
            case_number=case.case_number if case else None,
            paid_at=now,
        )
    return _payment_out(payment)


def _budget_out(budget: RentBonusBudget, committed: Decimal, paid: Decimal) -> BudgetOut:
    return BudgetOut(
        municipality=budget.municipality,
        year=budget.year,
        amount=budget.amount,
        committed=committed,
        paid=paid,
        remaining=domain.remaining(budget.amount, committed),
    )


@router.put("/budgets/{municipality}/{year}", response_model=BudgetOut)
async def set_budget(
    municipality: MunicipalityPath, year: Year, body: BudgetIn, principal: HousingOfficer, session: SessionDep
) -> BudgetOut:
    """Set the year's budget; 409 when it would fall below what is already committed."""
    if municipality != principal.municipality:
        raise not_found("budget")
    async with session.begin():
        await session.execute(
            pg_insert(BUDGETS)
            .values(municipality=municipality, year=year, amount=body.amount, updated_at=_now())
            .on_conflict_do_nothing()
        )
        budget = await _lock_budget(session, municipality, year)
        assert budget is not None
        committed, paid = await _committed(session, municipality, year)
        if body.amount < committed:
            raise conflict(
                f"{committed} is already committed in {year}; the budget cannot be lower.",
                committed=str(committed),
            )
        budget.amount = body.amount
        budget.updated_at = _now()
        await session.flush()
        return _budget_out(budget, committed, paid)


@router.get("/budgets/{municipality}/{year}", response_model=BudgetOut)
async def get_budget(
    municipality: MunicipalityPath, year: Year, principal: BudgetReader, session: SessionDep
) -> BudgetOut:
    if not principal.sees_municipality(municipality):
        raise not_found("budget")
    async with session.begin():
        budget = await session.get(RentBonusBudget, (municipality, year))
        if budget is None:
            raise Problem(404, f"No rent-bonus budget is set for {municipality} {year}.")
        committed, paid = await _committed(session, municipality, year)
        return _budget_out(budget, committed, paid)

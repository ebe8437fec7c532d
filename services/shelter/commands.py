"""The shelter's business transactions: registering a shelter, setting its beds, starting and ending a
placement, rent-bonus applications, decisions, payments and budgets.

Each command runs inside the caller's open transaction (`async with session.begin()`: the route's, where an
`Idempotency-Key` claim shares it) and writes its change and its events together; `register_shelter` alone
opens its own (it reads the directory first). Who may is checked here
with `access.py`; the rules without I/O are `domain.py`; the routes (api.py, rent_bonus.py) parse, call and
shape the answer. Errors are `shared.errors` problems (4xx), raised before anything is written or rolled back
with the transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.shelter import access, domain, events
from services.shelter.config import ShelterConfig
from services.shelter.contact import ContactSealer
from services.shelter.context import known_case
from services.shelter.models import (
    CaseProjection,
    DirectoryMember,
    Placement,
    RentBonusApplication,
    RentBonusBudget,
    RentBonusPayment,
    Shelter,
)
from services.shelter.schemas import ApplicationCreate, Decision, PlacementCreate, ShelterCreate
from shared.auth import Principal, require_own_municipality
from shared.db import table_of
from shared.errors import Problem, conflict, invalid, not_found
from shared.sealed import TextSealer
from shared.settings import Settings
from shared.vocab import MemberKind

SHELTERS = table_of(Shelter)
PAYMENTS = table_of(RentBonusPayment)
BUDGETS = table_of(RentBonusBudget)


def _now() -> datetime:
    return datetime.now(UTC)


async def _case_number(session: AsyncSession, case_id: uuid.UUID) -> str | None:
    case = await session.get(CaseProjection, case_id)
    return case.case_number if case else None


# --- the registry and beds -----------------------------------------------------------------------


async def _check_shelter_member(session: AsyncSession, member_id: str, municipality: str) -> None:
    """A shelter may claim only a directory member that exists, is active, is of kind `shelter` and of
    its own municipality (from referral's `member.saved`); otherwise staff could borrow the identity of
    the police or of another town's shelter and read the referrals addressed to it."""
    async with session.begin():
        member = await session.get(DirectoryMember, member_id)
    if member is None or member.municipality != municipality or member.kind != MemberKind.shelter or not member.active:
        raise invalid(["body", "member_id"], "not an active directory member of kind shelter in this municipality")


async def register_shelter(
    session: AsyncSession, settings: Settings, sealer: ContactSealer, principal: Principal, body: ShelterCreate
) -> Shelter:
    """A new shelter with its beds (all free unless `free_beds` says otherwise) and its first availability.
    Opens its own transactions: the session has none open."""
    require_own_municipality(principal, body.municipality)
    free = body.capacity if body.free_beds is None else body.free_beds
    if free > body.capacity:
        raise invalid(["body", "free_beds"], "free_beds may not exceed capacity")
    if body.member_id is not None:
        await _check_shelter_member(session, body.member_id, body.municipality)
    now = _now()
    shelter_id = uuid.uuid4()
    shelter = Shelter(
        id=shelter_id,
        municipality=body.municipality,
        name=body.name,
        operator=body.operator,
        kind=body.kind.value,
        capacity=body.capacity,
        free_beds=free,
        accepts_children=body.accepts_children,
        address=sealer.seal(shelter_id, "address", body.address),
        phone=sealer.seal(shelter_id, "phone", body.phone),
        member_id=body.member_id,
        version=1,
        created_at=now,
        updated_at=now,
    )
    async with session.begin():
        session.add(shelter)
        await session.flush()
        await events.availability_changed(session, settings, shelter, previous_free_beds=free)
    return shelter


async def set_free_beds(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    shelter_id: uuid.UUID,
    free_beds: int,
    if_match: str | None,
) -> Shelter:
    """Set the beds free right now. Optimistic concurrency: 428 without If-Match, 412 when it is stale."""
    shelter = await access.visible_shelter(session, shelter_id, principal, for_update=True)
    access.require_keeper_of(principal, shelter)
    if not if_match or not if_match.strip():
        raise Problem(428, "If-Match with the shelter's current ETag is required.")
    if free_beds > shelter.capacity:
        raise invalid(["body", "free_beds"], f"free_beds may not exceed the capacity ({shelter.capacity})")
    if not domain.if_match_allows(if_match, shelter.version):
        raise Problem(
            412,
            "The shelter changed since it was read; read it again.",
            headers={"ETag": domain.etag(shelter.version)},
        )
    previous = shelter.free_beds
    shelter.free_beds = free_beds
    shelter.version += 1
    shelter.updated_at = _now()
    await session.flush()
    if previous != shelter.free_beds:
        await events.availability_changed(session, settings, shelter, previous_free_beds=previous)
    return shelter


# --- placements ----------------------------------------------------------------------------------


def check_placement(body: PlacementCreate, today: date) -> int:
    """The beds a placement needs; 422 for none, or a planned end in the past (before any transaction)."""
    beds = body.adults + body.children
    if beds < 1:
        raise invalid(["body", "adults"], "a placement needs at least one bed")
    if body.planned_until < today:
        raise invalid(["body", "planned_until"], "planned_until may not be in the past")
    return beds


async def start_placement(
    session: AsyncSession, settings: Settings, config: ShelterConfig, principal: Principal, body: PlacementCreate
) -> tuple[Placement, CaseProjection | None]:
    """Take `adults + children` beds atomically; 409 when too few are free (never overbooks)."""
    beds = check_placement(body, date.today())
    shelter = await access.visible_shelter(session, body.shelter_id, principal)
    session.expunge(shelter)  # a snapshot: the beds change only through the conditional UPDATE below
    access.require_keeper_of(principal, shelter)
    if body.children > 0 and not shelter.accepts_children:
        raise conflict(
            "This shelter does not accept children.",
            type_="https://mkr.al/problems/children-not-accepted",
        )
    case = await known_case(session, body.case_id, shelter.municipality, config)
    # One conditional UPDATE: the row lock serialises racing placements, the WHERE refuses overbooking.
    now = _now()
    taken = (
        await session.execute(
            sa.update(SHELTERS)
            .where(SHELTERS.c.id == shelter.id, SHELTERS.c.free_beds >= beds)
            .values(free_beds=SHELTERS.c.free_beds - beds, version=SHELTERS.c.version + 1, updated_at=now)
            .returning(SHELTERS.c.free_beds, SHELTERS.c.version)
        )
    ).first()
    if taken is None:
        raise conflict(
            f"Too few free beds: {beds} needed.",
            type_="https://mkr.al/problems/no-free-bed",
            beds_needed=beds,
        )
    shelter.free_beds, shelter.version, shelter.updated_at = taken.free_beds, taken.version, now
    placement = Placement(
        municipality=shelter.municipality,
        shelter_id=shelter.id,
        case_id=body.case_id,
        adults=body.adults,
        children=body.children,
        planned_until=body.planned_until,
        started_at=now,
        created_by_sub=principal.sub,
    )
    session.add(placement)
    await session.flush()
    await events.placement_started(session, settings, placement, case.case_number if case else None)
    await events.availability_changed(session, settings, shelter, previous_free_beds=shelter.free_beds + beds)
    return placement, case


async def end_placement(
    session: AsyncSession,
    settings: Settings,
    sealer: TextSealer,
    principal: Principal,
    placement_id: uuid.UUID,
    reason: str,
) -> tuple[Placement, CaseProjection | None]:
    """End a placement and free its beds (never above capacity); a second discharge is 409."""
    placement = await access.visible_placement(session, placement_id, principal, for_update=True)
    if placement.ended_at is not None:
        raise conflict("The placement has already ended.")
    beds = placement.adults + placement.children
    now = _now()
    before = (
        await session.execute(
            sa.select(SHELTERS.c.free_beds).where(SHELTERS.c.id == placement.shelter_id).with_for_update()
        )
    ).scalar_one()
    # LEAST: staff may have counted these beds free already.
    await session.execute(
        sa.update(SHELTERS)
        .where(SHELTERS.c.id == placement.shelter_id)
        .values(
            free_beds=sa.func.least(SHELTERS.c.capacity, SHELTERS.c.free_beds + beds),
            version=SHELTERS.c.version + 1,
            updated_at=now,
        )
    )
    placement.ended_at = now
    placement.end_reason = sealer.seal("placements", placement.id, "end_reason", reason)
    await session.flush()
    case = await session.get(CaseProjection, placement.case_id)
    await events.placement_ended(session, settings, placement, case.case_number if case else None, reason)
    shelter = await session.get(Shelter, placement.shelter_id, populate_existing=True)
    assert shelter is not None
    if before != shelter.free_beds:
        await events.availability_changed(session, settings, shelter, previous_free_beds=before)
    return placement, case


# --- rent bonus: applications and decisions --------------------------------------------------------


async def submit_application(
    session: AsyncSession, config: ShelterConfig, principal: Principal, body: ApplicationCreate
) -> RentBonusApplication:
    """A pending application for a case of the caller's municipality (409 while the case is closed)."""
    require_own_municipality(principal, body.municipality)
    await known_case(session, body.case_id, body.municipality, config)
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
    return app


def check_decision(body: Decision) -> None:
    """An approval names its amount, start and months; a rejection its reason (422 otherwise)."""
    if body.approved:
        for name in ("monthly_amount", "start_month", "months"):
            if getattr(body, name) is None:
                raise invalid(["body", name], "required when approved")
    elif body.reason is None:
        raise invalid(["body", "reason"], "required when rejected")


async def decide_application(
    session: AsyncSession,
    settings: Settings,
    sealer: TextSealer,
    principal: Principal,
    application_id: uuid.UUID,
    body: Decision,
) -> RentBonusApplication:
    """Approve (one payment per month, each committed against its calendar year's budget) or reject; once."""
    check_decision(body)
    app = await access.readable_application(session, application_id, principal, for_update=True)
    if app.status != "pending":
        raise conflict(f"The application is already {app.status}.")
    if body.approved:
        await _approve(session, app, body)
    else:
        app.status = "rejected"
    app.decision_reason = sealer.seal("rent_bonus_applications", app.id, "decision_reason", body.reason)
    app.decided_at = _now()
    app.decided_by_sub = principal.sub
    await session.flush()
    await events.rent_bonus_decided(session, settings, app, await _case_number(session, app.case_id))
    return app


async def _approve(session: AsyncSession, app: RentBonusApplication, body: Decision) -> None:
    case = await session.get(CaseProjection, app.case_id)
    if case is not None and case.closed_at is not None:
        raise conflict("The case is closed; reopen it at intake first, or reject the application.")
    assert body.monthly_amount is not None and body.start_month is not None and body.months is not None
    start = domain.parse_month(body.start_month)
    await require_budget(session, app.municipality, start, body.months, body.monthly_amount)
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


# --- rent bonus: payments and budgets ------------------------------------------------------------


async def pay(
    session: AsyncSession, settings: Settings, principal: Principal, payment_id: uuid.UUID
) -> RentBonusPayment:
    """Mark a due payment of the caller's municipality paid; only once (again is 409)."""
    now = _now()
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
    if payment is None or not access.may_handle_payment(principal, payment):
        raise not_found("payment")
    if paid is None:
        raise conflict("The payment is already paid.")
    app = await session.get(RentBonusApplication, payment.application_id)
    assert app is not None
    await events.payment_paid(
        session,
        settings,
        payment,
        case_id=app.case_id,
        case_number=await _case_number(session, app.case_id),
        paid_at=now,
    )
    return payment


async def budget_totals(session: AsyncSession, municipality: str, year: int) -> tuple[Decimal, Decimal]:
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


async def require_budget(session: AsyncSession, municipality: str, start: date, months: int, amount: Decimal) -> None:
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
        committed, _ = await budget_totals(session, municipality, year)
        left = domain.remaining(budget.amount, committed)
        if share > left:
            raise conflict(
                f"The {year} budget has {left} left; this approval needs {share}.",
                type_="https://mkr.al/problems/budget-exhausted",
                year=year,
                remaining=str(left),
                needed=str(share),
            )


@dataclass(frozen=True)
class BudgetState:
    budget: RentBonusBudget
    committed: Decimal
    paid: Decimal


async def set_budget(
    session: AsyncSession, principal: Principal, municipality: str, year: int, amount: Decimal
) -> BudgetState:
    """Set the year's budget; 409 when it would fall below what is already committed."""
    access.require_budget_holder(principal, municipality)
    await session.execute(
        pg_insert(BUDGETS)
        .values(municipality=municipality, year=year, amount=amount, updated_at=_now())
        .on_conflict_do_nothing()
    )
    budget = await _lock_budget(session, municipality, year)
    assert budget is not None
    committed, paid = await budget_totals(session, municipality, year)
    if amount < committed:
        raise conflict(
            f"{committed} is already committed in {year}; the budget cannot be lower.",
            committed=str(committed),
        )
    budget.amount = amount
    budget.updated_at = _now()
    await session.flush()
    return BudgetState(budget, committed, paid)


async def read_budget(session: AsyncSession, principal: Principal, municipality: str, year: int) -> BudgetState:
    access.require_budget_reader(principal, municipality)
    budget = await session.get(RentBonusBudget, (municipality, year))
    if budget is None:
        raise Problem(404, f"No rent-bonus budget is set for {municipality} {year}.")
    committed, paid = await budget_totals(session, municipality, year)
    return BudgetState(budget, committed, paid)

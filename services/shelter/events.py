"""What the shelter service publishes, and its projection of intake's cases. No identities (§9)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.shelter import domain, erasure, transfers
from services.shelter.models import (
    CaseProjection,
    DirectoryMember,
    Placement,
    RentBonusApplication,
    RentBonusPayment,
    Shelter,
)
from shared.contracts import events as contract
from shared.db import table_of
from shared.dispatch import EventHandlers, Received, events_alone
from shared.events import Envelope, emit
from shared.settings import Settings


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


async def availability_changed(
    session: AsyncSession, settings: Settings, shelter: Shelter, *, previous_free_beds: int
) -> None:
    """`shelter.availability_changed`, and `shelter.full` when the last bed was just taken."""
    facts: dict[str, Any] = {
        "shelter_id": shelter.id,
        "member_id": shelter.member_id,
        "kind": shelter.kind,
        "capacity": shelter.capacity,
        "free_beds": shelter.free_beds,
        "accepts_children": shelter.accepts_children,
    }
    where: dict[str, Any] = {"subject": str(shelter.id), "municipality": shelter.municipality}
    await emit(session, settings, contract.ShelterAvailabilityChanged(**facts), **where)
    if shelter.free_beds == 0 and previous_free_beds > 0:
        await emit(session, settings, contract.ShelterFull(**facts), **where)


async def placement_started(
    session: AsyncSession, settings: Settings, placement: Placement, case_number: str | None
) -> None:
    data = contract.PlacementStarted(
        placement_id=placement.id,
        case_id=placement.case_id,
        case_number=case_number,
        shelter_id=placement.shelter_id,
        adults=placement.adults,
        children=placement.children,
        planned_until=placement.planned_until,
        started_at=placement.started_at,
    )
    await emit(session, settings, data, subject=str(placement.case_id), municipality=placement.municipality)


async def placement_ended(
    session: AsyncSession, settings: Settings, placement: Placement, case_number: str | None, reason: str
) -> None:
    """`reason` is the discharge text as given (stored sealed); the event carries only its code."""
    assert placement.ended_at is not None
    data = contract.PlacementEnded(
        placement_id=placement.id,
        case_id=placement.case_id,
        case_number=case_number,
        shelter_id=placement.shelter_id,
        adults=placement.adults,
        children=placement.children,
        ended_at=placement.ended_at,
        reason=domain.event_reason(reason),
    )
    await emit(session, settings, data, subject=str(placement.case_id), municipality=placement.municipality)


async def rent_bonus_decided(
    session: AsyncSession, settings: Settings, app: RentBonusApplication, case_number: str | None
) -> None:
    approved = app.status == "approved"
    total = app.monthly_amount * app.months if approved and app.monthly_amount and app.months else None
    data = contract.RentBonusDecided(
        application_id=app.id,
        case_id=app.case_id,
        case_number=case_number,
        approved=approved,
        monthly_amount=_money(app.monthly_amount) if approved else None,
        start_month=domain.format_month(app.start_month) if approved and app.start_month else None,
        months=app.months if approved else None,
        total=_money(total),
    )
    await emit(session, settings, data, subject=str(app.case_id), municipality=app.municipality)


def _payment_facts(payment: RentBonusPayment, case_id: uuid.UUID, case_number: str | None) -> dict[str, Any]:
    return {
        "application_id": payment.application_id,
        "payment_id": payment.id,
        "case_id": case_id,
        "case_number": case_number,
        "month": domain.format_month(payment.month),
        "amount": _money(payment.amount),
    }


async def payment_due(
    session: AsyncSession, settings: Settings, payment: RentBonusPayment, *, case_id: uuid.UUID,
    case_number: str | None,
) -> None:
    """`rent_bonus.payment_due` (the scheduler)."""
    data = contract.RentBonusPaymentDue(**_payment_facts(payment, case_id, case_number))
    await emit(session, settings, data, subject=str(case_id), municipality=payment.municipality)


async def payment_paid(
    session: AsyncSession, settings: Settings, payment: RentBonusPayment, *, case_id: uuid.UUID,
    case_number: str | None, paid_at: datetime,
) -> None:
    """`rent_bonus.payment_paid` (an addition, for reports)."""
    data = contract.RentBonusPaymentPaid(**_payment_facts(payment, case_id, case_number), paid_at=paid_at)
    await emit(session, settings, data, subject=str(case_id), municipality=payment.municipality)


async def rent_bonus_ending(
    session: AsyncSession, settings: Settings, app: RentBonusApplication, case_number: str | None
) -> None:
    assert app.last_month is not None
    data = contract.RentBonusEnding(
        application_id=app.id,
        case_id=app.case_id,
        case_number=case_number,
        last_month=domain.format_month(app.last_month),
    )
    await emit(session, settings, data, subject=str(app.case_id), municipality=app.municipality)


# --- consumed -----------------------------------------------------------------------------------


# The projection's upsert of a reported case, built once: one prepared statement, a batch's reports in one
# executemany (`project_reports`).
_CASES = table_of(CaseProjection)
_REPORTED = pg_insert(_CASES)
_CASE_UPSERT = _REPORTED.on_conflict_do_update(
    index_elements=[_CASES.c.case_id],
    set_={
        "case_number": _REPORTED.excluded.case_number,
        "needs": _REPORTED.excluded.needs,
        "children_count": _REPORTED.excluded.children_count,
    },
)
# session.info's key of the events `project_reports` applied ahead (their handlers then skip them).
_PREPARED = "shelter.reported_cases"


def _case_row(event: Received[contract.CaseReported]) -> dict[str, Any]:
    """{case_id, case_number, municipality, needs, children_count} of a reported case."""
    data = event.data
    return {
        "case_id": data.case_id,
        "case_number": data.case_number,
        "municipality": event.municipality,
        "needs": list(data.needs),
        "children_count": data.children_count,
    }


async def project_reports(session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
    """The consumer's batch hook: the batch's `case.reported` of cases no other event of the batch names, kept
    in one executemany instead of a statement each (shared.dispatch.events_alone)."""
    reports = events_alone(envelopes, contract.CaseReported)
    if len(reports) < 2:
        return
    await session.execute(_CASE_UPSERT, [_case_row(r) for r in reports])
    session.info[_PREPARED] = {r.id for r in reports}


async def _case_reported(session: AsyncSession, event: Received[contract.CaseReported]) -> None:
    """Keep {case_id, case_number, municipality, needs, children_count} of each reported case."""
    if event.id not in session.info.get(_PREPARED, ()):
        await session.execute(_CASE_UPSERT, _case_row(event))


async def _member_saved(session: AsyncSession, event: Received[contract.MemberSaved]) -> None:
    """Keep each directory member's kind, municipality and whether it is active (the newest event wins)."""
    data = event.data
    table = table_of(DirectoryMember)
    stmt = pg_insert(table).values(
        member_id=str(data.member_id), municipality=event.municipality, kind=data.kind, active=data.active,
        saved_at=event.time,
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[table.c.member_id],
            set_={name: stmt.excluded[name] for name in ("municipality", "kind", "active", "saved_at")},
            where=table.c.saved_at <= stmt.excluded.saved_at,
        )
    )


async def _case_closed(session: AsyncSession, event: Received[contract.CaseClosed]) -> None:
    await _set_closed(session, event.data.case_id, event.data.closed_at or event.time)


async def _case_reopened(session: AsyncSession, event: Received[contract.CaseReopened]) -> None:
    await _set_closed(session, event.data.case_id, None)


async def _case_transferred(session: AsyncSession, event: Received[contract.CaseTransferred]) -> None:
    await transfers.on_case_transferred(session, event.envelope)


async def _case_anonymised(session: AsyncSession, event: Received[contract.CaseAnonymised]) -> None:
    await erasure.on_case_anonymised(session, event.envelope)


async def _set_closed(session: AsyncSession, case_id: uuid.UUID, closed_at: datetime | None) -> None:
    """`case.closed` sets, `case.reopened` clears `closed_at` (events of one case arrive in order)."""
    table = table_of(CaseProjection)
    await session.execute(sa.update(table).where(table.c.case_id == case_id).values(closed_at=closed_at))


# The consumer's registry: intake's cases; referral's directory (`member.saved`), to check a shelter's `member_id`.
HANDLERS = EventHandlers({
    contract.CaseReported: _case_reported,
    contract.CaseClosed: _case_closed,
    contract.CaseReopened: _case_reopened,
    contract.MemberSaved: _member_saved,
    contract.CaseTransferred: _case_transferred,
    contract.CaseAnonymised: _case_anonymised,
}, prepare=project_reports)
CONSUMED_TOPICS = HANDLERS.topics


def make_handler(settings: Settings) -> EventHandlers:
    return HANDLERS

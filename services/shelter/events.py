"""What the shelter service publishes, and its projection of intake's cases. No identities (§9)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
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
from shared.db import table_of
from shared.events import INTAKE_TOPIC, REFERRAL_TOPIC, SHELTER_TOPIC, Envelope, make_event, publish
from shared.settings import Settings

SOURCE = "mkr/shelter"
# Intake's cases; referral's directory (`member.saved`), to check a shelter's `member_id`.
CONSUMED_TOPICS = (INTAKE_TOPIC, REFERRAL_TOPIC)


async def _emit(
    session: AsyncSession, settings: Settings, type_: str, *, key: str, municipality: str, data: dict[str, Any]
) -> None:
    event = make_event(type_=type_, source=SOURCE, subject=key, municipality=municipality, data=data)
    await publish(session, settings, SHELTER_TOPIC, event, key=key)


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


async def availability_changed(
    session: AsyncSession, settings: Settings, shelter: Shelter, *, previous_free_beds: int
) -> None:
    """`shelter.availability_changed`, and `shelter.full` when the last bed was just taken."""
    data = {
        "shelter_id": str(shelter.id),
        "member_id": shelter.member_id,
        "kind": shelter.kind,
        "capacity": shelter.capacity,
        "free_beds": shelter.free_beds,
        "accepts_children": shelter.accepts_children,
    }
    key = str(shelter.id)
    await _emit(
        session, settings, "shelter.availability_changed", key=key, municipality=shelter.municipality, data=data
    )
    if shelter.free_beds == 0 and previous_free_beds > 0:
        await _emit(session, settings, "shelter.full", key=key, municipality=shelter.municipality, data=data)


async def placement_started(
    session: AsyncSession, settings: Settings, placement: Placement, case_number: str | None
) -> None:
    data = {
        "placement_id": str(placement.id),
        "case_id": str(placement.case_id),
        "case_number": case_number,
        "shelter_id": str(placement.shelter_id),
        "adults": placement.adults,
        "children": placement.children,
        "planned_until": placement.planned_until.isoformat(),
        "started_at": placement.started_at.isoformat(),
    }
    key = str(placement.case_id)
    await _emit(session, settings, "placement.started", key=key, municipality=placement.municipality, data=data)


async def placement_ended(
    session: AsyncSession, settings: Settings, placement: Placement, case_number: str | None, reason: str
) -> None:
    """`reason` is the discharge text as given (stored sealed); the event carries only its code."""
    assert placement.ended_at is not None
    data = {
        "placement_id": str(placement.id),
        "case_id": str(placement.case_id),
        "case_number": case_number,
        "shelter_id": str(placement.shelter_id),
        "adults": placement.adults,
        "children": placement.children,
        "ended_at": placement.ended_at.isoformat(),
        "reason": domain.event_reason(reason),
    }
    key = str(placement.case_id)
    await _emit(session, settings, "placement.ended", key=key, municipality=placement.municipality, data=data)


async def rent_bonus_decided(
    session: AsyncSession, settings: Settings, app: RentBonusApplication, case_number: str | None
) -> None:
    approved = app.status == "approved"
    total = app.monthly_amount * app.months if approved and app.monthly_amount and app.months else None
    data = {
        "application_id": str(app.id),
        "case_id": str(app.case_id),
        "case_number": case_number,
        "approved": approved,
        "monthly_amount": _money(app.monthly_amount) if approved else None,
        "start_month": domain.format_month(app.start_month) if approved and app.start_month else None,
        "months": app.months if approved else None,
        "total": _money(total),
    }
    key = str(app.case_id)
    await _emit(session, settings, "rent_bonus.decided", key=key, municipality=app.municipality, data=data)


async def payment_event(
    session: AsyncSession,
    settings: Settings,
    type_: str,
    payment: RentBonusPayment,
    *,
    case_id: uuid.UUID,
    case_number: str | None,
    paid_at: datetime | None = None,
) -> None:
    """`rent_bonus.payment_due` (scheduler) or `rent_bonus.payment_paid` (an addition, for reports)."""
    data: dict[str, Any] = {
        "application_id": str(payment.application_id),
        "payment_id": str(payment.id),
        "case_id": str(case_id),
        "case_number": case_number,
        "month": domain.format_month(payment.month),
        "amount": _money(payment.amount),
    }
    if paid_at is not None:
        data["paid_at"] = paid_at.isoformat()
    await _emit(session, settings, type_, key=str(case_id), municipality=payment.municipality, data=data)


async def rent_bonus_ending(
    session: AsyncSession, settings: Settings, app: RentBonusApplication, case_number: str | None
) -> None:
    assert app.last_month is not None
    data = {
        "application_id": str(app.id),
        "case_id": str(app.case_id),
        "case_number": case_number,
        "last_month": domain.format_month(app.last_month),
    }
    await _emit(session, settings, "rent_bonus.ending", key=str(app.case_id), municipality=app.municipality, data=data)


# --- consumed -----------------------------------------------------------------------------------


def make_handler(settings: Settings) -> Callable[[AsyncSession, Envelope], Awaitable[None]]:
    async def handle(session: AsyncSession, event: Envelope) -> None:
        """Keep {case_id, case_number, municipality, needs} of each reported case and whether it is closed."""
        if event.type == "member.saved":
            await _member_saved(session, event)
            return
        if event.type in ("case.closed", "case.reopened"):
            await _closed(session, event)
            return
        if event.type == "case.transferred":
            await transfers.on_case_transferred(session, event)
            return
        if event.type == "case.anonymised":
            await erasure.on_case_anonymised(session, event)
            return
        if event.type != "case.reported":
            return
        data = event.data
        try:
            case_id = uuid.UUID(str(data["case_id"]))
            case_number = str(data["case_number"])
        except (KeyError, ValueError):
            return
        needs = [str(n) for n in data.get("needs") or [] if isinstance(n, str)]
        children = data.get("children_count")
        values = {
            "case_id": case_id,
            "case_number": case_number,
            "municipality": event.municipality,
            "needs": needs,
            "children_count": children if isinstance(children, int) else None,
        }
        table = table_of(CaseProjection)
        stmt = pg_insert(table).values(**values)
        await session.execute(
            stmt.on_conflict_do_update(
                index_elements=[table.c.case_id],
                set_={
                    "case_number": stmt.excluded.case_number,
                    "needs": stmt.excluded.needs,
                    "children_count": stmt.excluded.children_count,
                },
            )
        )

    return handle


async def _member_saved(session: AsyncSession, event: Envelope) -> None:
    """Keep each directory member's kind, municipality and whether it is active (the newest event wins)."""
    data = event.data
    member_id, kind, active = data.get("member_id"), data.get("kind"), data.get("active")
    if not isinstance(member_id, str) or not isinstance(kind, str) or not isinstance(active, bool):
        return
    table = table_of(DirectoryMember)
    stmt = pg_insert(table).values(
        member_id=member_id, municipality=event.municipality, kind=kind, active=active, saved_at=event.time
    )
    await session.execute(
        stmt.on_conflict_do_update(
            index_elements=[table.c.member_id],
            set_={name: stmt.excluded[name] for name in ("municipality", "kind", "active", "saved_at")},
            where=table.c.saved_at <= stmt.excluded.saved_at,
        )
    )


async def _closed(session: AsyncSession, event: Envelope) -> None:
    """`case.closed` sets, `case.reopened` clears `closed_at` (events of one case arrive in order)."""
    try:
        case_id = uuid.UUID(str(event.data.get("case_id", event.subject)))
    except ValueError:
        return
    closed_at: datetime | None = None
    if event.type == "case.closed":
        try:
            closed_at = datetime.fromisoformat(str(event.data.get("closed_at")))
        except ValueError:
            closed_at = event.time
        if closed_at.tzinfo is None:
            closed_at = event.time
    table = table_of(CaseProjection)
    await session.execute(sa.update(table).where(table.c.case_id == case_id).values(closed_at=closed_at))

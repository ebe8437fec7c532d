"""Referral's projections of other services' facts: intake's cases (`case_facts`, `protection_orders`)
and shelter's shelters, placements and rent bonuses, for routing, plans, the dashboard and reports.

Handlers run inside the consumer's transaction (`consumer.py`), after the event id was recorded; each
is an upsert or a guarded update, so a redelivered event sets the same values again.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.referral.models import (
    CaseFact,
    Placement,
    ProtectionOrder,
    RentBonus,
    RentBonusPayment,
    ShelterMember,
)
from shared.contracts import EventRejected
from shared.contracts import events as contract
from shared.dispatch import Received, events_alone
from shared.events import Envelope


def _month(value: str | None) -> date | None:
    if not value:
        return None
    return date.fromisoformat(value + "-01" if len(value) == 7 else value)


def _member_uuid(value: str | None) -> uuid.UUID | None:
    """A shelter's directory member id; one that is not a UUID makes the event unusable here."""
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise EventRejected("invalid_data") from None


def _money(value: str | None) -> Decimal:
    return Decimal(value or "0")


def codes(values: Any) -> list[str]:
    return [str(value) for value in values]


async def _upsert(
    session: AsyncSession, model: Any, key: str, values: dict[str, Any], *, update: Iterable[str] | None = None
) -> None:
    """Insert the row, or where one with its `key` exists set `update` of the values (all of them by
    default; none: the row stays as it is)."""
    insert = pg_insert(model).values(**values)
    changes = {name: values[name] for name in (values if update is None else update)}
    statement = (
        insert.on_conflict_do_update(index_elements=[key], set_=changes) if changes else insert.on_conflict_do_nothing()
    )
    await session.execute(statement)


# --- intake's cases ------------------------------------------------------------------------------------

# A report (or a repeated one) sets every projected fact but `closed_at`; built once, compiled once.
_case_insert = pg_insert(CaseFact)
_CASE_UPSERT = _case_insert.on_conflict_do_update(
    index_elements=["case_id"],
    set_={
        name: _case_insert.excluded[name]
        for name in CaseFact.model_fields
        if name not in ("case_id", "closed_at", "reported_municipality", "repeat")  # repeat: only link events
    },
).returning(
    # A row inserted by this statement (none there before) has xmax 0; one the conflict updated has the
    # updating transaction's.
    CaseFact, sa.literal_column("xmax = 0", type_=sa.Boolean).label("fresh")
)


def _case_facts(event: Received[contract.CaseReported]) -> dict[str, Any]:
    d = event.data
    return {
        "case_id": d.case_id,
        "case_number": d.case_number,
        "municipality": event.municipality,
        "reported_municipality": event.municipality,
        "reported_at": d.reported_at or event.time,
        "status": "open",
        "risk_level": str(d.risk_level),
        "source": d.source,
        "sex": None if d.sex is None else str(d.sex),
        "age_group": None if d.age_group is None else str(d.age_group),
        "ethnicity": d.ethnicity,
        "disability": d.disability,
        "violence_types": codes(d.violence_types),
        "perpetrator_relationship": d.perpetrator_relationship,
        "needs": codes(d.needs),
        "children_count": d.children_count or len(d.children_ages),
        # No consent given (or an older producer without the field): only the legal exceptions apply.
        "consent_share_with": codes(d.consent_share_with),
        "reported_by_role": d.reported_by_role,
        "reported_by_member_id": d.reported_by_member_id,
        "pending_duplicates": d.pending_duplicates,
    }


async def project_case_reported(
    session: AsyncSession, event: Received[contract.CaseReported]
) -> tuple[CaseFact, bool, bool]:
    """The case as reported, upserted; the projection row as stored, without reading it back; whether
    this statement inserted it (True: the case was not known here before); and whether the batch's
    `project_reports` upserted it already (True: no other event of the consumer's batch names the case)."""
    prepared: dict[uuid.UUID, tuple[CaseFact, bool]] = session.info.get(_PREPARED, {})
    if (done := prepared.pop(event.id, None)) is not None:
        return done[0], done[1], True
    row = (
        await session.execute(_CASE_UPSERT, _case_facts(event), execution_options={"populate_existing": True})
    ).one()
    return row[0], bool(row[1]), False


# session.info's key of the cases `project_reports` upserted: event id → (the row as stored, inserted).
_PREPARED = "referral.reported_cases"


async def project_reports(session: AsyncSession, envelopes: Sequence[Envelope]) -> None:
    """The consumer's batch hook: the batch's `case.reported` of cases that no other event of the batch
    names, upserted in one statement (one round trip, one run of the rollup triggers, instead of one each);
    their handlers then route them as usual (`project_case_reported` hands them the rows).

    A case another event of the batch names (a second report, a closure, a transfer...) is left to its
    handler, in the batch's order: only effects independent of the batch's order are done ahead.
    """
    reports = events_alone(envelopes, contract.CaseReported)
    if len(reports) < 2:
        return
    rows = (
        await session.execute(
            _CASE_UPSERT, [_case_facts(r) for r in reports], execution_options={"populate_existing": True}
        )
    ).all()
    by_case = {row[0].case_id: (row[0], bool(row[1])) for row in rows}
    session.info[_PREPARED] = {r.id: by_case[r.data.case_id] for r in reports}


async def on_case_closed(session: AsyncSession, event: Received[contract.CaseClosed]) -> None:
    case = await session.get(CaseFact, event.data.case_id, with_for_update=True)
    if case is not None:
        case.status = "closed"
        case.closed_at = event.data.closed_at or event.time
        await session.flush()


async def on_case_reopened(session: AsyncSession, event: Received[contract.CaseReopened]) -> None:
    case = await session.get(CaseFact, event.data.case_id, with_for_update=True)
    if case is not None:
        case.status = "open"
        case.closed_at = None
        await session.flush()


async def on_links_changed(session: AsyncSession, event: Received[contract.CaseLinksChanged]) -> None:
    """`case.linked` / `case.unlinked` carry the case's state after the decision: applied as it is (a
    redelivery sets the same values). A raised risk comes as its own `case.risk_assessed`."""
    await session.execute(
        sa.update(CaseFact)
        .where(col(CaseFact.case_id) == event.data.case_id)
        .values(repeat=event.data.repeat, pending_duplicates=event.data.pending_duplicates)
    )


async def on_facts_corrected(session: AsyncSession, event: Received[contract.CaseFactsCorrected]) -> None:
    """A corrected date of birth moved the case to another age group: the projection (and through its
    triggers the monthly rollups the reports read) follows. Routing does not read the age group."""
    await session.execute(
        sa.update(CaseFact)
        .where(col(CaseFact.case_id) == event.data.case_id)
        .values(age_group=str(event.data.age_group))
    )


async def on_protection_order(session: AsyncSession, event: Received[contract.ProtectionOrderRecorded]) -> None:
    d = event.data
    values = {
        "order_id": d.order_id,
        "case_id": d.case_id,
        "case_number": d.case_number or "",
        "municipality": event.municipality,
        "kind": d.kind,
        "status": d.status or "issued",
        "issued_at": d.issued_at,
        "expires_at": d.expires_at,
    }
    await _upsert(session, ProtectionOrder, "order_id", values)


# --- shelter's facts -----------------------------------------------------------------------------------


async def on_shelter(session: AsyncSession, event: Received[contract.ShelterAvailability]) -> None:
    values = {
        "shelter_id": event.data.shelter_id,
        "member_id": _member_uuid(event.data.member_id),
        "municipality": event.municipality,
    }
    await _upsert(session, ShelterMember, "shelter_id", values)


async def on_placement_started(session: AsyncSession, event: Received[contract.PlacementStarted]) -> None:
    d = event.data
    values = {
        "placement_id": d.placement_id,
        "case_id": d.case_id,
        "municipality": event.municipality,
        "shelter_id": d.shelter_id,
        "adults": d.adults,
        "children": d.children,
        "started_at": d.started_at or event.time,
    }
    await _upsert(session, Placement, "placement_id", values, update=())


async def on_placement_ended(session: AsyncSession, event: Received[contract.PlacementEnded]) -> None:
    await session.execute(
        sa.update(Placement)
        .where(col(Placement.placement_id) == event.data.placement_id)
        .values(ended_at=event.data.ended_at or event.time)
    )


async def on_rent_bonus_decided(session: AsyncSession, event: Received[contract.RentBonusDecided]) -> None:
    d = event.data
    values = {
        "application_id": d.application_id,
        "case_id": d.case_id,
        "municipality": event.municipality,
        "approved": d.approved,
        "monthly_amount": _money(d.monthly_amount),
        "start_month": _month(d.start_month),
        "months": d.months or 0,
    }
    await _upsert(session, RentBonus, "application_id", values)


def _payment(event: Received[contract.RentBonusPaymentDue] | Received[contract.RentBonusPaymentPaid]) -> dict[str, Any]:
    d = event.data
    return {
        "payment_id": d.payment_id,
        "application_id": d.application_id,
        "case_id": d.case_id,
        "municipality": event.municipality,
        "month": _month(d.month),
        "amount": _money(d.amount),
    }


async def on_payment_due(session: AsyncSession, event: Received[contract.RentBonusPaymentDue]) -> None:
    await _upsert(session, RentBonusPayment, "payment_id", _payment(event), update=())


async def on_payment_paid(session: AsyncSession, event: Received[contract.RentBonusPaymentPaid]) -> None:
    """A payment marked paid: counts in the report's paid_amount."""
    values = {**_payment(event), "paid_at": event.data.paid_at or event.time}
    await _upsert(session, RentBonusPayment, "payment_id", values, update=("paid_at",))

"""What intake publishes (coded facts only, never identities — CONTRACT §9) and consumes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.models import Case, ProtectionOrder, ReferralAccess
from shared.db import table_of
from shared.events import INTAKE_TOPIC, Envelope, make_event, publish
from shared.settings import Settings

SOURCE = "mkr/intake"


async def _emit(
    session: AsyncSession, settings: Settings, case: Case, type_: str, data: dict[str, Any]
) -> uuid.UUID:
    event = make_event(
        type_=type_,
        source=SOURCE,
        subject=str(case.id),
        municipality=case.municipality,
        data={"case_id": str(case.id), "case_number": case.case_number, **data},
    )
    await publish(session, settings, INTAKE_TOPIC, event, key=str(case.id))
    return event.id


async def case_reported(session: AsyncSession, settings: Settings, case: Case, share_with: list[str]) -> uuid.UUID:
    """The event's id (the case number in it may still be the placeholder; see services/intake/numbering.py)."""
    facts = case.facts
    children = facts.get("children", [])
    return await _emit(
        session,
        settings,
        case,
        "case.reported",
        {
            "source": case.source,
            "reported_at": case.reported_at.isoformat(),
            "risk_level": case.risk_level,
            "sex": facts.get("sex"),
            "age_group": facts.get("age_group", "unknown"),
            "ethnicity": facts.get("ethnicity"),
            "disability": facts.get("disability"),
            "violence_types": facts.get("violence_types", []),
            "perpetrator_relationship": facts.get("perpetrator_relationship"),
            "needs": facts.get("needs", []),
            "children_count": len(children),
            "children_ages": [child["age"] for child in children],
            "consent_share_with": share_with,
            "reported_by_role": case.reported_by_role,
            "reported_by_member_id": case.reported_by_member_id,
        },
    )


async def case_risk_assessed(
    session: AsyncSession,
    settings: Settings,
    case: Case,
    *,
    previous: str,
    yes_count: int,
    red_flags: list[str],
) -> None:
    await _emit(
        session,
        settings,
        case,
        "case.risk_assessed",
        {
            "risk_level": case.risk_level,
            "previous_risk_level": previous,
            "yes_count": yes_count,
            "red_flags": red_flags,
        },
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


async def protection_order_recorded(
    session: AsyncSession, settings: Settings, case: Case, order: ProtectionOrder
) -> None:
    await _emit(
        session,
        settings,
        case,
        "case.protection_order_recorded",
        {
            "order_id": str(order.id),
            "kind": order.kind,
            "status": order.status,
            "issued_at": _iso(order.issued_at),
            "expires_at": _iso(order.expires_at),
        },
    )


async def consent_changed(
    session: AsyncSession, settings: Settings, case: Case, *, share_with: list[str], withdrawn: list[str]
) -> None:
    await _emit(session, settings, case, "case.consent_changed", {"share_with": share_with, "withdrawn": withdrawn})


async def case_closed(session: AsyncSession, settings: Settings, case: Case) -> None:
    await _emit(session, settings, case, "case.closed", {"closed_at": _iso(case.closed_at)})


async def case_reopened(session: AsyncSession, settings: Settings, case: Case) -> None:
    await _emit(session, settings, case, "case.reopened", {})


async def case_anonymised(session: AsyncSession, settings: Settings, case: Case, *, cause: str) -> None:
    """The case was erased (`request`) or passed retention (`retention`): every service erases its free text."""
    await _emit(session, settings, case, "case.anonymised", {"cause": cause, "erased_at": _iso(case.erased_at)})


async def risk_review_requested(
    session: AsyncSession, settings: Settings, case: Case, *, proposed: str, assessed_by_role: str
) -> None:
    """A reassessment by someone other than the coordinator would have lowered the level: kept, not
    applied, and the coordinator asked to review it (CONTRACT §2)."""
    await _emit(
        session,
        settings,
        case,
        "case.risk_review_requested",
        {"risk_level": case.risk_level, "proposed_risk_level": proposed, "assessed_by_role": assessed_by_role},
    )


# The referral life cycle as stages: a status only ever moves to a later stage, so applying the latest
# stage seen is order-safe (a late `created` never undoes a `cancelled`). The last stage is final.
REFERRAL_STAGES = {"pending": 0, "acknowledged": 1, "accepted": 2, "completed": 3, "declined": 3, "cancelled": 3}


async def on_referral_event(session: AsyncSession, event: Envelope) -> None:
    """`referral.created` and `referral.status_changed` → what each referral lets its institution read.

    Idempotent (an upsert) and order-safe: a referral's row only moves to a later stage of its life cycle."""
    if event.type not in ("referral.created", "referral.status_changed"):
        return
    data = event.data
    status = str(data.get("status") or ("pending" if event.type == "referral.created" else ""))
    if status not in REFERRAL_STAGES:
        return
    try:
        referral_id = uuid.UUID(str(data["referral_id"]))
        case_id = uuid.UUID(str(data["case_id"]))
        member_id = str(data["to_member_id"])
    except (KeyError, ValueError):
        return
    table = table_of(ReferralAccess)
    stage = REFERRAL_STAGES[status]
    insert = pg_insert(table).values(
        referral_id=referral_id,
        case_id=case_id,
        member_id=member_id,
        status=status,
        stage=stage,
        updated_at=datetime.now(UTC),
    )
    await session.execute(
        insert.on_conflict_do_update(
            index_elements=[table.c.referral_id],
            set_={"status": insert.excluded.status, "stage": insert.excluded.stage,
                  "updated_at": insert.excluded.updated_at},
            where=table.c.stage < insert.excluded.stage,
        )
    )

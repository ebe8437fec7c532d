"""What intake publishes (coded facts only, never identities — CONTRACT §9) and consumes."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake.models import Case, ProtectionOrder, ReferralAccess
from shared.contracts import events as contract
from shared.db import table_of
from shared.dispatch import EventHandlers, Received
from shared.events import emit
from shared.settings import Settings
from shared.vocab import MemberKind, RiskLevel


async def _emit(session: AsyncSession, settings: Settings, case: Case, data: contract.CaseEventData) -> uuid.UUID:
    envelope = await emit(session, settings, data, subject=str(case.id), municipality=case.municipality)
    return envelope.id


def case_reported(
    case: Mapping[str, Any], share_with: list[str], pending_duplicates: int = 0
) -> contract.CaseReported:
    """`case.reported` of a new case's row (`cases` columns); its case number may still be the placeholder, the
    report's last statement numbers the event with the case (services/intake/numbering.py)."""
    facts = case["facts"]
    children = facts.get("children", [])
    return contract.CaseReported(
        case_id=case["id"],
        case_number=case["case_number"],
        source=case["source"],
        reported_at=case["reported_at"],
        risk_level=RiskLevel(case["risk_level"]),
        sex=facts.get("sex"),
        age_group=facts.get("age_group", "unknown"),
        ethnicity=facts.get("ethnicity"),
        disability=facts.get("disability"),
        violence_types=facts.get("violence_types", []),
        perpetrator_relationship=facts.get("perpetrator_relationship"),
        needs=facts.get("needs", []),
        children_count=len(children),
        children_ages=[child["age"] for child in children],
        consent_share_with=[MemberKind(kind) for kind in share_with],
        reported_by_role=case["reported_by_role"],
        reported_by_member_id=case["reported_by_member_id"],
        pending_duplicates=pending_duplicates,
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
    data = contract.CaseRiskAssessed(
        case_id=case.id,
        case_number=case.case_number,
        risk_level=RiskLevel(case.risk_level),
        previous_risk_level=RiskLevel(previous),
        yes_count=yes_count,
        red_flags=red_flags,
    )
    await _emit(session, settings, case, data)


async def protection_order_recorded(
    session: AsyncSession, settings: Settings, case: Case, order: ProtectionOrder
) -> None:
    data = contract.ProtectionOrderRecorded(
        case_id=case.id,
        case_number=case.case_number,
        order_id=order.id,
        kind=order.kind,
        status=order.status,
        issued_at=order.issued_at,
        expires_at=order.expires_at,
    )
    await _emit(session, settings, case, data)


async def consent_changed(
    session: AsyncSession, settings: Settings, case: Case, *, share_with: list[str], withdrawn: list[str]
) -> None:
    data = contract.ConsentChanged(
        case_id=case.id,
        case_number=case.case_number,
        share_with=[MemberKind(kind) for kind in share_with],
        withdrawn=[MemberKind(kind) for kind in withdrawn],
    )
    await _emit(session, settings, case, data)


async def case_closed(session: AsyncSession, settings: Settings, case: Case) -> None:
    data = contract.CaseClosed(case_id=case.id, case_number=case.case_number, closed_at=case.closed_at)
    await _emit(session, settings, case, data)


async def case_reopened(session: AsyncSession, settings: Settings, case: Case) -> None:
    await _emit(session, settings, case, contract.CaseReopened(case_id=case.id, case_number=case.case_number))


async def case_anonymised(session: AsyncSession, settings: Settings, case: Case, *, cause: str) -> None:
    """The case was erased (`request`) or passed retention (`retention`): every service erases its free text."""
    data = contract.CaseAnonymised(
        case_id=case.id, case_number=case.case_number, cause=cause, erased_at=case.erased_at  # type: ignore[arg-type]
    )
    await _emit(session, settings, case, data)


async def case_facts_corrected(session: AsyncSession, settings: Settings, case: Case) -> None:
    """A corrected date of birth moved the case to another age group: reports elsewhere follow."""
    data = contract.CaseFactsCorrected(
        case_id=case.id, case_number=case.case_number, age_group=case.facts.get("age_group", "unknown")
    )
    await _emit(session, settings, case, data)


async def risk_review_requested(
    session: AsyncSession, settings: Settings, case: Case, *, proposed: str, assessed_by_role: str
) -> None:
    """A reassessment by someone other than the coordinator would have lowered the level: kept, not
    applied, and the coordinator asked to review it (CONTRACT §2)."""
    data = contract.RiskReviewRequested(
        case_id=case.id,
        case_number=case.case_number,
        risk_level=RiskLevel(case.risk_level),
        proposed_risk_level=RiskLevel(proposed),
        assessed_by_role=assessed_by_role,
    )
    await _emit(session, settings, case, data)


async def case_links_changed(
    session: AsyncSession,
    settings: Settings,
    case: Case,
    type_: str,
    *,
    repeat_of: uuid.UUID | None,
    linked_count: int,
    pending_duplicates: int,
) -> None:
    """`case.linked` / `case.unlinked`: the case's state after the coordinator's duplicate decision (or its
    undoing). Flags and counts only: never which other case, let alone whose (CONTRACT §10)."""
    model = {"case.linked": contract.CaseLinked, "case.unlinked": contract.CaseUnlinked}[type_]
    await _emit(
        session,
        settings,
        case,
        model(
            case_id=case.id, case_number=case.case_number, repeat=repeat_of is not None,
            linked_count=linked_count, pending_duplicates=pending_duplicates,
        ),
    )


# The referral life cycle as stages: a status only ever moves to a later stage, so applying the latest
# stage seen is order-safe (a late `created` never undoes a `cancelled`). The last stage is final.
REFERRAL_STAGES = {"pending": 0, "acknowledged": 1, "accepted": 2, "completed": 3, "declined": 3, "cancelled": 3}


async def _referral_access(
    session: AsyncSession, event: Received[contract.ReferralCreated] | Received[contract.ReferralStatusChanged]
) -> None:
    """`referral.created` and `referral.status_changed` → what each referral lets its institution read.

    Idempotent (an upsert) and order-safe: a referral's row only moves to a later stage of its life cycle."""
    data = event.data
    status = data.status
    if status not in REFERRAL_STAGES:
        return
    table = table_of(ReferralAccess)
    stage = REFERRAL_STAGES[status]
    insert = pg_insert(table).values(
        referral_id=data.referral_id,
        case_id=data.case_id,
        member_id=data.to_member_id,
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


# Intake's consumer: who may see a case, from referral's events.
on_referral_event = EventHandlers(
    {contract.ReferralCreated: _referral_access, contract.ReferralStatusChanged: _referral_access}
)

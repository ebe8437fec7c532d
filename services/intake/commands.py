"""Intake's business transactions on an existing case: assessing its risk, recording a protection order,
changing consent, closing and reopening it, and configuring the risk screen.

Each command runs inside the caller's open transaction (`async with session.begin()`) and writes the change,
its audit row and its event together. Who may is checked here with `access.py` (a case the caller may not
see is a 404 `CaseHidden`); the rules without I/O are `domain.py`; the routes (api.py) parse, call and shape
the answer. Reporting a case is `casefile.create_case`; erasing it `erasure.erase`; transfers `transfers.py`.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import access, casefile, casekeys, domain, events, service
from services.intake.models import Case, ConsentRecord, ProtectionOrder, RiskAssessment, RiskScreenConfig
from services.intake.schemas import (
    CaseStatus,
    ConsentChange,
    ProtectionOrderIn,
    RiskAssessmentIn,
    RiskScreenIn,
)
from shared.auth import Principal
from shared.crypto import FieldCipher
from shared.errors import Problem, conflict
from shared.settings import Settings


@dataclass(frozen=True)
class Assessed:
    """What an assessment did: the row, the case's level before, and whether the coordinator must review."""

    assessment: RiskAssessment
    case: Case
    previous: str
    result: domain.RiskResult
    review: bool


async def assess_risk(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    case_id: uuid.UUID,
    body: RiskAssessmentIn,
    default_screen: domain.RiskScreen,
) -> Assessed:
    """Score the answers on the municipality's screen and keep the assessment. CONTRACT §2: only the
    coordinator lowers a level; anyone else's lower result is kept in the history (the assessment row),
    the level stays, and the coordinator is asked to review it (`case.risk_review_requested`)."""
    case = await access.get_visible_case(session, principal, case_id, for_update=True)
    screen = await service.load_screen(session, case.municipality, default_screen)
    if unknown := domain.unknown_answers(screen, body.risk_answers):
        raise Problem(
            422,
            "The request has invalid fields.",
            errors=[{"loc": ["body", "risk_answers", qid], "msg": "unknown risk question"} for qid in unknown],
        )
    judgement = body.professional_judgement.value if body.professional_judgement else None
    result = domain.score_risk(screen, body.risk_answers, judgement)
    assessment = casefile.new_assessment(case.id, body.risk_answers, result, judgement, principal, datetime.now(UTC))
    session.add(assessment)
    previous = case.risk_level
    lowers = domain.LEVELS.index(result.risk_level) < domain.LEVELS.index(previous)
    review = lowers and not access.may_lower_risk(principal)
    if not review:
        case.risk_level = result.risk_level
    session.add(case)
    await session.flush()
    await service.record_audit(session, principal, case, "case.risk_assessed")
    if review:
        await events.risk_review_requested(
            session, settings, case, proposed=result.risk_level, assessed_by_role=principal.role.value
        )
    elif previous != result.risk_level:
        await events.case_risk_assessed(
            session, settings, case, previous=previous, yes_count=result.yes_count, red_flags=result.red_flags
        )
    return Assessed(assessment, case, previous, result, review)


async def record_protection_order(
    session: AsyncSession, settings: Settings, principal: Principal, case_id: uuid.UUID, body: ProtectionOrderIn
) -> ProtectionOrder:
    case = await access.get_visible_case(session, principal, case_id, for_update=True)
    order = ProtectionOrder(
        case_id=case.id,
        kind=body.kind.value,
        status=body.status.value,
        issued_at=body.issued_at,
        expires_at=body.expires_at,
        court=body.court,
        reference=body.reference,
        recorded_at=datetime.now(UTC),
        recorded_by_sub=principal.sub,
        recorded_by_role=principal.role.value,
    )
    session.add(order)
    await session.flush()
    await service.record_audit(session, principal, case, "case.protection_order_recorded")
    await events.protection_order_recorded(session, settings, case, order)
    return order


async def change_consent(
    session: AsyncSession, settings: Settings, principal: Principal, case_id: uuid.UUID, body: ConsentChange
) -> tuple[Case, list[ConsentRecord]]:
    """Give (`share_with`) or withdraw consent per recipient kind; returns the case and its whole history."""
    case = await access.get_visible_case(session, principal, case_id, for_update=True)
    access.require_consent_changer(principal, case)
    now = datetime.now(UTC)
    for kinds, given in ((body.share_with, True), (body.withdraw, False)):
        for kind in sorted(set(kinds)):
            session.add(
                ConsentRecord(
                    case_id=case.id,
                    kind=kind.value,
                    given=given,
                    at=now,
                    recorded_by_sub=principal.sub,
                    recorded_by_role=principal.role.value,
                )
            )
    await session.flush()
    records = await service.case_records(session, case.id)
    share_with, _ = service.current_consent(records.consents)
    await service.record_audit(session, principal, case, "case.consent_changed")
    await events.consent_changed(
        session, settings, case, share_with=share_with, withdrawn=sorted({kind.value for kind in body.withdraw})
    )
    return case, records.consents


async def close_case(
    session: AsyncSession,
    settings: Settings,
    cipher: FieldCipher,
    principal: Principal,
    case_id: uuid.UUID,
    reason: str,
) -> Case:
    """Close an open case; its reason is sealed under the case's key. Closing twice is 409."""
    case = await access.get_visible_case(session, principal, case_id, for_update=True)
    if case.status == CaseStatus.closed:
        raise conflict("The case is already closed.")
    case.status = CaseStatus.closed.value
    case.closed_at = datetime.now(UTC)
    writable = await casekeys.writable(session, cipher, case)
    case.close_reason = writable.encrypt(reason, casefile.personal_context(case.id, "close_reason"))
    session.add(case)
    await session.flush()
    await service.record_audit(session, principal, case, "case.closed")
    await events.case_closed(session, settings, case)
    return case


async def reopen_case(session: AsyncSession, settings: Settings, principal: Principal, case_id: uuid.UUID) -> Case:
    """Reopen a closed case (its close reason goes); an open one is 409."""
    case = await access.get_visible_case(session, principal, case_id, for_update=True)
    if case.status != CaseStatus.closed:
        raise conflict("Only a closed case can be reopened.")
    case.status = CaseStatus.open.value
    case.closed_at = None
    case.close_reason = None
    session.add(case)
    await session.flush()
    await service.record_audit(session, principal, case, "case.reopened")
    await events.case_reopened(session, settings, case)
    return case


async def configure_risk_screen(session: AsyncSession, principal: Principal, body: RiskScreenIn) -> domain.RiskScreen:
    """The caller's municipality's risk screen (the route admits the coordinator), replacing the last one."""
    row = await session.get(RiskScreenConfig, principal.municipality, with_for_update=True)
    values: dict[str, Any] = {
        "questions": [q.model_dump() for q in body.questions],
        "high_yes_count": body.high_yes_count,
        "medium_yes_count": body.medium_yes_count,
        "escalation_cases": body.escalation_cases,
        "escalation_window_days": body.escalation_window_days,
        "updated_at": datetime.now(UTC),
        "updated_by_sub": principal.sub,
    }
    if row is None:
        row = RiskScreenConfig(municipality=principal.municipality, **values)
    else:
        for name, value in values.items():
            setattr(row, name, value)
    session.add(row)
    return domain.RiskScreen(
        questions=tuple((q.id, q.red_flag) for q in body.questions),
        high_yes_count=body.high_yes_count,
        medium_yes_count=body.medium_yes_count,
        escalation_cases=body.escalation_cases,
        escalation_window_days=body.escalation_window_days,
    )

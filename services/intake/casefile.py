"""A case file: persisting a report, and shaping a case for the caller who reads it."""

from __future__ import annotations

import functools
import json
import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import access, casekeys, domain, events, linking, numbering, service
from services.intake.casekeys import CaseCipher
from services.intake.config import IntakeConfig
from services.intake.models import Case, ConsentRecord, ProtectionOrder, RiskAssessment, SurvivorIndex
from services.intake.schemas import (
    CaseCreated,
    CaseOut,
    CaseReport,
    CaseStatus,
    ConsentOut,
    ErasedSurvivor,
    IncidentOut,
    PossibleDuplicate,
    ProtectionOrderOut,
    RiskAssessmentOut,
    RiskLevel,
    SurvivorOut,
)
from services.intake.schemas import ConsentRecord as ConsentRecordOut
from shared.auth import Principal, Role
from shared.crypto import FieldCipher, SearchIndexer
from shared.settings import Settings


def personal_context(case_id: uuid.UUID, field: str) -> str:
    """Associated data of a ciphertext: it opens only as this field of this case."""
    return f"intake:case:{case_id}:{field}"


async def create_case(
    session: AsyncSession,
    *,
    settings: Settings,
    cipher: FieldCipher,
    indexer: SearchIndexer,
    principal: Principal,
    body: CaseReport,
    reported_at: datetime,
    local_day: date,
    screen: domain.RiskScreen,
    config: IntakeConfig,
) -> CaseCreated:
    """Store a validated report (encrypted identity, coded facts, search index, consent, first
    assessment), find possible duplicates and publish, then — last, so their locks are held for one
    statement and the commit — take the case number and audit (numbering.py); all in the caller's transaction."""
    survivor = body.survivor
    incident = body.incident
    age = survivor.age
    if survivor.date_of_birth is not None:
        age = domain.age_on(survivor.date_of_birth, local_day)
    result = domain.score_risk(screen, body.risk_answers or {})
    case_id = uuid.uuid4()
    personal = {
        "first_name": survivor.first_name,
        "last_name": survivor.last_name,
        "date_of_birth": survivor.date_of_birth.isoformat() if survivor.date_of_birth else None,
        "phone": survivor.phone,
        "address": survivor.address,
        "description": incident.description if incident else None,
    }
    facts = {
        "sex": survivor.sex.value,
        "age": age,
        "age_group": domain.age_group(age),
        "ethnicity": survivor.ethnicity.value if survivor.ethnicity else None,
        "disability": survivor.disability,
        "children": [child.model_dump(mode="json") for child in body.children],
        "occurred_at": incident.occurred_at.isoformat() if incident and incident.occurred_at else None,
        "violence_types": sorted({v.value for v in incident.violence_types}) if incident else [],
        "perpetrator_relationship": (
            incident.perpetrator_relationship.value if incident and incident.perpetrator_relationship else None
        ),
        "needs": sorted({n.value for n in body.needs}),
        "consent_given_at": body.consent.given_at.isoformat() if body.consent and body.consent.given_at else None,
    }
    case_cipher = casekeys.new_cipher(cipher)
    case = Case(
        id=case_id,
        municipality=body.municipality,
        case_number=numbering.placeholder(case_id),  # numbered by the last statement (numbering.py)
        source=body.source.value,
        risk_level=result.risk_level,
        facts=facts,
        personal=case_cipher.encrypt(json.dumps(personal), personal_context(case_id, "personal")),
        reported_at=reported_at,
        reported_by_sub=principal.sub,
        reported_by_role=principal.role.value,
        reported_by_member_id=principal.member_id,
        created_at=datetime.now(UTC),
    )
    session.add(case)
    casekeys.store(session, case_cipher, case_id)
    keys = indexer.keyed(f"{survivor.first_name} {survivor.last_name}", body.municipality)
    birth_year = (
        survivor.date_of_birth.year if survivor.date_of_birth else (local_day.year - age if age is not None else None)
    )
    birth_key = indexer.token(survivor.date_of_birth.isoformat(), body.municipality) if survivor.date_of_birth else None
    session.add(
        SurvivorIndex(
            case_id=case_id,
            municipality=body.municipality,
            name_keys=keys,
            birth_year=birth_year,
            birth_date_key=birth_key,
            key_id=indexer.key_id,
        )
    )
    if body.risk_answers is not None:
        session.add(new_assessment(case_id, body.risk_answers, result, None, principal, datetime.now(UTC)))
    share_with = sorted({kind.value for kind in body.consent.share_with}) if body.consent else []
    consent_at = (body.consent.given_at if body.consent else None) or reported_at
    for kind in share_with:
        session.add(
            ConsentRecord(
                case_id=case_id,
                kind=kind,
                given=True,
                at=consent_at,
                recorded_by_sub=principal.sub,
                recorded_by_role=principal.role.value,
            )
        )
    await session.flush()
    search = functools.partial(
        service.possible_duplicates,
        session,
        viewer=principal,
        municipality=body.municipality,
        keys=keys,
        birth_year=birth_year,
        birth_date_key=birth_key,
        under=service.probes(indexer, f"{survivor.first_name} {survivor.last_name}", body.municipality,
                             survivor.date_of_birth.isoformat() if survivor.date_of_birth else None),
        exclude=case_id,
        threshold=config.duplicate_threshold,
        limit=config.max_duplicates,
    )
    # Every possible duplicate awaits the coordinator's decision; the reporter is shown only those she may read.
    candidates = await search(everything=True)
    duplicates = candidates if principal.role is Role.coordinator else await search()
    await linking.record_candidates(session, case, candidates)
    event_id = await events.case_reported(session, settings, case, share_with, pending_duplicates=len(candidates))
    prefix = domain.case_prefix(body.municipality, config.case_prefixes)
    await numbering.number_case(
        session, case=case, year=local_day.year, prefix=prefix, event_id=event_id, principal=principal,
        at=datetime.now(UTC),
    )
    return CaseCreated(
        id=case.id,
        case_number=case.case_number,
        municipality=case.municipality,
        status=CaseStatus.open,
        risk_level=RiskLevel(case.risk_level),
        source=body.source,
        reported_at=case.reported_at,
        possible_duplicates=[PossibleDuplicate(id=d.id, case_number=d.case_number, score=d.score) for d in duplicates],
    )


def new_assessment(
    case_id: uuid.UUID,
    answers: dict[str, bool],
    result: domain.RiskResult,
    judgement: str | None,
    principal: Principal,
    at: datetime,
) -> RiskAssessment:
    return RiskAssessment(
        case_id=case_id,
        answers=answers,
        yes_count=result.yes_count,
        red_flags=result.red_flags,
        computed_level=result.computed_level,
        professional_judgement=judgement,
        risk_level=result.risk_level,
        assessed_at=at,
        assessed_by_sub=principal.sub,
        assessed_by_role=principal.role.value,
    )


def open_personal(cipher: CaseCipher, case: Case) -> dict[str, Any] | None:
    """The case's identity and narrative; None once the case is erased."""
    if case.erased_at is not None:
        return None
    value: dict[str, Any] = json.loads(cipher.decrypt(case.personal, personal_context(case.id, "personal")))
    return value


def survivor_out(case: Case, personal: dict[str, Any] | None) -> SurvivorOut | ErasedSurvivor:
    if personal is None:
        return ErasedSurvivor()
    facts = case.facts
    return SurvivorOut(
        first_name=personal["first_name"],
        last_name=personal["last_name"],
        sex=facts["sex"],
        date_of_birth=personal.get("date_of_birth"),
        age=facts.get("age"),
        age_group=facts.get("age_group", "unknown"),
        ethnicity=facts.get("ethnicity"),
        phone=personal.get("phone"),
        address=personal.get("address"),
        disability=facts.get("disability"),
    )


def case_out(
    cipher: CaseCipher,
    principal: Principal,
    case: Case,
    records: service.CaseRecords,
    links: linking.LinkState | None = None,
) -> CaseOut:
    """The case as this caller may see it (the narrative only for the coordinator and the reporter; the
    other cases of the same person and the possible duplicates only for the coordinator)."""
    personal = open_personal(cipher, case)
    facts = case.facts
    sees_narrative = access.sees_narrative(principal, case)
    close_reason = (
        cipher.decrypt(case.close_reason, personal_context(case.id, "close_reason")) if case.close_reason else None
    )
    return CaseOut(
        id=case.id,
        case_number=case.case_number,
        municipality=case.municipality,
        status=CaseStatus(case.status),
        risk_level=RiskLevel(case.risk_level),
        source=case.source,  # type: ignore[arg-type]
        reported_at=case.reported_at,
        survivor=survivor_out(case, personal),
        children=facts.get("children", []),
        incident=IncidentOut(
            occurred_at=facts.get("occurred_at"),
            violence_types=facts.get("violence_types", []),
            perpetrator_relationship=facts.get("perpetrator_relationship"),
            description=personal.get("description") if sees_narrative and personal else None,
        ),
        needs=facts.get("needs", []),
        consent=consent_out(records.consents, facts.get("consent_given_at")),
        protection_orders=[order_out(o) for o in records.orders],
        risk_assessments=[
            RiskAssessmentOut(
                id=a.id,
                risk_level=RiskLevel(a.risk_level),
                computed_level=RiskLevel(a.computed_level),
                professional_judgement=RiskLevel(a.professional_judgement) if a.professional_judgement else None,
                yes_count=a.yes_count,
                red_flags=a.red_flags,
                answers=a.answers,
                assessed_at=a.assessed_at,
                assessed_by_role=a.assessed_by_role,
            )
            for a in records.assessments
        ],
        closed_at=case.closed_at,
        close_reason=close_reason if access.sees_coordinator_detail(principal) else None,
        **_links_out(principal, links),
    )


def _links_out(principal: Principal, links: linking.LinkState | None) -> dict[str, Any]:
    if links is None:
        return {}
    repeat_of = links.repeat_of
    if not access.sees_coordinator_detail(principal):
        return {"repeat": repeat_of is not None}
    return {
        "repeat": repeat_of is not None,
        "repeat_of": repeat_of,
        "linked_case_ids": [c.id for c in links.linked],
        "possible_duplicates": [PossibleDuplicate(id=m.id, case_number=m.case_number, score=m.score)
                                for m in links.possible],
    }


def consent_out(records: list[ConsentRecord], given_at: str | None) -> ConsentOut:
    share_with, withdrawn = service.current_consent(records)
    return ConsentOut(
        share_with=share_with,  # type: ignore[arg-type]
        withdrawn=withdrawn,  # type: ignore[arg-type]
        given_at=given_at,  # type: ignore[arg-type]
        history=[
            ConsentRecordOut(
                kind=r.kind,  # type: ignore[arg-type]
                given=r.given,
                at=r.at,
                recorded_by_sub=r.recorded_by_sub,
                recorded_by_role=r.recorded_by_role,
            )
            for r in records
        ],
    )


def order_out(order: ProtectionOrder) -> ProtectionOrderOut:
    return ProtectionOrderOut.model_validate(order, from_attributes=True)

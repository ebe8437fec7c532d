"""A case file: persisting a report, and shaping a case for the caller who reads it."""

from __future__ import annotations

import functools
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import access, casekeys, domain, events, linking, numbering, search_index, service
from services.intake.casekeys import CaseCipher
from services.intake.config import IntakeConfig
from services.intake.keystore import KeyStore
from services.intake.models import Case, ConsentRecord, ProtectionOrder, RiskAssessment
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
from shared import db
from shared.auth import Principal, Role
from shared.crypto import FieldCipher, SearchIndexer
from shared.events import event_of, outbox_row
from shared.idempotency import IdempotentRequest
from shared.settings import Settings


def personal_context(case_id: uuid.UUID, field: str) -> str:
    """Associated data of a ciphertext: it opens only as this field of this case."""
    return f"intake:case:{case_id}:{field}"


# A report's rows in one statement (data-modifying CTEs run once and to completion, their foreign keys
# checked at the statement's end), then the key census for its duplicate search (search_index.CENSUS_SELECT,
# which also makes the search's plan custom): the report's first write, one round trip.
STORE_REPORT_SQL = sa.text(
    """
    WITH new_case AS (
        INSERT INTO cases (id, municipality, case_number, status, risk_level, source, facts, personal,
                           reported_at, reported_by_sub, reported_by_role, reported_by_member_id, created_at)
        VALUES (:case_id, :m, :case_number, 'open', :risk_level, :source, CAST(:facts AS jsonb), :personal,
                :reported_at, :sub, :role, :member_id, :created_at)
        RETURNING id
    ), new_index AS (
        INSERT INTO survivor_index (case_id, municipality, name_keys, birth_year, birth_date_key, key_id)
        VALUES (:case_id, :m, CAST(:keys AS text[]), :birth_year, :birth_date_key, :key_id)
    ), new_assessment AS (
        INSERT INTO risk_assessments (id, case_id, answers, yes_count, red_flags, computed_level,
                                      professional_judgement, risk_level, assessed_at, assessed_by_sub,
                                      assessed_by_role)
        SELECT :assessment_id, :case_id, CAST(:answers AS jsonb), :yes_count, CAST(:red_flags AS jsonb),
               :computed_level, NULL, :risk_level, :created_at, :sub, :role
        WHERE CAST(:assessed AS boolean)
    ), new_consent AS (
        INSERT INTO consent_records (case_id, kind, given, at, recorded_by_sub, recorded_by_role)
        SELECT :case_id, kind, true, :consent_at, :sub, :role FROM unnest(CAST(:share_with AS text[])) AS kind
    )
    """
    + search_index.CENSUS_SELECT
)
_STORE_REPORT = db.DriverStatement(STORE_REPORT_SQL)  # run by asyncpg itself: the report's hottest path


@dataclass(frozen=True)
class Draft:
    """A report made into its rows (no I/O): the case's `cases` row and what STORE_REPORT_SQL writes beside it."""

    case: dict[str, Any]
    cipher: CaseCipher  # the case's fresh data key (stored in the key store before the rows are written)
    params: dict[str, Any]  # STORE_REPORT_SQL's parameters (the case row's included)
    keys: list[str]
    birth_year: int | None
    birth_date_key: str | None
    share_with: list[str]


async def create_case(
    session: AsyncSession,
    *,
    settings: Settings,
    keystore: KeyStore,
    indexer: SearchIndexer,
    principal: Principal,
    body: CaseReport,
    reported_at: datetime,
    local_day: date,
    screen: domain.RiskScreen,
    config: IntakeConfig,
    once: IdempotentRequest | None = None,
) -> CaseCreated:
    """Store a validated report (encrypted identity, coded facts, search index, consent, first
    assessment), find possible duplicates and publish, then — last, so their locks are held for one
    statement and the commit — take the case number and audit (numbering.py); all in the caller's transaction.

    The data key first, in the key store (its own database); then three round trips (Core statements, no ORM
    objects): the rows and the key census (STORE_REPORT_SQL),
    the duplicate search (both lists at once), and the last statement (number, event, candidates, audit, and
    under an Idempotency-Key the answer `once` replays, stored with its claim)."""
    draft = draft_report(keystore.master, indexer, principal, body, reported_at, local_day, screen)
    case_id, municipality = draft.case["id"], body.municipality
    # The key first, committed in the key store: a data write that fails leaves an orphan key, never a case without one.
    await casekeys.store(keystore, draft.cipher, case_id)
    census = await _STORE_REPORT.fetch(session, draft.params)
    if indexer.previous is None:
        candidates, shown = await search_index.report_duplicates(
            session, viewer=principal, municipality=municipality, keys=draft.keys,
            probe=search_index.probe_of(census, draft.keys, config.duplicate_threshold), birth_year=draft.birth_year,
            birth_date_key=draft.birth_date_key, exclude=case_id, threshold=config.duplicate_threshold,
            limit=config.max_duplicates,
        )  # fmt: skip
    else:
        candidates, shown = await _duplicates_under_both_keys(session, indexer, principal, body, draft, config)
    # Every possible duplicate awaits the coordinator's decision; the reporter is shown only those she may read.
    data = events.case_reported(draft.case, draft.share_with, pending_duplicates=len(candidates))
    envelope = event_of(data, subject=str(case_id), municipality=municipality)
    created = CaseCreated(
        id=case_id,
        case_number=draft.case["case_number"],  # the placeholder until the last statement numbers the case
        municipality=municipality,
        status=CaseStatus.open,
        risk_level=RiskLevel(draft.case["risk_level"]),
        source=body.source,
        reported_at=reported_at,
        possible_duplicates=[PossibleDuplicate(id=d.id, case_number=d.case_number, score=d.score) for d in shown],
    )
    keyed = once is not None and once.key is not None  # only then is there an answer to store
    case_number = await numbering.number_case(session, numbering.Numbering(
        case_id=case_id, municipality=municipality, year=local_day.year,
        prefix=domain.case_prefix(municipality, config.case_prefixes), outbox=outbox_row(settings, envelope,
        str(case_id)), candidates=[(m.id, m.score) for m in candidates], principal=principal, at=datetime.now(UTC),
        answer=created.model_dump_json() if keyed else None, claim=once.row() if once else None,
    ))  # fmt: skip
    return created.model_copy(update={"case_number": case_number})


async def _duplicates_under_both_keys(
    session: AsyncSession, indexer: SearchIndexer, principal: Principal, body: CaseReport, draft: Draft,
    config: IntakeConfig,
) -> tuple[list[search_index.Match], list[search_index.Match]]:
    """While the index key changes (MKR_INDEX_KEY_PREVIOUS): the two searches under both keys, merged
    (search_index.possible_duplicates); the candidates, and what the reporter may read."""
    survivor = body.survivor
    search = functools.partial(
        search_index.possible_duplicates, session, viewer=principal, municipality=body.municipality,
        keys=draft.keys, birth_year=draft.birth_year, birth_date_key=draft.birth_date_key, exclude=draft.case["id"],
        threshold=config.duplicate_threshold, limit=config.max_duplicates,
        under=search_index.probes(indexer, f"{survivor.first_name} {survivor.last_name}", body.municipality,
                                  survivor.date_of_birth.isoformat() if survivor.date_of_birth else None),
    )  # fmt: skip
    candidates = await search(everything=True)
    return candidates, candidates if principal.role is Role.coordinator else await search()


def draft_report(
    cipher: FieldCipher,
    indexer: SearchIndexer,
    principal: Principal,
    body: CaseReport,
    reported_at: datetime,
    local_day: date,
    screen: domain.RiskScreen,
) -> Draft:
    """The report's rows: the case (identity sealed under a fresh data key, which the key store keeps wrapped
    by the master key), its search index, first assessment and consent, as STORE_REPORT_SQL's parameters."""
    survivor = body.survivor
    age = domain.age_on(survivor.date_of_birth, local_day) if survivor.date_of_birth is not None else survivor.age
    result = domain.score_risk(screen, body.risk_answers or {})
    case_id, now = uuid.uuid4(), datetime.now(UTC)
    case_cipher = casekeys.new_cipher(cipher)
    case = {
        "id": case_id, "case_number": numbering.placeholder(case_id),  # numbered by the last statement
        "source": body.source.value, "risk_level": result.risk_level, "facts": report_facts(body, age),
        "personal": case_cipher.encrypt(json.dumps(report_personal(body)), personal_context(case_id, "personal")),
        "reported_at": reported_at, "reported_by_role": principal.role.value,
        "reported_by_member_id": principal.member_id,
    }  # fmt: skip
    municipality = body.municipality
    keys = indexer.keyed(f"{survivor.first_name} {survivor.last_name}", municipality)
    birth_year = (
        survivor.date_of_birth.year if survivor.date_of_birth else (local_day.year - age if age is not None else None)
    )
    birth_key = indexer.token(survivor.date_of_birth.isoformat(), municipality) if survivor.date_of_birth else None
    share_with = sorted({kind.value for kind in body.consent.share_with}) if body.consent else []
    params = {
        **case, "case_id": case_id, "m": municipality, "facts": json.dumps(case["facts"]),
        "sub": principal.sub, "role": principal.role.value, "member_id": principal.member_id, "created_at": now,
        "keys": keys, "birth_year": birth_year,
        "birth_date_key": birth_key, "key_id": indexer.key_id, "share_with": share_with,
        "consent_at": (body.consent.given_at if body.consent else None) or reported_at,
        **_assessment_params(body.risk_answers, result),
    }  # fmt: skip
    return Draft(case, case_cipher, params, keys, birth_year, birth_key, share_with)


def _assessment_params(answers: dict[str, bool] | None, result: domain.RiskResult) -> dict[str, Any]:
    """STORE_REPORT_SQL's first assessment (written only when the report answered the risk screen)."""
    return {
        "assessed": answers is not None,
        "assessment_id": uuid.uuid4(),
        "answers": json.dumps(answers or {}),
        "yes_count": result.yes_count,
        "red_flags": json.dumps(result.red_flags),
        "computed_level": result.computed_level,
    }


def report_personal(body: CaseReport) -> dict[str, Any]:
    """The identity and narrative of a report (sealed as the case's `personal`)."""
    survivor, incident = body.survivor, body.incident
    return {
        "first_name": survivor.first_name,
        "last_name": survivor.last_name,
        "date_of_birth": survivor.date_of_birth.isoformat() if survivor.date_of_birth else None,
        "phone": survivor.phone,
        "address": survivor.address,
        "description": incident.description if incident else None,
    }


def report_facts(body: CaseReport, age: int | None) -> dict[str, Any]:
    """The coded facts of a report (the case's `facts`)."""
    survivor, incident = body.survivor, body.incident
    return {
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
    """The case's identity and narrative; None once the case is erased, or once its key is (the key
    store's half of an erasure whose data half is still to come: keystore.py)."""
    if case.erased_at is not None or (case.personal.startswith(f"{casekeys.CASE_KEY_ID}:") and not cipher.has_key):
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

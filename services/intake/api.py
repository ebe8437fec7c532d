"""HTTP routes of the intake service (CONTRACT §5)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from services.intake import access, casefile, casekeys, commands, domain, erasure, linking, service, transfers
from services.intake.config import IntakeConfig
from services.intake.keystore import KeyStore
from services.intake.models import RiskScreenConfig
from services.intake.schemas import (
    AuditEntry,
    CaseCreated,
    CaseOut,
    CasePage,
    CaseReport,
    CaseStatus,
    CaseSummary,
    CloseIn,
    ConsentChange,
    ConsentOut,
    ErasedOut,
    EraseIn,
    ProtectionOrderIn,
    ProtectionOrderOut,
    ReopenIn,
    RiskAssessmentIn,
    RiskAssessmentResult,
    RiskLevel,
    RiskQuestion,
    RiskScreenIn,
    RiskScreenOut,
    StatusOut,
    jsonable,
)
from shared import idempotency
from shared.auth import INSTITUTION_ROLES, Principal, Role, allow, require_own_municipality
from shared.crypto import FieldCipher, SearchIndexer
from shared.db import SessionDep
from shared.errors import Problem, conflict, forbidden, invalid
from shared.paging import Cursor, Limit, Page

router = APIRouter(prefix="/v1", tags=["cases"])
Reporter = Annotated[Principal, Depends(allow(Role.coordinator, INSTITUTION_ROLES))]
Coordinator = Annotated[Principal, Depends(allow(Role.coordinator))]
OrderRecorder = Annotated[Principal, Depends(allow(Role.coordinator, Role.police, Role.legal_aid))]
AuditReader = Annotated[Principal, Depends(allow(Role.coordinator, Role.auditor))]
CLOCK_SKEW = timedelta(minutes=2)


def _config(request: Request) -> IntakeConfig:
    config: IntakeConfig = request.app.state.intake_config
    return config


def _default_screen(request: Request) -> domain.RiskScreen:
    screen: domain.RiskScreen = request.app.state.default_screen
    return screen


def _cipher(request: Request) -> FieldCipher:
    cipher: FieldCipher = request.app.state.cipher
    return cipher


def _keys(request: Request) -> KeyStore:
    """The key store (services/intake/keystore.py): the per-case data keys, wrapped by the master key."""
    keys: KeyStore = request.app.state.keys
    return keys


def _indexer(request: Request) -> SearchIndexer:
    indexer: SearchIndexer = request.app.state.indexer
    return indexer


# --- reporting ---


@router.post(
    "/cases",
    status_code=201,
    response_model=CaseCreated,
    summary="Report a case (idempotent with Idempotency-Key)",
)
async def report_case(
    body: CaseReport,
    principal: Reporter,
    session: SessionDep,
    request: Request,
    idempotency_key: idempotency.IdempotencyKey = None,
) -> JSONResponse:
    require_own_municipality(principal, body.municipality)
    now = datetime.now(UTC)
    if body.reported_at is not None:
        if principal.role is not Role.coordinator:
            raise forbidden("Only the coordinator may set reported_at.")
        if body.reported_at > now + CLOCK_SKEW:
            raise invalid(["body", "reported_at"], "reported_at may not be in the future")
    reported_at = body.reported_at or now
    local_day = reported_at.astimezone(ZoneInfo(_config(request).timezone)).date()
    if body.survivor.date_of_birth is not None and body.survivor.date_of_birth > local_day:
        raise invalid(["body", "survivor", "date_of_birth"], "date_of_birth is after the report date")
    once = idempotency.IdempotentRequest.of(
        scope=body.municipality, caller=principal.sub, key=idempotency_key, body=body
    )
    config = _config(request)
    async with session.begin():
        screen = await service.load_screen(session, body.municipality, _default_screen(request))
        if body.risk_answers is not None and (unknown := domain.unknown_answers(screen, body.risk_answers)):
            raise Problem(
                422,
                "The request has invalid fields.",
                errors=[{"loc": ["body", "risk_answers", qid], "msg": "unknown risk question"} for qid in unknown],
            )
        if await once.claim(session):
            created = await casefile.create_case(
                session,
                settings=request.app.state.settings,
                keystore=_keys(request),
                indexer=_indexer(request),
                principal=principal,
                body=body,
                reported_at=reported_at,
                local_day=local_day,
                screen=screen,
                config=config,
                once=once,  # the answer is stored with the claim by the report's last statement
            )
            return JSONResponse(jsonable(created), status_code=201)
    return await once.replay(session)


# --- reading ---


@router.get("/cases/{case_id}", response_model=CaseOut, summary="A case (per CONTRACT §2 visibility)")
async def get_case(case_id: uuid.UUID, principal: Reporter, session: SessionDep, request: Request) -> CaseOut:
    async with session.begin():
        case = await service.get_visible_case(session, principal, case_id)
        records = await service.case_records(session, case.id)
        links = await linking.link_state(session, case)
        previous = await transfers.previous_case_numbers(session, case.id)
        # The read is logged and committed before any byte of the case leaves (no audit, no answer).
        await service.record_audit(session, principal, case, "case.read")
        cipher = await casekeys.cipher_for(_keys(request), case.id)
    return casefile.case_out(cipher, principal, case, records, links).model_copy(
        update={"previous_case_numbers": previous}
    )


@router.get("/cases", response_model=CasePage, summary="Search the municipality's cases (coordinator)")
async def list_cases(
    principal: Coordinator,
    session: SessionDep,
    request: Request,
    status: CaseStatus | None = None,
    risk_level: RiskLevel | None = None,
    q: Annotated[str | None, Query(min_length=1, max_length=100)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> CasePage:
    query = q.strip() if q else None
    indexer = _indexer(request)
    keys = indexer.keyed(query, principal.municipality) if query else []
    under = service.probes(indexer, query, principal.municipality, None) if query else []
    async with session.begin():
        page, next_cursor = await service.search_cases(
            session,
            municipality=principal.municipality,
            status=status.value if status else None,
            risk_level=risk_level.value if risk_level else None,
            q=query,
            keys=keys,
            threshold=_config(request).search_threshold,
            cursor=cursor,
            limit=limit,
            under=under,
        )
        await service.record_audit_many(session, principal, [case for case, _ in page], "case.listed")
        ciphers = await casekeys.ciphers(_keys(request), [case.id for case, _ in page])
    items = []
    for case, score in page:
        personal = casefile.open_personal(ciphers[case.id], case) or {}
        items.append(
            CaseSummary(
                id=case.id,
                case_number=case.case_number,
                status=CaseStatus(case.status),
                risk_level=RiskLevel(case.risk_level),
                source=case.source,  # type: ignore[arg-type]
                reported_at=case.reported_at,
                first_name=personal.get("first_name"),
                last_name=personal.get("last_name"),
                age_group=case.facts.get("age_group", "unknown"),
                score=score,
                erased=case.erased_at is not None,
            )
        )
    return CasePage(items=items, next_cursor=next_cursor)


# --- changes to a case ---


@router.post(
    "/cases/{case_id}/risk-assessments",
    status_code=201,
    response_model=RiskAssessmentResult,
    summary="Assess (or reassess) the risk",
)
async def assess_risk(
    case_id: uuid.UUID, body: RiskAssessmentIn, principal: Reporter, session: SessionDep, request: Request
) -> RiskAssessmentResult:
    async with session.begin():
        done = await commands.assess_risk(
            session, request.app.state.settings, principal, case_id, body, _default_screen(request)
        )
    return RiskAssessmentResult(
        id=done.assessment.id,
        risk_level=RiskLevel(done.case.risk_level),
        previous_risk_level=RiskLevel(done.previous),
        yes_count=done.result.yes_count,
        red_flags=done.result.red_flags,
        assessed_at=done.assessment.assessed_at,
        review_requested=done.review,
        proposed_risk_level=RiskLevel(done.result.risk_level) if done.review else None,
    )


@router.post(
    "/cases/{case_id}/protection-orders",
    status_code=201,
    response_model=ProtectionOrderOut,
    summary="Record an immediate (UMM) or ordinary (UM) protection order",
)
async def record_protection_order(
    case_id: uuid.UUID, body: ProtectionOrderIn, principal: OrderRecorder, session: SessionDep, request: Request
) -> ProtectionOrderOut:
    async with session.begin():
        order = await commands.record_protection_order(session, request.app.state.settings, principal, case_id, body)
    return casefile.order_out(order)


@router.post(
    "/cases/{case_id}/consent",
    response_model=ConsentOut,
    summary="Record or withdraw consent per recipient kind",
)
async def change_consent(
    case_id: uuid.UUID, body: ConsentChange, principal: Reporter, session: SessionDep, request: Request
) -> ConsentOut:
    async with session.begin():
        case, consents = await commands.change_consent(session, request.app.state.settings, principal, case_id, body)
    return casefile.consent_out(consents, case.facts.get("consent_given_at"))


@router.post("/cases/{case_id}/close", response_model=StatusOut, summary="Close a case with a reason")
async def close_case(
    case_id: uuid.UUID, body: CloseIn, principal: Coordinator, session: SessionDep, request: Request
) -> StatusOut:
    async with session.begin():
        case = await commands.close_case(
            session, request.app.state.settings, _keys(request), principal, case_id, body.reason
        )
    return StatusOut(id=case.id, case_number=case.case_number, status=CaseStatus.closed, closed_at=case.closed_at)


@router.post("/cases/{case_id}/reopen", response_model=StatusOut, summary="Reopen a closed case")
async def reopen_case(
    case_id: uuid.UUID, principal: Coordinator, session: SessionDep, request: Request, body: ReopenIn | None = None
) -> StatusOut:
    async with session.begin():
        case = await commands.reopen_case(session, request.app.state.settings, principal, case_id)
    return StatusOut(id=case.id, case_number=case.case_number, status=CaseStatus.open)


@router.post("/cases/{case_id}/erase", response_model=ErasedOut, summary="Erase the case's identity and free text")
async def erase_case(
    case_id: uuid.UUID, body: EraseIn, principal: Coordinator, session: SessionDep, request: Request
) -> ErasedOut:
    """A lawful erasure request: the case's data key is destroyed, its index and free text removed
    (the case keeps its number and coded facts); other services erase theirs on `case.anonymised`."""
    async with session.begin():
        case = await service.get_visible_case(session, principal, case_id, for_update=True)
        if case.erased_at is not None:
            raise conflict("The case is already erased.")
        await erasure.erase(
            session, request.app.state.settings, _keys(request), case,
            reason=body.reason, cause="request", sub=principal.sub, role=principal.role.value,
        )
        assert case.erased_at is not None
    return ErasedOut(id=case.id, case_number=case.case_number, erased_at=case.erased_at)


# --- audit trail and the risk screen ---


@router.get("/audit", response_model=Page[AuditEntry], summary="Who read or changed a case, when (oldest first)")
async def get_audit(
    case_id: uuid.UUID, principal: AuditReader, session: SessionDep, limit: Limit = 50, cursor: Cursor = None
) -> Page[AuditEntry]:
    async with session.begin():
        case = await access.audited_case(session, principal, case_id)
        rows, next_cursor = await service.audit_trail(session, case.id, limit=limit, cursor=cursor)
    items = [AuditEntry(at=r.at, sub=r.sub, role=r.role, action=r.action, case_id=case.id) for r in rows]
    return Page[AuditEntry](items=items, next_cursor=next_cursor)


def _screen_out(municipality: str, screen: domain.RiskScreen, is_default: bool) -> RiskScreenOut:
    return RiskScreenOut(
        municipality=municipality,
        is_default=is_default,
        questions=[RiskQuestion(id=qid, red_flag=red) for qid, red in screen.questions],
        high_yes_count=screen.high_yes_count,
        medium_yes_count=screen.medium_yes_count,
        escalation_cases=screen.escalation_cases,
        escalation_window_days=screen.escalation_window_days,
    )


@router.get("/risk-screen", response_model=RiskScreenOut, tags=["risk screen"], summary="The risk screen in use")
async def get_risk_screen(principal: Reporter, session: SessionDep, request: Request) -> RiskScreenOut:
    async with session.begin():
        row = await session.get(RiskScreenConfig, principal.municipality)
        screen = await service.load_screen(session, principal.municipality, _default_screen(request))
    return _screen_out(principal.municipality, screen, row is None)


@router.put("/risk-screen", response_model=RiskScreenOut, tags=["risk screen"], summary="Configure the risk screen")
async def put_risk_screen(body: RiskScreenIn, principal: Coordinator, session: SessionDep) -> RiskScreenOut:
    async with session.begin():
        screen = await commands.configure_risk_screen(session, principal, body)
    return _screen_out(principal.municipality, screen, False)

"""Routes of the survivor's own file (issue #17; CONTRACT §12): the export and identity corrections."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse, Response

from services.intake import casefile, casekeys, corrections, events, service, survivor_file, survivor_pdf
from services.intake.config import IntakeConfig
from services.intake.schemas import CaseOut, SurvivorPatch, jsonable
from shared.auth import Principal, Role, allow
from shared.crypto import FieldCipher, SearchIndexer
from shared.db import SessionDep

router = APIRouter(prefix="/v1", tags=["cases"])
Coordinator = Annotated[Principal, Depends(allow(Role.coordinator))]
PDF = "application/pdf"


def _peers(request: Request) -> survivor_file.Peers:
    config: IntakeConfig = request.app.state.intake_config
    transports = getattr(request.app.state, "peer_transports", None)
    return survivor_file.Peers.configured(request.app.state.settings, config, transports)


async def _whole_trail(session: Any, case_id: uuid.UUID) -> list[Any]:
    rows: list[Any] = []
    cursor: str | None = None
    while True:
        page, cursor = await service.audit_trail(session, case_id, limit=200, cursor=cursor)
        rows.extend(page)
        if cursor is None:
            return rows


async def _intake_part(session: Any, request: Request, principal: Principal, case_id: uuid.UUID) -> dict[str, Any]:
    """What intake holds, read and audited (`case.exported`) in one transaction."""
    master: FieldCipher = request.app.state.cipher
    async with session.begin():
        case = await service.get_visible_case(session, principal, case_id)
        records = await service.case_records(session, case.id)
        await service.record_audit(session, principal, case, "case.exported")
        cipher = await casekeys.cipher_for(session, master, case.id)
        history = await corrections.history(session, cipher, case.id)
        trail = await _whole_trail(session, case.id)
    return {
        "case": jsonable(casefile.case_out(cipher, principal, case, records)),
        "identity_history": history,
        "audit": [{"at": r.at.isoformat(), "sub": r.sub, "role": r.role, "action": r.action} for r in trail],
    }


@router.get(
    "/cases/{case_id}/export",
    summary="The survivor's file: everything the services hold on the case (JSON, or PDF with Accept)",
    responses={200: {"content": {"application/json": {}, PDF: {}}}},
)
async def export_case(
    case_id: uuid.UUID,
    principal: Coordinator,
    session: SessionDep,
    request: Request,
    accept: Annotated[str | None, Header()] = None,
) -> Response:
    """Intake's part, then the other services' parts fetched with the caller's own token; a part a
    service did not give is listed in `incomplete` (and `complete` is false)."""
    part = await _intake_part(session, request, principal, case_id)
    peers, missing = await survivor_file.gather_peers(_peers(request), case_id, request.headers["authorization"])
    doc = survivor_file.document(part, peers, missing)
    headers = {"Cache-Control": "no-store", "Content-Disposition": f'attachment; filename="case-{case_id}.json"'}
    if accept and PDF in accept:
        headers["Content-Disposition"] = f'attachment; filename="case-{case_id}.pdf"'
        return Response(survivor_pdf.render(doc), media_type=PDF, headers=headers)
    return JSONResponse(doc, headers=headers)


@router.patch("/cases/{case_id}/survivor", response_model=CaseOut, summary="Correct the survivor's identity")
async def correct_survivor(
    case_id: uuid.UUID, body: SurvivorPatch, principal: Coordinator, session: SessionDep, request: Request
) -> CaseOut:
    """Only the fields given change; the history keeps who changed which, when, and the values before
    (sealed). The duplicate index follows at once."""
    config: IntakeConfig = request.app.state.intake_config
    indexer: SearchIndexer = request.app.state.indexer
    async with session.begin():
        case = await service.get_visible_case(session, principal, case_id, for_update=True)
        age_group = case.facts.get("age_group")
        changed = await corrections.correct(
            session, master=request.app.state.cipher, indexer=indexer, case=case, principal=principal,
            patch=body, timezone=config.timezone,
        )
        if changed:
            await service.record_audit(session, principal, case, "case.survivor_corrected")
        if case.facts.get("age_group") != age_group:
            await events.case_facts_corrected(session, request.app.state.settings, case)
        records = await service.case_records(session, case.id)
        cipher = await casekeys.cipher_for(session, request.app.state.cipher, case.id)
    return casefile.case_out(cipher, principal, case, records)

"""Transfers of a case between municipalities (CONTRACT §10): request, list, accept, decline.

The sending coordinator asks with the survivor's consent; the receiving coordinator sees coded facts
only until she accepts. On accept the case belongs to the receiving municipality (a new case number
from its gap-free counter, the old one kept), the survivor index is re-keyed for it, and from then on
the sending municipality (its coordinator and its institutions) gets 404 for the case. Reasons are
sealed at rest; every step is audited and published (coded facts only).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import access, casefile, casekeys, domain, numbering, service
from services.intake.config import IntakeConfig
from services.intake.erasure import ERASED
from services.intake.models import Case, CaseTransfer, SurvivorIndex
from services.intake.schemas import (
    TransferDecline,
    TransferFacts,
    TransferIn,
    TransferOut,
    TransferStatus,
    jsonable,
)
from shared.auth import Principal, Role, allow
from shared.contracts import events as contract
from shared.crypto import FieldCipher, SearchIndexer
from shared.db import SessionDep
from shared.errors import conflict, invalid, not_found
from shared.events import emit
from shared.paging import Cursor, Keyset, Limit, Page, fetch_page
from shared.settings import Settings

router = APIRouter(prefix="/v1", tags=["transfers"])
Coordinator = Annotated[Principal, Depends(allow(Role.coordinator))]
CLOCK_SKEW = timedelta(minutes=2)


def reason_context(transfer_id: uuid.UUID, field: str) -> str:
    """Associated data of a transfer's sealed text: it opens only as this field of this transfer."""
    return f"intake:transfer:{transfer_id}:{field}"


def _state(request: Request) -> tuple[Settings, IntakeConfig, FieldCipher, SearchIndexer]:
    state = request.app.state
    return state.settings, state.intake_config, state.cipher, state.indexer


# --- what a transfer publishes --------------------------------------------------------------------


def coded_facts(case: Case) -> dict[str, Any]:
    """The case's coded facts as `case.reported` carries them (consumers that missed the report can
    project the case from `case.transferred` alone)."""
    facts = case.facts
    children = facts.get("children", [])
    return {
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
    }


async def _emit(
    session: AsyncSession,
    settings: Settings,
    case: Case,
    transfer: CaseTransfer,
    model: type[contract.TransferEventData],
    data: dict[str, Any],
) -> None:
    payload = {
        "case_id": case.id,
        "case_number": case.case_number,
        "transfer_id": transfer.id,
        "from_municipality": transfer.from_municipality,
        "to_municipality": transfer.to_municipality,
        "risk_level": case.risk_level,
        **data,
    }
    await emit(session, settings, model.model_validate(payload), subject=str(case.id), municipality=case.municipality)


# --- shaping a transfer for the caller ------------------------------------------------------------


def transfer_out(cipher: FieldCipher, principal: Principal, transfer: CaseTransfer, case: Case) -> TransferOut:
    """The sender sees her own reason (the receiver once she accepted); both sides see a decline's reason;
    the receiver sees coded facts while the transfer is pending (after accepting, the case itself)."""
    sender = principal.municipality == transfer.from_municipality
    incoming_pending = principal.municipality == transfer.to_municipality and transfer.status == "pending"
    facts = None
    if incoming_pending:
        coded = coded_facts(case)
        facts = TransferFacts(
            risk_level=case.risk_level,  # type: ignore[arg-type]
            source=case.source,
            sex=coded["sex"],
            age_group=coded["age_group"],
            ethnicity=coded["ethnicity"],
            disability=coded["disability"],
            children_count=coded["children_count"],
            violence_types=coded["violence_types"],
            perpetrator_relationship=coded["perpetrator_relationship"],
            needs=coded["needs"],
            reported_at=case.reported_at,
        )
    # The request's reason may name the survivor's circumstances: the receiver reads it once the case is hers.
    reads_reason = sender or transfer.status == "accepted"
    readable = reads_reason and transfer.reason != ERASED  # an erased case's reasons are gone (erasure.py)
    reason = cipher.decrypt(transfer.reason, reason_context(transfer.id, "reason")) if readable else None
    decline_reason = (
        cipher.decrypt(transfer.decline_reason, reason_context(transfer.id, "decline_reason"))
        if transfer.decline_reason
        else None
    )
    return TransferOut(
        id=transfer.id,
        case_id=transfer.case_id,
        case_number=transfer.from_case_number,
        from_municipality=transfer.from_municipality,
        to_municipality=transfer.to_municipality,
        status=TransferStatus(transfer.status),
        requested_at=transfer.requested_at,
        consent_given_at=transfer.consent_given_at,
        decided_at=transfer.decided_at,
        new_case_number=transfer.to_case_number,
        reason=reason,
        decline_reason=decline_reason,
        facts=facts,
    )


# --- request ---------------------------------------------------------------------------------------


@router.post(
    "/cases/{case_id}/transfers",
    status_code=201,
    response_model=TransferOut,
    summary="Ask another municipality to take over a case (the survivor moved; her consent required)",
)
async def request_transfer(
    case_id: uuid.UUID, body: TransferIn, principal: Coordinator, session: SessionDep, request: Request
) -> JSONResponse:
    settings, config, cipher, _ = _state(request)
    now = datetime.now(UTC)
    if body.to_municipality not in config.municipalities:
        raise invalid(["body", "to_municipality"], "not a known municipality")
    if body.consent_given_at > now + CLOCK_SKEW:
        raise invalid(["body", "consent_given_at"], "consent_given_at may not be in the future")
    async with session.begin():
        case = await service.get_visible_case(session, principal, case_id, for_update=True)
        if body.to_municipality == case.municipality:
            raise conflict("The case already belongs to that municipality.")
        if case.status != "open":
            raise conflict("Only an open case can be transferred; reopen it first.")
        pending = await session.scalar(
            sa.select(CaseTransfer.id).where(  # type: ignore[call-overload]
                CaseTransfer.case_id == case.id, CaseTransfer.status == "pending"
            )
        )
        if pending is not None:
            raise conflict("A transfer of this case is already pending.", transfer_id=str(pending))
        transfer_id = uuid.uuid4()
        transfer = CaseTransfer(
            id=transfer_id,
            case_id=case.id,
            from_municipality=case.municipality,
            to_municipality=body.to_municipality,
            reason=cipher.encrypt(body.reason, reason_context(transfer_id, "reason")),
            consent_given_at=body.consent_given_at,
            from_case_number=case.case_number,
            requested_at=now,
            requested_by_sub=principal.sub,
        )
        session.add(transfer)
        await session.flush()
        await service.record_audit(session, principal, case, "case.transfer_requested")
        await _emit(session, settings, case, transfer, contract.TransferRequested, {"requested_at": now.isoformat()})
        answer = jsonable(transfer_out(cipher, principal, transfer, case))
    return JSONResponse(answer, status_code=201)


# --- listing ---------------------------------------------------------------------------------------


TRANSFER_ORDER = Keyset("transfers", (CaseTransfer.requested_at, CaseTransfer.id), descending=True)  # newest first


@router.get("/transfers", response_model=Page[TransferOut], summary="Transfers to or from the caller's municipality")
async def list_transfers(
    principal: Coordinator,
    session: SessionDep,
    request: Request,
    direction: Annotated[str, Query(pattern="^(incoming|outgoing)$")] = "incoming",
    status: TransferStatus | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[TransferOut]:
    _, _, cipher, _ = _state(request)
    side = CaseTransfer.to_municipality if direction == "incoming" else CaseTransfer.from_municipality
    stmt = (
        sa.select(CaseTransfer, Case)
        .join(Case, Case.id == CaseTransfer.case_id)  # type: ignore[arg-type]
        .where(side == principal.municipality)  # type: ignore[arg-type]
    )
    if status is not None:
        stmt = stmt.where(CaseTransfer.status == status.value)  # type: ignore[arg-type]
    async with session.begin():
        page, next_cursor = await fetch_page(session, stmt, TRANSFER_ORDER, limit, cursor, scalars=False)
        # The receiving coordinator is shown coded facts of a case not (yet) hers: that read is audited.
        shown = [case for transfer, case in page if transfer.status == "pending" and direction == "incoming"]
        await service.record_audit_many(session, principal, shown, "case.transfer_facts_read")
    items = [transfer_out(cipher, principal, transfer, case) for transfer, case in page]
    return Page[TransferOut](items=items, next_cursor=next_cursor)


# --- the receiving coordinator's decision -----------------------------------------------------------


async def _pending_for_receiver(
    session: AsyncSession, principal: Principal, transfer_id: uuid.UUID
) -> tuple[CaseTransfer, Case]:
    """The transfer and its case, both locked; 404 unless the caller's municipality is a side of it, 403
    for the sender (it is hers to see, not to decide), 409 once decided."""
    transfer = await session.get(CaseTransfer, transfer_id, with_for_update=True)
    if transfer is None:
        raise not_found("transfer")
    access.require_transfer_decider(principal, transfer)
    if transfer.status != "pending":
        raise conflict(f"The transfer is already {transfer.status}.")
    case = await session.get(Case, transfer.case_id, with_for_update=True)
    if case is None or case.municipality != transfer.from_municipality:
        raise conflict("The case no longer belongs to the sending municipality.")
    return transfer, case


def _require_open(case: Case) -> None:
    if case.status != "open":
        raise conflict("The case was closed meanwhile; the sending municipality must reopen it first.")


async def _rekey_survivor(
    session: AsyncSession, cipher: FieldCipher, indexer: SearchIndexer, case: Case, municipality: str
) -> None:
    """Name keys are keyed per municipality (shared/crypto.py): the receiving one's search and duplicate
    check find the survivor only under its own keys."""
    row = await session.get(SurvivorIndex, case.id, with_for_update=True)
    if row is None or case.erased_at is not None:  # an erased case has no index row and no identity left
        return
    case_cipher = await casekeys.cipher_for(session, cipher, case.id)
    personal = json.loads(case_cipher.decrypt(case.personal, casefile.personal_context(case.id, "personal")))
    row.municipality = municipality
    row.name_keys = indexer.keyed(f"{personal['first_name']} {personal['last_name']}", municipality)
    birth = personal.get("date_of_birth")
    row.birth_date_key = indexer.token(birth, municipality) if birth else None
    row.key_id = indexer.key_id
    session.add(row)


@router.post("/transfers/{transfer_id}/accept", response_model=TransferOut, summary="Take over a transferred case")
async def accept_transfer(
    transfer_id: uuid.UUID,
    principal: Coordinator,
    session: SessionDep,
    request: Request,
) -> TransferOut:
    settings, config, cipher, indexer = _state(request)
    async with session.begin():
        transfer, case = await _pending_for_receiver(session, principal, transfer_id)
        _require_open(case)
        now = datetime.now(UTC)
        year = now.astimezone(ZoneInfo(config.timezone)).year
        prefix = domain.case_prefix(transfer.to_municipality, config.case_prefixes)
        number = await numbering.next_case_number(
            session, municipality=transfer.to_municipality, year=year, prefix=prefix
        )
        previous = case.case_number
        case.municipality = transfer.to_municipality
        case.case_number = number
        session.add(case)
        await _rekey_survivor(session, cipher, indexer, case, transfer.to_municipality)
        transfer.status = "accepted"
        transfer.to_case_number = number
        transfer.decided_at = now
        transfer.decided_by_sub = principal.sub
        session.add(transfer)
        await session.flush()
        await service.record_audit(session, principal, case, "case.transferred")
        share_with, _ = service.current_consent((await service.case_records(session, case.id)).consents)
        facts = {**coded_facts(case), "consent_share_with": share_with}
        await _emit(
            session, settings, case, transfer, contract.CaseTransferred,
            {**facts, "previous_case_number": previous, "accepted_at": now.isoformat()},
        )
        answer = transfer_out(cipher, principal, transfer, case)
    return answer


@router.post("/transfers/{transfer_id}/decline", response_model=TransferOut, summary="Decline a transfer (reason)")
async def decline_transfer(
    transfer_id: uuid.UUID, body: TransferDecline, principal: Coordinator, session: SessionDep, request: Request
) -> TransferOut:
    settings, _, cipher, _ = _state(request)
    async with session.begin():
        transfer, case = await _pending_for_receiver(session, principal, transfer_id)
        now = datetime.now(UTC)
        transfer.status = "declined"
        transfer.decided_at = now
        transfer.decided_by_sub = principal.sub
        transfer.decline_reason = cipher.encrypt(body.reason, reason_context(transfer.id, "decline_reason"))
        session.add(transfer)
        await session.flush()
        await service.record_audit(session, principal, case, "case.transfer_declined")
        await _emit(session, settings, case, transfer, contract.TransferDeclined, {"declined_at": now.isoformat()})
        answer = transfer_out(cipher, principal, transfer, case)
    return answer


async def previous_case_numbers(session: AsyncSession, case_id: uuid.UUID) -> list[str]:
    """The numbers the case had before each accepted transfer, oldest first."""
    rows = await session.execute(
        sa.select(CaseTransfer.from_case_number)  # type: ignore[call-overload]
        .where(CaseTransfer.case_id == case_id, CaseTransfer.status == "accepted")
        .order_by(CaseTransfer.decided_at)
    )
    return [str(n) for n in rows.scalars()]

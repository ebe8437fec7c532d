"""HTTP routes of the coordinator's duplicate decisions (CONTRACT §10): link, rule apart, undo."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from services.intake import linking, service
from services.intake.models import Case
from services.intake.schemas import LinkIn, LinkRelation, LinksOut, PossibleDuplicate, RiskLevel, jsonable
from shared.auth import Principal, Role, allow
from shared.db import SessionDep
from shared.errors import conflict, invalid, not_found

router = APIRouter(prefix="/v1", tags=["duplicate decisions"])
Coordinator = Annotated[Principal, Depends(allow(Role.coordinator))]
AUDIT_ACTIONS = {
    LinkRelation.same_person: "case.linked",
    LinkRelation.not_same_person: "case.ruled_apart",
}


def links_out(state: linking.LinkState) -> LinksOut:
    repeat_of = state.repeat_of
    return LinksOut(
        case_id=state.case.id,
        case_number=state.case.case_number,
        risk_level=RiskLevel(state.case.risk_level),
        repeat=repeat_of is not None,
        repeat_of=repeat_of,
        linked_case_ids=[c.id for c in state.linked],
        not_same_person_case_ids=state.ruled_apart,
        possible_duplicates=[PossibleDuplicate(id=m.id, case_number=m.case_number, score=m.score)
                             for m in state.possible],
    )


async def _pair(session: SessionDep, principal: Principal, case_id: uuid.UUID, other_id: uuid.UUID) -> list[Case]:
    """Both cases, locked in id order (no deadlock between two decisions on the same pair); 404 for one the
    coordinator may not see (another municipality's answers as if it did not exist)."""
    if case_id == other_id:
        raise invalid(["body", "case_id"], "a case cannot be linked to itself")
    cases: dict[uuid.UUID, Case] = {}
    for cid in sorted((case_id, other_id), key=str):
        try:
            cases[cid] = await service.get_visible_case(session, principal, cid, for_update=True)
        except service.CaseHidden:
            if cid == case_id:
                raise
            raise not_found("case") from None  # the other case: no audit of a case the caller did not open
    return [cases[case_id], cases[other_id]]


@router.get("/cases/{case_id}/links", response_model=LinksOut, summary="A case's duplicate decisions")
async def get_links(case_id: uuid.UUID, principal: Coordinator, session: SessionDep) -> LinksOut:
    async with session.begin():
        case = await service.get_visible_case(session, principal, case_id)
        state = await linking.link_state(session, case)
        await service.record_audit(session, principal, case, "case.links_read")
    return links_out(state)


@router.post(
    "/cases/{case_id}/links",
    response_model=LinksOut,
    status_code=201,
    summary="Decide on a possible duplicate: the same person, or not (reversible by DELETE)",
)
async def link_cases(
    case_id: uuid.UUID, body: LinkIn, principal: Coordinator, session: SessionDep, request: Request
) -> JSONResponse:
    """`same_person` links the two cases (and through them every case linked to either); `not_same_person`
    keeps the pair out of `possible_duplicates`. 201 when recorded; 200 when the same decision stands
    already; 409 when the pair carries the other decision (undo it first)."""
    settings = request.app.state.settings
    async with session.begin():
        case, other = await _pair(session, principal, case_id, body.case_id)
        try:
            link = await linking.decide(session, principal, case, other, body.relation.value)
        except LookupError:
            raise conflict("The pair carries the other decision: undo it first (DELETE the link).") from None
        if link is not None:
            await service.record_audit_many(session, principal, [case, other], AUDIT_ACTIONS[body.relation])
            await linking.announce(session, settings, principal, [case, other], "case.linked")
        state = await linking.link_state(session, case)
    return JSONResponse(jsonable(links_out(state)), status_code=201 if link is not None else 200)


@router.delete(
    "/cases/{case_id}/links/{other_id}",
    response_model=LinksOut,
    summary="Undo the decision on a pair of cases (either relation)",
)
async def unlink_cases(
    case_id: uuid.UUID, other_id: uuid.UUID, principal: Coordinator, session: SessionDep, request: Request
) -> LinksOut:
    """The pair is undecided again (it shows among `possible_duplicates` if the search had found it); a
    repeat flag that rested on the link goes. A risk raised by an escalation stays (only the coordinator
    lowers a level, by a new assessment), and so do the referrals it caused."""
    async with session.begin():
        case, other = await _pair(session, principal, case_id, other_id)
        link = await linking.undo(session, case, other)
        if link is None:
            raise not_found("link")
        await service.record_audit_many(session, principal, [case, other], "case.link_undone")
        await linking.announce(session, request.app.state.settings, principal, [case, other], "case.unlinked")
        state = await linking.link_state(session, case)
    return links_out(state)

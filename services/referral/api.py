"""HTTP routes of the referral service: directory, routing rules, referrals, meetings, plans, reports."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlmodel import col

from services.referral import access, domain, reports, routing
from services.referral.commands import UnitOfWork
from services.referral.commands import directory as directory_commands
from services.referral.commands import meetings as meeting_commands
from services.referral.commands import referrals as referral_commands
from services.referral.config import ReferralConfig
from services.referral.models import EtnMeeting, Member, PlanAction, Referral, RoutingDecision
from services.referral.schemas import (
    ActionBody,
    CasePlanOut,
    CaseRoutingOut,
    Contact,
    Dashboard,
    MeetingIn,
    MeetingOut,
    MemberIn,
    MemberOut,
    MemberPatch,
    MinutesIn,
    MinutesOut,
    PlanActionOut,
    ReferralIn,
    ReferralOut,
    ReportSummary,
    RoutingDecisionOut,
    RoutingRulesBody,
    RoutingRulesOut,
)
from shared.auth import ALL_ROLES, INSTITUTION_ROLES, Principal, Role, allow, require_own_municipality
from shared.db import SessionDep
from shared.errors import invalid
from shared.paging import Cursor, Keyset, Limit, Page, fetch_page
from shared.projection import PROJECTION_RESPONSES
from shared.sealed import TextSealer
from shared.text import SLUG_PATTERN

router = APIRouter(prefix="/v1")

AnyRole = Annotated[Principal, Depends(allow(ALL_ROLES))]
DirectoryWriter = Annotated[Principal, Depends(allow(Role.admin, Role.coordinator))]
Coordinator = Annotated[Principal, Depends(allow(Role.coordinator))]
ReferralReader = Annotated[Principal, Depends(allow(Role.coordinator, INSTITUTION_ROLES, Role.shelter_staff))]
ReferralSender = Annotated[Principal, Depends(allow(Role.coordinator, INSTITUTION_ROLES))]
Reporter = Annotated[Principal, Depends(allow(Role.coordinator, Role.auditor))]
ReferralStatus = Literal["pending", "acknowledged", "accepted", "declined", "completed", "cancelled"]


def _config(request: Request) -> ReferralConfig:
    config: ReferralConfig = request.app.state.referral_config
    return config


def _now() -> datetime:
    return datetime.now(UTC)


def _sealer(request: Request) -> TextSealer:
    sealer: TextSealer = request.app.state.sealer
    return sealer


def _uow(request: Request, session: SessionDep, principal: Principal) -> UnitOfWork:
    """The unit of work a command runs in: this request's session and caller, the app's settings."""
    return UnitOfWork(session, request.app.state.settings, _config(request), _sealer(request), principal)


# --- the MKR/ETN directory ------------------------------------------------------------------------


def member_out(member: Member) -> MemberOut:
    return MemberOut(
        id=member.id,
        name=member.name,
        kind=member.kind,
        municipality=member.municipality,
        services=member.services,
        contact=Contact(email=member.email, phone=member.phone),
        active=member.active,
    )


@router.post("/members", status_code=201, response_model=MemberOut, tags=["directory"])
async def create_member(body: MemberIn, principal: DirectoryWriter, session: SessionDep, request: Request) -> MemberOut:
    """Add an institution to the municipality's MKR/ETN directory; publishes `member.saved`."""
    return member_out(await directory_commands.add_member(_uow(request, session, principal), body))


MEMBER_ORDER = Keyset("members", (col(Member.created_at), col(Member.id)))
REFERRAL_ORDER = Keyset("referrals", (col(Referral.created_at), col(Referral.id)))
MEETING_ORDER = Keyset("meetings", (col(EtnMeeting.scheduled_for), col(EtnMeeting.id)))


@router.get("/members", response_model=Page[MemberOut], tags=["directory"])
async def list_members(
    principal: AnyRole,
    session: SessionDep,
    kind: domain.MemberKind | None = None,
    active: bool | None = None,
    municipality: Annotated[str | None, Query(pattern=SLUG_PATTERN)] = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[MemberOut]:
    """The directory of the caller's municipality (an auditor may name one), in directory order."""
    query = sa.select(Member).where(access.members_scope(principal, municipality))
    if kind is not None:
        query = query.where(Member.kind == kind)  # type: ignore[arg-type]
    if active is not None:
        query = query.where(Member.active.is_(active))  # type: ignore[attr-defined]
    rows, next_cursor = await fetch_page(session, query, MEMBER_ORDER, limit, cursor)
    return Page[MemberOut](items=[member_out(m) for m in rows], next_cursor=next_cursor)


@router.get("/members/{member_id}", response_model=MemberOut, tags=["directory"])
async def get_member(member_id: uuid.UUID, principal: AnyRole, session: SessionDep) -> MemberOut:
    return member_out(await access.visible_member(session, principal, member_id))


async def _save_member(
    request: Request, session: SessionDep, principal: Principal, member_id: uuid.UUID, changes: dict[str, object]
) -> MemberOut:
    command = directory_commands.SaveMember(member_id, changes)
    return member_out(await directory_commands.save_member(_uow(request, session, principal), command))


@router.patch("/members/{member_id}", response_model=MemberOut, tags=["directory"])
async def patch_member(
    member_id: uuid.UUID, body: MemberPatch, principal: DirectoryWriter, session: SessionDep, request: Request
) -> MemberOut:
    """Change some fields (e.g. `active: false` takes a member out of automatic routing)."""
    return await _save_member(request, session, principal, member_id, body.model_dump(exclude_unset=True))


@router.put("/members/{member_id}", response_model=MemberOut, tags=["directory"])
async def put_member(
    member_id: uuid.UUID, body: MemberIn, principal: DirectoryWriter, session: SessionDep, request: Request
) -> MemberOut:
    require_own_municipality(principal, body.municipality)
    return await _save_member(request, session, principal, member_id, body.model_dump(exclude={"municipality"}))


# --- routing rules and decisions -----------------------------------------------------------------


@router.get("/routing-rules", response_model=RoutingRulesOut, tags=["routing"])
async def get_routing_rules(
    principal: Coordinator, session: SessionDep, request: Request, response: Response
) -> RoutingRulesOut:
    """The municipality's routing table (DOMAIN.md's defaults until it PUTs its own), with its `ETag`."""
    rules, is_default = await routing.rules_for(session, principal.municipality, request.app.state.settings.profile)
    response.headers["ETag"] = routing.rules_etag(rules, is_default)
    return RoutingRulesOut(municipality=principal.municipality, rules=rules, is_default=is_default)


@router.put("/routing-rules", response_model=RoutingRulesOut, tags=["routing"])
async def put_routing_rules(
    body: RoutingRulesBody,
    principal: Coordinator,
    session: SessionDep,
    request: Request,
    response: Response,
    if_match: Annotated[
        str | None, Header(alias="If-Match", description="The ETag of the table as read; 412 when it changed since")
    ] = None,
) -> RoutingRulesOut:
    """Replace the municipality's routing table. Legal exceptions to consent are fixed by law, not rules.
    Send `If-Match` with the ETag of the table you read, so a change made meanwhile is not overwritten."""
    response.headers["ETag"] = await directory_commands.replace_routing_rules(
        _uow(request, session, principal), body, if_match
    )
    return RoutingRulesOut(municipality=principal.municipality, rules=body.rules, is_default=False)


@router.get("/cases/{case_id}/routing", response_model=CaseRoutingOut, tags=["routing"])
async def case_routing(case_id: uuid.UUID, principal: Coordinator, session: SessionDep) -> CaseRoutingOut:
    """Every routing decision for the case: referred, already referred, no consent, or no member (a gap)."""
    case = await access.visible_case(session, principal, case_id)
    rows = (
        (
            await session.execute(
                sa.select(RoutingDecision)
                .where(RoutingDecision.case_id == case_id)  # type: ignore[arg-type]
                .order_by(RoutingDecision.at, RoutingDecision.kind)  # type: ignore[arg-type]
            )
        )
        .scalars()
        .all()
    )
    return CaseRoutingOut(
        case_id=case.case_id,
        case_number=case.case_number,
        decisions=[RoutingDecisionOut.model_validate(r) for r in rows],
    )


# --- referrals -------------------------------------------------------------------------------------


def referral_out(referral: Referral, sealer: TextSealer) -> ReferralOut:
    def opened(field: str) -> str | None:
        return sealer.open("referrals", referral.id, field, getattr(referral, field))

    return ReferralOut(
        id=referral.id,
        case_id=referral.case_id,
        case_number=referral.case_number,
        municipality=referral.municipality,
        to_member_id=referral.to_member_id,
        to_member_kind=referral.to_member_kind,
        service=referral.service,
        urgency=referral.urgency,
        status=referral.status,
        reason=referral.reason,
        created_at=referral.created_at,
        ack_due_at=referral.ack_due_at,
        history=referral.history,  # type: ignore[arg-type]
        legal_exception=referral.legal_exception,
        consent_override=referral.consent_override_reason is not None,
        consent_override_reason=opened("consent_override_reason"),
        note=opened("note"),
        decline_reason=opened("decline_reason"),
        outcome=opened("outcome"),
        acknowledged_at=referral.acknowledged_at,
        sla_breached_at=referral.sla_breached_at,
    )


@router.get("/referrals", response_model=Page[ReferralOut], tags=["referrals"])
async def list_referrals(
    principal: ReferralReader,
    session: SessionDep,
    request: Request,
    case_id: uuid.UUID | None = None,
    to_member_id: uuid.UUID | None = None,
    status: ReferralStatus | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[ReferralOut]:
    """Coordinator: all of the municipality; institutions: addressed to or sent by their member;
    shelter staff: addressed to their shelter's member. Oldest first."""
    query = sa.select(Referral).where(await access.referral_visibility(session, principal))
    if case_id is not None:
        query = query.where(Referral.case_id == case_id)  # type: ignore[arg-type]
    if to_member_id is not None:
        query = query.where(Referral.to_member_id == to_member_id)  # type: ignore[arg-type]
    if status is not None:
        query = query.where(Referral.status == status)  # type: ignore[arg-type]
    rows, next_cursor = await fetch_page(session, query, REFERRAL_ORDER, limit, cursor)
    return Page[ReferralOut](items=[referral_out(r, _sealer(request)) for r in rows], next_cursor=next_cursor)


@router.get("/referrals/{referral_id}", response_model=ReferralOut, tags=["referrals"])
async def get_referral(
    referral_id: uuid.UUID, principal: ReferralReader, session: SessionDep, request: Request
) -> ReferralOut:
    referral = await access.visible_referral(session, principal, referral_id)
    return referral_out(referral, _sealer(request))


@router.post(
    "/referrals", status_code=201, response_model=ReferralOut, tags=["referrals"], responses=PROJECTION_RESPONSES
)
async def create_referral(
    body: ReferralIn, principal: ReferralSender, session: SessionDep, request: Request
) -> ReferralOut:
    """A manual referral. A member whose kind is outside the case's consent needs
    `consent_override_reason` (409 without), unless a legal exception applies (child at risk → child
    protection, threat to life → police), which is recorded in `legal_exception`."""
    referral = await referral_commands.create_referral(_uow(request, session, principal), body)
    return referral_out(referral, _sealer(request))


@router.post("/referrals/{referral_id}/{action}", response_model=ReferralOut, tags=["referrals"])
async def act_on_referral(
    referral_id: uuid.UUID,
    action: referral_commands.ReferralAction,
    principal: ReferralReader,
    session: SessionDep,
    request: Request,
    body: Annotated[ActionBody | None, Body()] = None,
) -> ReferralOut:
    """acknowledge / accept / decline (`reason`) / complete (`outcome`): the receiving institution;
    cancel: the sender or the coordinator. An invalid transition is 409."""
    body = body or ActionBody()
    command = referral_commands.ActOnReferral(referral_id, action, reason=body.reason, outcome=body.outcome)
    referral = await referral_commands.act_on_referral(_uow(request, session, principal), command)
    return referral_out(referral, _sealer(request))


# --- ETN and Steering Committee meetings, case plans -----------------------------------------------


def meeting_out(meeting: EtnMeeting) -> MeetingOut:
    return MeetingOut(
        id=meeting.id,
        municipality=meeting.municipality,
        kind=meeting.kind,
        scheduled_for=meeting.scheduled_for,
        case_ids=[uuid.UUID(c) for c in meeting.case_ids],
        member_ids=[uuid.UUID(m) for m in meeting.member_ids],
        attended_member_ids=[uuid.UUID(m) for m in meeting.attended_member_ids],
        held=meeting.held or meeting.scheduled_for <= _now(),
        minutes_recorded_at=meeting.minutes_recorded_at,
    )


@router.post(
    "/etn-meetings", status_code=201, response_model=MeetingOut, tags=["meetings"], responses=PROJECTION_RESPONSES
)
async def create_meeting(body: MeetingIn, principal: Coordinator, session: SessionDep, request: Request) -> MeetingOut:
    """Schedule an ETN or Steering Committee meeting; a past `scheduled_for` records one already held."""
    return meeting_out(await meeting_commands.schedule_meeting(_uow(request, session, principal), body))


@router.get("/etn-meetings", response_model=Page[MeetingOut], tags=["meetings"])
async def list_meetings(
    principal: Coordinator,
    session: SessionDep,
    from_: Annotated[date | None, Query(alias="from")] = None,
    to: date | None = None,
    kind: Literal["etn", "steering_committee"] | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[MeetingOut]:
    """Meetings of the municipality by date (`from`/`to` inclusive, UTC dates)."""
    query = sa.select(EtnMeeting).where(access.meetings_scope(principal))
    day = sa.func.date(sa.func.timezone("UTC", EtnMeeting.scheduled_for))
    if from_ is not None:
        query = query.where(day >= from_)
    if to is not None:
        query = query.where(day <= to)
    if kind is not None:
        query = query.where(EtnMeeting.kind == kind)  # type: ignore[arg-type]
    rows, next_cursor = await fetch_page(session, query, MEETING_ORDER, limit, cursor)
    return Page[MeetingOut](items=[meeting_out(m) for m in rows], next_cursor=next_cursor)


@router.get("/etn-meetings/{meeting_id}", response_model=MeetingOut, tags=["meetings"])
async def get_meeting(meeting_id: uuid.UUID, principal: Coordinator, session: SessionDep) -> MeetingOut:
    return meeting_out(await access.own_meeting(session, principal, meeting_id))


def action_out(action: PlanAction, sealer: TextSealer) -> PlanActionOut:
    out = PlanActionOut.model_validate(action)
    out.action = (sealer.open("plan_actions", action.id, "action", action.action) if action.action else None) or ""
    out.overdue = action.status == "open" and action.due_date < _now().date()
    return out


@router.post(
    "/etn-meetings/{meeting_id}/minutes",
    status_code=201,
    response_model=MinutesOut,
    tags=["meetings"],
    responses=PROJECTION_RESPONSES,
)
async def record_minutes(
    meeting_id: uuid.UUID, body: MinutesIn, principal: Coordinator, session: SessionDep, request: Request
) -> MinutesOut:
    """Record who attended and what was decided; each decision becomes a case-plan action. Once per meeting."""
    command = meeting_commands.RecordMinutes(meeting_id, body)
    meeting, actions = await meeting_commands.record_minutes(_uow(request, session, principal), command)
    sealer = _sealer(request)
    return MinutesOut(meeting=meeting_out(meeting), actions=[action_out(a, sealer) for a in actions])


PlanReader = Annotated[Principal, Depends(allow(Role.coordinator, INSTITUTION_ROLES, Role.shelter_staff))]


@router.get("/cases/{case_id}/plan", response_model=CasePlanOut, tags=["meetings"])
async def case_plan(case_id: uuid.UUID, principal: PlanReader, session: SessionDep, request: Request) -> CasePlanOut:
    """The case's individual plan: all actions for the coordinator; an institution sees its own actions."""
    case, rows = await access.visible_case_plan(session, principal, case_id)
    sealer = _sealer(request)
    actions = [action_out(a, sealer) for a in rows]
    return CasePlanOut(case_id=case.case_id, case_number=case.case_number, actions=actions)


PLAN_ACTION_ORDER = Keyset("plan_actions", (col(PlanAction.due_date), col(PlanAction.id)))


@router.get("/plan-actions", response_model=Page[PlanActionOut], tags=["meetings"])
async def list_plan_actions(
    principal: PlanReader,
    session: SessionDep,
    request: Request,
    status: Literal["open", "completed"] | None = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> Page[PlanActionOut]:
    """The caller's plan actions by due date, so an institution finds its ETN tasks without knowing which
    cases hold them: the coordinator's municipality's all; an institution's those it is responsible for."""
    query = sa.select(PlanAction).where(
        access.plan_actions_scope(principal), await access.responsible_scope(session, principal)
    )
    if status is not None:
        query = query.where(col(PlanAction.status) == status)
    rows, next_cursor = await fetch_page(session, query, PLAN_ACTION_ORDER, limit, cursor)
    sealer = _sealer(request)
    return Page[PlanActionOut](items=[action_out(a, sealer) for a in rows], next_cursor=next_cursor)


@router.post("/plan-actions/{action_id}/complete", response_model=PlanActionOut, tags=["meetings"])
async def complete_plan_action(
    action_id: uuid.UUID, principal: PlanReader, session: SessionDep, request: Request
) -> PlanActionOut:
    """Mark a plan action done: the responsible institution or the coordinator. Twice is 409."""
    action = await meeting_commands.complete_plan_action(_uow(request, session, principal), action_id)
    return action_out(action, _sealer(request))


# --- dashboard and reports --------------------------------------------------------------------------


@router.get("/dashboard", response_model=Dashboard, tags=["reports"])
async def dashboard(principal: Coordinator, session: SessionDep, request: Request) -> Dashboard:
    """Open cases by risk level, overdue referrals, overdue plan actions, protection orders expiring soon.
    From referral's own projection of the other services' events: no call to another service."""
    return await reports.dashboard(session, principal.municipality, _config(request).order_expiry_days)


# A municipality slug, or `*` (the national view, auditor only).
Municipality = Annotated[str | None, Query(pattern=r"^\*$|" + SLUG_PATTERN)]
From = Annotated[date, Query(alias="from")]


@router.get("/reports/summary", response_model=ReportSummary, response_model_by_alias=True, tags=["reports"])
async def report_summary(
    principal: Reporter,
    session: SessionDep,
    request: Request,
    from_: From,
    to: date,
    municipality: Municipality = None,
) -> ReportSummary:
    """Aggregates for a period (DOMAIN.md "Reports"), no identities. Periods are UTC dates, inclusive.
    The auditor may ask for `municipality=*` (every municipality summed, with `by_municipality`) and sees
    small cells suppressed (null, listed in `suppressed`); the coordinator sees her own exact counts."""
    if to < from_:
        raise invalid(["query", "to"], "must not be before from")
    scope = access.report_scope(principal, municipality)
    min_cell = access.min_cell(principal, request.app.state.settings)
    return await reports.summary(session, scope, from_, to, min_cell=min_cell)


@router.get(
    "/reports/cases.csv",
    tags=["reports"],
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "one pseudonymous row per case"}},
)
async def report_cases_csv(
    principal: Reporter,
    session: SessionDep,
    request: Request,
    from_: From,
    to: date,
    municipality: Municipality = None,
) -> StreamingResponse:
    """One row per case reported in the period: case number, dates, coded facts, referral outcomes.
    No names, contacts, addresses, dates of birth or narratives. The auditor's export (also
    `municipality=*`) starts with a `municipality` column and is k-anonymous over municipality, sex, age
    group and ethnicity (k = MKR_REPORTS_MIN_CELL): a value that would single out fewer reads `suppressed`."""
    if to < from_:
        raise invalid(["query", "to"], "must not be before from")
    scope = access.report_scope(principal, municipality)
    rows = await reports.case_rows(session, scope, from_, to)
    filename = f"cases-{'all' if scope == reports.NATIONAL else scope}-{from_.isoformat()}-{to.isoformat()}.csv"
    min_cell = access.min_cell(principal, request.app.state.settings)
    content = (
        reports.to_csv(rows)
        if min_cell is None
        else reports.to_csv(reports.auditor_rows(rows, min_cell), reports.AUDITOR_CSV_COLUMNS)
    )
    return StreamingResponse(
        content,
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )

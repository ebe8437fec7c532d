"""HTTP routes of the referral service: directory, routing rules, referrals, meetings, plans, reports."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import APIRouter, Body, Depends, Query, Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.referral import domain, events, reports
from services.referral.config import ReferralConfig
from services.referral.models import (
    CaseFact,
    EtnMeeting,
    Member,
    PlanAction,
    Referral,
    RoutingDecision,
    RoutingRuleSet,
    ShelterMember,
)
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
from shared.errors import conflict, forbidden, invalid, not_found
from shared.paging import Cursor, Keyset, Limit, Page, fetch_page
from shared.projection import PROJECTION_RESPONSES, require_known, rows_exist
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


async def member_ids_of(session: AsyncSession, principal: Principal) -> set[uuid.UUID]:
    """The directory members the caller acts for: the `member_id` claim, and for shelter staff
    also the member their shelter is (from `shelter.availability_changed`)."""
    ids: set[uuid.UUID] = set()
    if principal.member_id:
        try:
            ids.add(uuid.UUID(principal.member_id))
        except ValueError:
            pass
    if principal.role is Role.shelter_staff and principal.shelter_id:
        try:
            shelter_id = uuid.UUID(principal.shelter_id)
        except ValueError:
            return ids
        shelter = await session.get(ShelterMember, shelter_id)
        if shelter is not None and shelter.member_id is not None and shelter.municipality == principal.municipality:
            ids.add(shelter.member_id)
    return ids


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


async def _visible_member(session: AsyncSession, principal: Principal, member_id: uuid.UUID) -> Member:
    member = await session.get(Member, member_id)
    if member is None or not principal.sees_municipality(member.municipality):
        raise not_found("member")
    return member


@router.post("/members", status_code=201, response_model=MemberOut, tags=["directory"])
async def create_member(body: MemberIn, principal: DirectoryWriter, session: SessionDep, request: Request) -> MemberOut:
    """Add an institution to the municipality's MKR/ETN directory; publishes `member.saved`."""
    require_own_municipality(principal, body.municipality)
    member = Member(
        municipality=body.municipality,
        name=body.name,
        kind=body.kind,
        services=body.services,
        email=body.contact.email,
        phone=body.contact.phone,
        active=body.active,
    )
    async with session.begin():
        session.add(member)
        await session.flush()
        await events.member_saved(session, request.app.state.settings, member)
    return member_out(member)


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
    query = sa.select(Member)
    if principal.municipality != "*":
        query = query.where(Member.municipality == principal.municipality)  # type: ignore[arg-type]
    elif municipality:
        query = query.where(Member.municipality == municipality)  # type: ignore[arg-type]
    if kind is not None:
        query = query.where(Member.kind == kind)  # type: ignore[arg-type]
    if active is not None:
        query = query.where(Member.active.is_(active))  # type: ignore[attr-defined]
    rows, next_cursor = await fetch_page(session, query, MEMBER_ORDER, limit, cursor)
    return Page[MemberOut](items=[member_out(m) for m in rows], next_cursor=next_cursor)


@router.get("/members/{member_id}", response_model=MemberOut, tags=["directory"])
async def get_member(member_id: uuid.UUID, principal: AnyRole, session: SessionDep) -> MemberOut:
    return member_out(await _visible_member(session, principal, member_id))


async def _save_member(
    session: AsyncSession, request: Request, principal: Principal, member_id: uuid.UUID, changes: dict[str, Any]
) -> MemberOut:
    async with session.begin():
        member = await session.get(Member, member_id, with_for_update=True)
        if member is None or member.municipality != principal.municipality:
            raise not_found("member")
        contact = changes.pop("contact", None)
        if contact is not None:
            member.email = contact.get("email")
            member.phone = contact.get("phone")
        for name, value in changes.items():
            setattr(member, name, value)
        member.updated_at = _now()
        await session.flush()
        await events.member_saved(session, request.app.state.settings, member)
    return member_out(member)


@router.patch("/members/{member_id}", response_model=MemberOut, tags=["directory"])
async def patch_member(
    member_id: uuid.UUID, body: MemberPatch, principal: DirectoryWriter, session: SessionDep, request: Request
) -> MemberOut:
    """Change some fields (e.g. `active: false` takes a member out of automatic routing)."""
    return await _save_member(session, request, principal, member_id, body.model_dump(exclude_unset=True))


@router.put("/members/{member_id}", response_model=MemberOut, tags=["directory"])
async def put_member(
    member_id: uuid.UUID, body: MemberIn, principal: DirectoryWriter, session: SessionDep, request: Request
) -> MemberOut:
    require_own_municipality(principal, body.municipality)
    return await _save_member(session, request, principal, member_id, body.model_dump(exclude={"municipality"}))


# --- routing rules and decisions -----------------------------------------------------------------


@router.get("/routing-rules", response_model=RoutingRulesOut, tags=["routing"])
async def get_routing_rules(principal: Coordinator, session: SessionDep, request: Request) -> RoutingRulesOut:
    """The municipality's routing table (DOMAIN.md's defaults until it PUTs its own)."""
    rules, is_default = await events.rules_for(session, principal.municipality, request.app.state.settings.profile)
    return RoutingRulesOut(municipality=principal.municipality, rules=rules, is_default=is_default)


@router.put("/routing-rules", response_model=RoutingRulesOut, tags=["routing"])
async def put_routing_rules(body: RoutingRulesBody, principal: Coordinator, session: SessionDep) -> RoutingRulesOut:
    """Replace the municipality's routing table. Legal exceptions to consent are fixed by law, not rules."""
    names = [rule.name for rule in body.rules]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise invalid(["body", "rules"], f"rule names must be unique: {sorted(duplicates)}")
    values = {
        "municipality": principal.municipality,
        "rules": [rule.model_dump(mode="json", exclude_none=True) for rule in body.rules],
        "updated_at": _now(),
        "updated_by": principal.sub,
    }
    async with session.begin():
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        await session.execute(
            pg_insert(RoutingRuleSet)
            .values(**values)
            .on_conflict_do_update(index_elements=["municipality"], set_=values)
        )
    return RoutingRulesOut(municipality=principal.municipality, rules=body.rules, is_default=False)


async def _case(session: AsyncSession, principal: Principal, case_id: uuid.UUID, *, lock: bool = False) -> CaseFact:
    case = await session.get(CaseFact, case_id, with_for_update=lock or None)
    if case is None or case.municipality != principal.municipality:
        raise not_found("case")
    return case


@router.get("/cases/{case_id}/routing", response_model=CaseRoutingOut, tags=["routing"])
async def case_routing(case_id: uuid.UUID, principal: Coordinator, session: SessionDep) -> CaseRoutingOut:
    """Every routing decision for the case: referred, already referred, no consent, or no member (a gap)."""
    case = await _case(session, principal, case_id)
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


async def _visibility(session: AsyncSession, principal: Principal) -> sa.ColumnElement[bool]:
    """Which referrals the caller sees (CONTRACT §2)."""
    own = Referral.municipality == principal.municipality
    if principal.role is Role.coordinator:
        return own  # type: ignore[return-value]
    ids = await member_ids_of(session, principal)
    if not ids:
        return sa.false()
    return sa.and_(
        own,  # type: ignore[arg-type]
        sa.or_(
            Referral.to_member_id.in_(ids),  # type: ignore[attr-defined]
            Referral.sender_member_id.in_([str(i) for i in ids]),  # type: ignore[union-attr]
        ),
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
    query = sa.select(Referral).where(await _visibility(session, principal))
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
    query = sa.select(Referral).where(Referral.id == referral_id, await _visibility(session, principal))  # type: ignore[arg-type]
    referral = (await session.execute(query)).scalar_one_or_none()
    if referral is None:
        raise not_found("referral")
    return referral_out(referral, _sealer(request))


async def _case_known_to(
    session: AsyncSession, principal: Principal, case_id: uuid.UUID, *, lock: bool = False
) -> CaseFact:
    """The case, if the caller may act on it: coordinator any of the municipality; an institution
    one it reported or one referred to it."""
    case = await _case(session, principal, case_id, lock=lock)
    if principal.role is Role.coordinator:
        return case
    ids = await member_ids_of(session, principal)
    if case.reported_by_member_id and case.reported_by_member_id in {str(i) for i in ids}:
        return case
    if ids:
        referred = await session.scalar(
            sa.select(col(Referral.id)).where(
                Referral.case_id == case_id,  # type: ignore[arg-type]
                Referral.to_member_id.in_(ids),  # type: ignore[attr-defined]
            )
        )
        if referred is not None:
            return case
    raise not_found("case")


async def _await_cases(session: AsyncSession, request: Request, case_ids: list[uuid.UUID]) -> None:
    """Read-your-writes (shared/projection.py): a case reported a moment ago may not be projected yet."""
    wait = request.app.state.settings.projection_wait_seconds
    await require_known(session, rows_exist(col(CaseFact.case_id), case_ids), wait_seconds=wait)


@router.post(
    "/referrals", status_code=201, response_model=ReferralOut, tags=["referrals"], responses=PROJECTION_RESPONSES
)
async def create_referral(
    body: ReferralIn, principal: ReferralSender, session: SessionDep, request: Request
) -> ReferralOut:
    """A manual referral. A member whose kind is outside the case's consent needs
    `consent_override_reason` (409 without), unless a legal exception applies (child at risk → child
    protection, threat to life → police), which is recorded in `legal_exception`."""
    config = _config(request)
    await _await_cases(session, request, [body.case_id])
    async with session.begin():
        # The case row lock serializes referrals of one case (two requests cannot both pass the check).
        case = await _case_known_to(session, principal, body.case_id, lock=True)
        member = await session.get(Member, body.to_member_id)
        if member is None or member.municipality != principal.municipality:
            raise not_found("member")
        if not member.active:
            raise conflict("The member is inactive.")
        facts = events.facts_of(case)
        exception = None if member.kind in case.consent_share_with else domain.legal_exception(member.kind, facts)
        if member.kind not in case.consent_share_with and exception is None and not body.consent_override_reason:
            raise conflict(
                f"The survivor has not consented to sharing with {member.kind}; give consent_override_reason.",
                type_="https://mkr.al/problems/consent-required",
            )
        active = await session.scalar(
            sa.select(col(Referral.id)).where(
                Referral.case_id == case.case_id,  # type: ignore[arg-type]
                Referral.to_member_id == member.id,  # type: ignore[arg-type]
                Referral.status.in_(domain.ACTIVE_STATUSES),  # type: ignore[attr-defined]
            )
        )
        if active is not None:
            raise conflict("The member already has an active referral for this case.", referral_id=str(active))
        now = _now()
        override = (
            body.consent_override_reason if member.kind not in case.consent_share_with and not exception else None
        )
        referral_id = uuid.uuid4()
        sealer = _sealer(request)
        referral = Referral(
            id=referral_id,
            case_id=case.case_id,
            case_number=case.case_number,
            municipality=case.municipality,
            to_member_id=member.id,
            to_member_kind=member.kind,
            service=body.service,
            urgency=body.urgency,
            reason="manual",
            origin="manual",
            note=sealer.seal("referrals", referral_id, "note", body.note),
            consent_override_reason=sealer.seal("referrals", referral_id, "consent_override_reason", override),
            legal_exception=exception,
            sender_member_id=principal.member_id,
            sender_role=principal.role.value,
            created_by=principal.sub,
            created_at=now,
            updated_at=now,
            ack_due_at=domain.ack_due_at(now, body.urgency, config.ack_seconds()),
            history=[{"status": "pending", "at": now.isoformat(), "by": principal.sub}],
        )
        session.add(referral)
        await session.flush()
        await events.referral_created(session, request.app.state.settings, referral)
    return referral_out(referral, _sealer(request))


@router.post("/referrals/{referral_id}/{action}", response_model=ReferralOut, tags=["referrals"])
async def act_on_referral(
    referral_id: uuid.UUID,
    action: Literal["acknowledge", "accept", "decline", "complete", "cancel"],
    principal: ReferralReader,
    session: SessionDep,
    request: Request,
    body: Annotated[ActionBody | None, Body()] = None,
) -> ReferralOut:
    """acknowledge / accept / decline (`reason`) / complete (`outcome`): the receiving institution;
    cancel: the sender or the coordinator. An invalid transition is 409."""
    body = body or ActionBody()
    if action == "decline" and not body.reason:
        raise invalid(["body", "reason"], "a decline needs a reason")
    if action == "complete" and not body.outcome:
        raise invalid(["body", "outcome"], "a completion needs an outcome")
    async with session.begin():
        query = (
            sa.select(Referral)
            .where(Referral.id == referral_id, await _visibility(session, principal))  # type: ignore[arg-type]
            .with_for_update()
        )
        referral = (await session.execute(query)).scalar_one_or_none()
        if referral is None:
            raise not_found("referral")
        ids = await member_ids_of(session, principal)
        if action in domain.RECEIVER_ACTIONS:
            if referral.to_member_id not in ids:
                raise forbidden("Only the receiving institution may do this.")
        elif not (
            principal.role is Role.coordinator
            or (referral.sender_member_id is not None and referral.sender_member_id in {str(i) for i in ids})
            or referral.created_by == principal.sub
        ):
            raise forbidden("Only the sender or the coordinator may cancel a referral.")
        previous = referral.status
        try:
            referral.status = domain.next_status(previous, action)
        except domain.InvalidTransition as exc:
            raise conflict(str(exc), status_now=previous) from exc
        now = _now()
        if action == "acknowledge":
            referral.acknowledged_at = now
        if action == "decline":
            referral.decline_reason = _sealer(request).seal("referrals", referral.id, "decline_reason", body.reason)
        if action == "complete":
            referral.outcome = _sealer(request).seal("referrals", referral.id, "outcome", body.outcome)
        referral.history = [*referral.history, {"status": referral.status, "at": now.isoformat(), "by": principal.sub}]
        referral.updated_at = now
        await session.flush()
        await events.referral_status_changed(
            session, request.app.state.settings, referral, previous, principal.role.value, now
        )
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


async def _check_known(
    session: AsyncSession, municipality: str, model: Any, column: Any, ids: list[uuid.UUID], loc: str
) -> None:
    if not ids:
        return
    found = set(
        (await session.execute(sa.select(column).where(column.in_(ids), model.municipality == municipality))).scalars()
    )
    for index, value in enumerate(ids):
        if value not in found:
            raise invalid(["body", loc, index], "unknown in this municipality")


@router.post(
    "/etn-meetings", status_code=201, response_model=MeetingOut, tags=["meetings"], responses=PROJECTION_RESPONSES
)
async def create_meeting(body: MeetingIn, principal: Coordinator, session: SessionDep, request: Request) -> MeetingOut:
    """Schedule an ETN or Steering Committee meeting; a past `scheduled_for` records one already held."""
    require_own_municipality(principal, body.municipality)
    if body.scheduled_for.tzinfo is None:
        raise invalid(["body", "scheduled_for"], "an instant needs an offset (RFC 3339)")
    await _await_cases(session, request, body.case_ids)
    async with session.begin():
        await _check_known(session, principal.municipality, CaseFact, CaseFact.case_id, body.case_ids, "case_ids")
        await _check_known(session, principal.municipality, Member, Member.id, body.member_ids, "member_ids")
        meeting = EtnMeeting(
            municipality=body.municipality,
            kind=body.kind,
            scheduled_for=body.scheduled_for,
            case_ids=[str(c) for c in body.case_ids],
            member_ids=[str(m) for m in body.member_ids],
            held=body.scheduled_for <= _now(),
            created_by=principal.sub,
        )
        session.add(meeting)
        await session.flush()
        await events.meeting_scheduled(session, request.app.state.settings, meeting)
    return meeting_out(meeting)


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
    query = sa.select(EtnMeeting).where(EtnMeeting.municipality == principal.municipality)  # type: ignore[arg-type]
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
    meeting = await session.get(EtnMeeting, meeting_id)
    if meeting is None or meeting.municipality != principal.municipality:
        raise not_found("meeting")
    return meeting_out(meeting)


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
    await _await_cases(session, request, [d.case_id for d in body.decisions])
    async with session.begin():
        meeting = await session.get(EtnMeeting, meeting_id, with_for_update=True)
        if meeting is None or meeting.municipality != principal.municipality:
            raise not_found("meeting")
        if meeting.minutes_recorded_at is not None:
            raise conflict("The meeting's minutes are already recorded.")
        await _check_known(
            session, principal.municipality, Member, Member.id, body.attended_member_ids, "attended_member_ids"
        )
        case_ids = [d.case_id for d in body.decisions]
        await _check_known(session, principal.municipality, CaseFact, CaseFact.case_id, case_ids, "decisions")
        await _check_known(
            session,
            principal.municipality,
            Member,
            Member.id,
            [d.responsible_member_id for d in body.decisions],
            "decisions",
        )
        numbers: dict[uuid.UUID, str] = dict(
            (
                await session.execute(
                    sa.select(col(CaseFact.case_id), col(CaseFact.case_number)).where(CaseFact.case_id.in_(case_ids))  # type: ignore[attr-defined]
                )
            )
            .tuples()
            .all()
        )
        now = _now()
        sealer = _sealer(request)
        action_ids = [uuid.uuid4() for _ in body.decisions]
        actions = [
            PlanAction(
                id=action_id,
                meeting_id=meeting.id,
                case_id=d.case_id,
                case_number=numbers[d.case_id],
                municipality=meeting.municipality,
                action=sealer.seal("plan_actions", action_id, "action", d.action) or "",
                responsible_member_id=d.responsible_member_id,
                due_date=d.due_date,
                created_at=now,
            )
            for action_id, d in zip(action_ids, body.decisions, strict=True)
        ]
        session.add_all(actions)
        meeting.attended_member_ids = [str(m) for m in body.attended_member_ids]
        meeting.minutes_recorded_at = now
        meeting.held = True
        await session.flush()
        await events.minutes_recorded(session, request.app.state.settings, meeting, actions)
    return MinutesOut(meeting=meeting_out(meeting), actions=[action_out(a, sealer) for a in actions])


PlanReader = Annotated[Principal, Depends(allow(Role.coordinator, INSTITUTION_ROLES, Role.shelter_staff))]


@router.get("/cases/{case_id}/plan", response_model=CasePlanOut, tags=["meetings"])
async def case_plan(case_id: uuid.UUID, principal: PlanReader, session: SessionDep, request: Request) -> CasePlanOut:
    """The case's individual plan: all actions for the coordinator; an institution sees its own actions."""
    case = await _case(session, principal, case_id)
    query = sa.select(PlanAction).where(PlanAction.case_id == case_id)  # type: ignore[arg-type]
    if principal.role is not Role.coordinator:
        ids = await member_ids_of(session, principal)
        query = query.where(PlanAction.responsible_member_id.in_(ids))  # type: ignore[attr-defined]
    rows = (await session.execute(query.order_by(PlanAction.due_date, PlanAction.id))).scalars().all()  # type: ignore[arg-type]
    if not rows and principal.role is not Role.coordinator:
        raise not_found("case")
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
    query = sa.select(PlanAction).where(col(PlanAction.municipality) == principal.municipality)
    if status is not None:
        query = query.where(col(PlanAction.status) == status)
    if principal.role is not Role.coordinator:
        query = query.where(col(PlanAction.responsible_member_id).in_(await member_ids_of(session, principal)))
    rows, next_cursor = await fetch_page(session, query, PLAN_ACTION_ORDER, limit, cursor)
    sealer = _sealer(request)
    return Page[PlanActionOut](items=[action_out(a, sealer) for a in rows], next_cursor=next_cursor)


@router.post("/plan-actions/{action_id}/complete", response_model=PlanActionOut, tags=["meetings"])
async def complete_plan_action(
    action_id: uuid.UUID, principal: PlanReader, session: SessionDep, request: Request
) -> PlanActionOut:
    """Mark a plan action done: the responsible institution or the coordinator. Twice is 409."""
    async with session.begin():
        action = await session.get(PlanAction, action_id, with_for_update=True)
        if action is None or action.municipality != principal.municipality:
            raise not_found("plan action")
        if principal.role is not Role.coordinator:
            if action.responsible_member_id not in await member_ids_of(session, principal):
                raise not_found("plan action")
        if action.status != "open":
            raise conflict(f"The action is already {action.status}.")
        action.status = "completed"
        action.completed_at = _now()
        action.completed_by = principal.sub
        await session.flush()
    return action_out(action, _sealer(request))


# --- dashboard and reports --------------------------------------------------------------------------


@router.get("/dashboard", response_model=Dashboard, tags=["reports"])
async def dashboard(principal: Coordinator, session: SessionDep, request: Request) -> Dashboard:
    """Open cases by risk level, overdue referrals, overdue plan actions, protection orders expiring soon.
    From referral's own projection of the other services' events: no call to another service."""
    return await reports.dashboard(session, principal.municipality, _config(request).order_expiry_days)


def _report_scope(principal: Principal, municipality: str | None) -> str:
    if principal.municipality == "*":
        if not municipality:
            raise invalid(["query", "municipality"], "an auditor names the municipality")
        return municipality
    if municipality and municipality != principal.municipality:
        raise not_found("municipality")
    return principal.municipality


def _min_cell(principal: Principal, request: Request) -> int | None:
    """Small-cell suppression applies to everyone outside the municipality: the auditor (DOMAIN.md)."""
    return int(request.app.state.settings.reports_min_cell) if principal.role is Role.auditor else None


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
    scope = _report_scope(principal, municipality)
    return await reports.summary(session, scope, from_, to, min_cell=_min_cell(principal, request))


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
    scope = _report_scope(principal, municipality)
    rows = await reports.case_rows(session, scope, from_, to)
    filename = f"cases-{'all' if scope == reports.NATIONAL else scope}-{from_.isoformat()}-{to.isoformat()}.csv"
    min_cell = _min_cell(principal, request)
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

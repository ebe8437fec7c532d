"""Who may see or act on what in referral (CONTRACT §2): the object-level rules, in one place.

Roles are checked by the routes' dependencies (`shared.auth.allow`); these functions decide which
objects of a municipality the caller may see or act on. Something the caller may not see answers 404
like something that does not exist; a visible referral the caller may not act on is 403.

- members: anyone of the municipality reads its directory (an auditor, `*`, every one); writes are the
  municipality's own;
- cases (the `case_facts` projection): the caller's municipality; an institution acts on a case it
  reported or one referred to it;
- referrals: the coordinator sees the municipality's; an institution or shelter staff those addressed to
  or sent by the members it acts for (`member_ids_of`); the receiver acknowledges, accepts, declines and
  completes; the sender, its author or the coordinator cancels;
- meetings: the municipality's coordinator;
- plan actions: the coordinator every one of the municipality; an institution those it is responsible for;
- reports: the coordinator her municipality, exact; the auditor any (or `*`), small cells suppressed.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.referral import domain
from services.referral.models import CaseFact, EtnMeeting, Member, PlanAction, Referral, ShelterMember
from shared.auth import Principal, Role
from shared.errors import forbidden, invalid, not_found
from shared.settings import Settings

# --- whom the caller acts for -------------------------------------------------------------------------


def _uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except ValueError:
        return None


async def member_ids_of(session: AsyncSession, principal: Principal) -> set[uuid.UUID]:
    """The directory members the caller acts for: the `member_id` claim, and for shelter staff
    also the member their shelter is (from `shelter.availability_changed`)."""
    ids: set[uuid.UUID] = set()
    if principal.member_id and (member_id := _uuid(principal.member_id)) is not None:
        ids.add(member_id)
    if principal.role is Role.shelter_staff and principal.shelter_id:
        shelter_id = _uuid(principal.shelter_id)
        if shelter_id is None:
            return ids
        shelter = await session.get(ShelterMember, shelter_id)
        if shelter is not None and shelter.member_id is not None and shelter.municipality == principal.municipality:
            ids.add(shelter.member_id)
    return ids


def sees_all_of_municipality(principal: Principal) -> bool:
    """The coordinator sees every referral, case and plan action of her municipality."""
    return principal.role is Role.coordinator


# --- the directory ------------------------------------------------------------------------------------


def members_scope(principal: Principal, municipality: str | None) -> sa.ColumnElement[bool]:
    """The directory the caller lists: her municipality's; an auditor (`*`) the one she names, or all."""
    if principal.municipality != "*":
        return col(Member.municipality) == principal.municipality
    if municipality:
        return col(Member.municipality) == municipality
    return sa.true()


async def visible_member(session: AsyncSession, principal: Principal, member_id: uuid.UUID) -> Member:
    """A member the caller may read (an auditor reads any); 404 otherwise."""
    member = await session.get(Member, member_id)
    if member is None or not principal.sees_municipality(member.municipality):
        raise not_found("member")
    return member


async def own_member(
    session: AsyncSession, principal: Principal, member_id: uuid.UUID, *, lock: bool = False
) -> Member:
    """A member of the caller's own municipality (to change it, or to refer to it); 404 otherwise."""
    member = await session.get(Member, member_id, with_for_update=lock or None)
    if member is None or member.municipality != principal.municipality:
        raise not_found("member")
    return member


async def require_in_municipality(
    session: AsyncSession, municipality: str, model: Any, column: Any, ids: list[uuid.UUID], loc: str
) -> None:
    """Every id names a row of the municipality (a case, a member), else 422 at the first that does not."""
    if not ids:
        return
    found = set(
        (await session.execute(sa.select(column).where(column.in_(ids), model.municipality == municipality))).scalars()
    )
    for index, value in enumerate(ids):
        if value not in found:
            raise invalid(["body", loc, index], "unknown in this municipality")


async def require_cases_in_municipality(
    session: AsyncSession, municipality: str, case_ids: list[uuid.UUID], loc: str
) -> None:
    await require_in_municipality(session, municipality, CaseFact, col(CaseFact.case_id), case_ids, loc)


async def require_members_in_municipality(
    session: AsyncSession, municipality: str, member_ids: list[uuid.UUID], loc: str
) -> None:
    await require_in_municipality(session, municipality, Member, col(Member.id), member_ids, loc)


# --- cases --------------------------------------------------------------------------------------------


async def visible_case(
    session: AsyncSession, principal: Principal, case_id: uuid.UUID, *, lock: bool = False
) -> CaseFact:
    """The projected case if it is of the caller's municipality; 404 otherwise."""
    case = await session.get(CaseFact, case_id, with_for_update=lock or None)
    if case is None or case.municipality != principal.municipality:
        raise not_found("case")
    return case


async def case_known_to(
    session: AsyncSession, principal: Principal, case_id: uuid.UUID, *, lock: bool = False
) -> CaseFact:
    """The case, if the caller may act on it: coordinator any of the municipality; an institution
    one it reported or one referred to it."""
    case = await visible_case(session, principal, case_id, lock=lock)
    if sees_all_of_municipality(principal):
        return case
    ids = await member_ids_of(session, principal)
    if case.reported_by_member_id and case.reported_by_member_id in {str(i) for i in ids}:
        return case
    if ids:
        referred = await session.scalar(
            sa.select(col(Referral.id)).where(col(Referral.case_id) == case_id, col(Referral.to_member_id).in_(ids))
        )
        if referred is not None:
            return case
    raise not_found("case")


# --- referrals ----------------------------------------------------------------------------------------


async def referral_visibility(session: AsyncSession, principal: Principal) -> sa.ColumnElement[bool]:
    """Which referrals the caller sees (CONTRACT §2), as a filter on `referrals`."""
    own = col(Referral.municipality) == principal.municipality
    if sees_all_of_municipality(principal):
        return own
    ids = await member_ids_of(session, principal)
    if not ids:
        return sa.false()
    return sa.and_(
        own,
        sa.or_(col(Referral.to_member_id).in_(ids), col(Referral.sender_member_id).in_([str(i) for i in ids])),
    )


async def visible_referral(
    session: AsyncSession, principal: Principal, referral_id: uuid.UUID, *, lock: bool = False
) -> Referral:
    """The referral if the caller sees it; 404 otherwise."""
    query = sa.select(Referral).where(col(Referral.id) == referral_id, await referral_visibility(session, principal))
    if lock:
        query = query.with_for_update()
    referral = (await session.execute(query)).scalar_one_or_none()
    if referral is None:
        raise not_found("referral")
    return referral


def may_act_on_referral(principal: Principal, referral: Referral, action: str, member_ids: set[uuid.UUID]) -> bool:
    """The receiving institution acknowledges, accepts, declines and completes; the sender (its member or
    its author) or the coordinator cancels."""
    if action in domain.RECEIVER_ACTIONS:
        return referral.to_member_id in member_ids
    return (
        sees_all_of_municipality(principal)
        or (referral.sender_member_id is not None and referral.sender_member_id in {str(i) for i in member_ids})
        or referral.created_by == principal.sub
    )


async def require_referral_action(
    session: AsyncSession, principal: Principal, referral: Referral, action: str
) -> None:
    """403 unless the caller may do `action` to the (visible) referral."""
    if may_act_on_referral(principal, referral, action, await member_ids_of(session, principal)):
        return
    if action in domain.RECEIVER_ACTIONS:
        raise forbidden("Only the receiving institution may do this.")
    raise forbidden("Only the sender or the coordinator may cancel a referral.")


# --- meetings and plans -------------------------------------------------------------------------------


def meetings_scope(principal: Principal) -> sa.ColumnElement[bool]:
    return col(EtnMeeting.municipality) == principal.municipality


async def own_meeting(
    session: AsyncSession, principal: Principal, meeting_id: uuid.UUID, *, lock: bool = False
) -> EtnMeeting:
    """A meeting of the caller's municipality; 404 otherwise."""
    meeting = await session.get(EtnMeeting, meeting_id, with_for_update=lock or None)
    if meeting is None or meeting.municipality != principal.municipality:
        raise not_found("meeting")
    return meeting


async def responsible_scope(session: AsyncSession, principal: Principal) -> sa.ColumnElement[bool]:
    """The plan actions the caller sees among those of a case or a municipality: the coordinator all,
    anyone else those of the members she acts for."""
    if sees_all_of_municipality(principal):
        return sa.true()
    return col(PlanAction.responsible_member_id).in_(await member_ids_of(session, principal))


def plan_actions_scope(principal: Principal) -> sa.ColumnElement[bool]:
    return col(PlanAction.municipality) == principal.municipality


async def visible_case_plan(
    session: AsyncSession, principal: Principal, case_id: uuid.UUID
) -> tuple[CaseFact, list[PlanAction]]:
    """The case and the plan actions of it the caller sees; 404 for an institution with none of them."""
    case = await visible_case(session, principal, case_id)
    query = sa.select(PlanAction).where(
        col(PlanAction.case_id) == case_id, await responsible_scope(session, principal)
    )
    rows = list((await session.execute(query.order_by(col(PlanAction.due_date), col(PlanAction.id)))).scalars())
    if not rows and not sees_all_of_municipality(principal):
        raise not_found("case")
    return case, rows


async def own_plan_action(
    session: AsyncSession, principal: Principal, action_id: uuid.UUID, *, lock: bool = False
) -> PlanAction:
    """A plan action of the caller's municipality she may complete (the coordinator, or the responsible
    member's people); 404 otherwise."""
    action = await session.get(PlanAction, action_id, with_for_update=lock or None)
    if action is None or action.municipality != principal.municipality:
        raise not_found("plan action")
    if not sees_all_of_municipality(principal):
        if action.responsible_member_id not in await member_ids_of(session, principal):
            raise not_found("plan action")
    return action


# --- reports ------------------------------------------------------------------------------------------


def report_scope(principal: Principal, municipality: str | None) -> str:
    """The municipality a report covers: the coordinator's own (another is 404); the auditor names one
    (or `*`), else 422."""
    if principal.municipality == "*":
        if not municipality:
            raise invalid(["query", "municipality"], "an auditor names the municipality")
        return municipality
    if municipality and municipality != principal.municipality:
        raise not_found("municipality")
    return principal.municipality


def min_cell(principal: Principal, settings: Settings) -> int | None:
    """Small-cell suppression applies to everyone outside the municipality: the auditor (DOMAIN.md)."""
    return int(settings.reports_min_cell) if principal.role is Role.auditor else None

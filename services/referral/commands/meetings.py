"""ETN and Steering Committee meetings: scheduled, their minutes recorded once (each decision a case-plan
action), and plan actions completed."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col

from services.referral import access, events
from services.referral.commands import UnitOfWork, await_cases, now
from services.referral.models import CaseFact, EtnMeeting, PlanAction
from services.referral.schemas import DecisionIn, MeetingIn, MinutesIn
from shared.auth import require_own_municipality
from shared.errors import conflict, invalid


async def schedule_meeting(uow: UnitOfWork, command: MeetingIn) -> EtnMeeting:
    """A meeting of the caller's municipality about its cases with its members (422 for another's);
    a past `scheduled_for` records one already held. Publishes `etn.meeting_scheduled`."""
    principal, session = uow.principal, uow.session
    require_own_municipality(principal, command.municipality)
    if command.scheduled_for.tzinfo is None:
        raise invalid(["body", "scheduled_for"], "an instant needs an offset (RFC 3339)")
    await await_cases(uow, command.case_ids)
    async with session.begin():
        await access.require_cases_in_municipality(session, principal.municipality, command.case_ids, "case_ids")
        await access.require_members_in_municipality(session, principal.municipality, command.member_ids, "member_ids")
        meeting = EtnMeeting(
            municipality=command.municipality,
            kind=command.kind,
            scheduled_for=command.scheduled_for,
            case_ids=[str(c) for c in command.case_ids],
            member_ids=[str(m) for m in command.member_ids],
            held=command.scheduled_for <= now(),
            created_by=principal.sub,
        )
        session.add(meeting)
        await session.flush()
        await events.meeting_scheduled(session, uow.settings, meeting)
    return meeting


@dataclass(frozen=True)
class RecordMinutes:
    meeting_id: uuid.UUID
    minutes: MinutesIn


async def record_minutes(uow: UnitOfWork, command: RecordMinutes) -> tuple[EtnMeeting, list[PlanAction]]:
    """Who attended and what was decided; each decision becomes a case-plan action. Once per meeting
    (409 the second time); the cases and members are the meeting's municipality's (422 otherwise).
    Publishes `etn.minutes_recorded`."""
    principal, session, minutes = uow.principal, uow.session, command.minutes
    case_ids = [d.case_id for d in minutes.decisions]
    await await_cases(uow, case_ids)
    async with session.begin():
        meeting = await access.own_meeting(session, principal, command.meeting_id, lock=True)
        if meeting.minutes_recorded_at is not None:
            raise conflict("The meeting's minutes are already recorded.")
        municipality = principal.municipality
        await access.require_members_in_municipality(
            session, municipality, minutes.attended_member_ids, "attended_member_ids"
        )
        await access.require_cases_in_municipality(session, municipality, case_ids, "decisions")
        responsible = [d.responsible_member_id for d in minutes.decisions]
        await access.require_members_in_municipality(session, municipality, responsible, "decisions")
        at = now()
        actions = await _plan_actions(uow, meeting, minutes.decisions, at)
        session.add_all(actions)
        meeting.attended_member_ids = [str(m) for m in minutes.attended_member_ids]
        meeting.minutes_recorded_at = at
        meeting.held = True
        await session.flush()
        await events.minutes_recorded(session, uow.settings, meeting, actions)
    return meeting, actions


async def _plan_actions(
    uow: UnitOfWork, meeting: EtnMeeting, decisions: list[DecisionIn], at: datetime
) -> list[PlanAction]:
    """The decisions as plan actions (the action's text sealed), with their cases' numbers."""
    case_ids = [d.case_id for d in decisions]
    numbers: dict[uuid.UUID, str] = dict(
        (
            await uow.session.execute(
                sa.select(col(CaseFact.case_id), col(CaseFact.case_number)).where(col(CaseFact.case_id).in_(case_ids))
            )
        )
        .tuples()
        .all()
    )
    action_ids = [uuid.uuid4() for _ in decisions]
    return [
        PlanAction(
            id=action_id,
            meeting_id=meeting.id,
            case_id=d.case_id,
            case_number=numbers[d.case_id],
            municipality=meeting.municipality,
            action=uow.sealer.seal("plan_actions", action_id, "action", d.action) or "",
            responsible_member_id=d.responsible_member_id,
            due_date=d.due_date,
            created_at=at,
        )
        for action_id, d in zip(action_ids, decisions, strict=True)
    ]


async def complete_plan_action(uow: UnitOfWork, action_id: uuid.UUID) -> PlanAction:
    """Mark a plan action done: the responsible institution or the coordinator (404 for anyone else).
    Twice is 409."""
    async with uow.session.begin():
        action = await access.own_plan_action(uow.session, uow.principal, action_id, lock=True)
        if action.status != "open":
            raise conflict(f"The action is already {action.status}.")
        action.status = "completed"
        action.completed_at = now()
        action.completed_by = uow.principal.sub
        await uow.session.flush()
    return action

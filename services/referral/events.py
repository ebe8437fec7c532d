"""What referral publishes: functions that build the contract's models and `emit` them in the caller's
transaction (a route's command, the routing workflow, the scheduler). Only ids, case numbers and coded
facts go into events.

What referral consumes is elsewhere: the registry in `consumer.py`, the routing workflow in `routing.py`,
the projections of other services' facts in `projection.py`.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.referral.models import EtnMeeting, Member, PlanAction, Referral
from shared.contracts import events as contract
from shared.events import Envelope, emit, event_of, publish_events
from shared.settings import Settings
from shared.vocab import MemberKind

# --- what referral publishes -------------------------------------------------------------------


async def member_saved(session: AsyncSession, settings: Settings, member: Member) -> None:
    data = contract.MemberSaved(
        member_id=member.id,
        name=member.name,  # an institution's name, not a person's
        kind=MemberKind(member.kind),
        services=member.services,
        email=member.email,
        active=member.active,
    )
    await emit(session, settings, data, subject=str(member.id), municipality=member.municipality)


def _referral_fields(referral: Referral) -> dict[str, Any]:
    """What every referral event says about the referral it concerns."""
    return {
        "referral_id": referral.id,
        "case_id": referral.case_id,
        "case_number": referral.case_number,
        "to_member_id": str(referral.to_member_id),
        "to_member_kind": referral.to_member_kind,
    }


def referral_created_event(referral: Referral | Mapping[str, Any]) -> Envelope:
    """`referral.created` of a referral, or of the row routing inserts (`routing.py`: a dict of its columns)."""
    r = referral if isinstance(referral, Mapping) else referral.model_dump()
    data = contract.ReferralCreated(
        referral_id=r["id"],
        case_id=r["case_id"],
        case_number=r["case_number"],
        to_member_id=str(r["to_member_id"]),
        to_member_kind=r["to_member_kind"],
        service=r["service"],
        urgency=r["urgency"],
        reason=r["reason"],
        status=r["status"],
        ack_due_at=r["ack_due_at"],
        consent_override=r["consent_override_reason"] is not None,
        legal_exception=r["legal_exception"],
    )
    return event_of(data, subject=str(r["case_id"]), municipality=r["municipality"])


async def referral_created(session: AsyncSession, settings: Settings, referral: Referral) -> None:
    await publish_events(session, settings, [(referral_created_event(referral), str(referral.case_id))])


async def referral_status_changed(
    session: AsyncSession,
    settings: Settings,
    referral: Referral,
    previous: str,
    by_role: str,
    at: datetime,
    reason: str | None = None,
) -> None:
    facts = {**_referral_fields(referral), "previous_status": previous, "status": referral.status,
             "by_role": by_role, "at": at}  # fmt: skip
    if reason is not None:  # a coded reason (e.g. `consent_withdrawn`), never free text
        facts["reason"] = reason
    data = contract.ReferralStatusChanged(**facts)
    await emit(session, settings, data, subject=str(referral.case_id), municipality=referral.municipality)


async def sla_breached(session: AsyncSession, settings: Settings, referral: Referral) -> None:
    data = contract.ReferralSlaBreached(
        **_referral_fields(referral), urgency=referral.urgency, ack_due_at=referral.ack_due_at
    )
    await emit(session, settings, data, subject=str(referral.case_id), municipality=referral.municipality)


async def meeting_scheduled(session: AsyncSession, settings: Settings, meeting: EtnMeeting) -> None:
    data = contract.MeetingScheduled(
        meeting_id=meeting.id,
        kind=meeting.kind,
        scheduled_for=meeting.scheduled_for,
        held=meeting.held,
        case_ids=[uuid.UUID(case_id) for case_id in meeting.case_ids],
        member_ids=meeting.member_ids,
    )
    await emit(session, settings, data, subject=str(meeting.id), municipality=meeting.municipality)


def _action(action: PlanAction) -> dict[str, Any]:
    return {
        "action_id": action.id,
        "case_id": action.case_id,
        "case_number": action.case_number,
        "responsible_member_id": str(action.responsible_member_id),
        "due_date": action.due_date,
    }


async def minutes_recorded(
    session: AsyncSession, settings: Settings, meeting: EtnMeeting, actions: list[PlanAction]
) -> None:
    data = contract.MinutesRecorded(
        meeting_id=meeting.id,
        kind=meeting.kind,
        actions=[contract.PlanActionData(**_action(a)) for a in actions],
    )
    await emit(session, settings, data, subject=str(meeting.id), municipality=meeting.municipality)


async def plan_action_overdue(session: AsyncSession, settings: Settings, action: PlanAction) -> None:
    data = contract.PlanActionOverdue(**_action(action))
    await emit(session, settings, data, subject=str(action.case_id), municipality=action.municipality)

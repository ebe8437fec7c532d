"""Referrals by hand: made by the coordinator or an institution (consent, legal exceptions, one active
referral per member and case), then acknowledged, accepted, declined, completed or cancelled."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlmodel import col

from services.referral import access, domain, events, routing
from services.referral.commands import UnitOfWork, await_cases, now
from services.referral.models import CaseFact, Member, Referral
from services.referral.schemas import ReferralIn
from shared.errors import conflict, invalid

CONSENT_REQUIRED = "https://mkr.al/problems/consent-required"


async def create_referral(uow: UnitOfWork, command: ReferralIn) -> Referral:
    """A manual referral. A member whose kind is outside the case's consent needs
    `consent_override_reason` (409 without), unless a legal exception applies (child at risk → child
    protection, threat to life → police), which is recorded in `legal_exception`. Publishes `referral.created`."""
    await await_cases(uow, [command.case_id])
    session = uow.session
    async with session.begin():
        # The case row lock serializes referrals of one case (two requests cannot both pass the check).
        case = await access.case_known_to(session, uow.principal, command.case_id, lock=True)
        member = await access.own_member(session, uow.principal, command.to_member_id)
        if not member.active:
            raise conflict("The member is inactive.")
        exception = _consent_exception(case, member, command)
        await _refuse_second_active(uow, case, member)
        referral = _manual_referral(uow, command, case, member, exception)
        session.add(referral)
        await session.flush()
        await events.referral_created(session, uow.settings, referral)
    return referral


def _consent_exception(case: CaseFact, member: Member, command: ReferralIn) -> str | None:
    """The legal exception that allows the referral without consent (None when consented); 409 when
    neither consent, an exception nor an override reason allows it."""
    if member.kind in case.consent_share_with:
        return None
    exception = domain.legal_exception(member.kind, routing.facts_of(case))
    if exception is None and not command.consent_override_reason:
        raise conflict(
            f"The survivor has not consented to sharing with {member.kind}; give consent_override_reason.",
            type_=CONSENT_REQUIRED,
        )
    return exception


async def _refuse_second_active(uow: UnitOfWork, case: CaseFact, member: Member) -> None:
    active = await uow.session.scalar(
        sa.select(col(Referral.id)).where(
            col(Referral.case_id) == case.case_id,
            col(Referral.to_member_id) == member.id,
            col(Referral.status).in_(domain.ACTIVE_STATUSES),
        )
    )
    if active is not None:
        raise conflict("The member already has an active referral for this case.", referral_id=str(active))


def _manual_referral(
    uow: UnitOfWork, command: ReferralIn, case: CaseFact, member: Member, exception: str | None
) -> Referral:
    principal, at = uow.principal, now()
    override = command.consent_override_reason if member.kind not in case.consent_share_with and not exception else None
    referral_id = uuid.uuid4()
    return Referral(
        id=referral_id,
        case_id=case.case_id,
        case_number=case.case_number,
        municipality=case.municipality,
        to_member_id=member.id,
        to_member_kind=member.kind,
        service=command.service,
        urgency=command.urgency,
        reason="manual",
        origin="manual",
        note=uow.sealer.seal("referrals", referral_id, "note", command.note),
        consent_override_reason=uow.sealer.seal("referrals", referral_id, "consent_override_reason", override),
        legal_exception=exception,
        sender_member_id=principal.member_id,
        sender_role=principal.role.value,
        created_by=principal.sub,
        created_at=at,
        updated_at=at,
        ack_due_at=domain.ack_due_at(at, command.urgency, uow.config.ack_seconds()),
        history=[{"status": "pending", "at": at.isoformat(), "by": principal.sub}],
    )


ReferralAction = Literal["acknowledge", "accept", "decline", "complete", "cancel"]


@dataclass(frozen=True)
class ActOnReferral:
    referral_id: uuid.UUID
    action: ReferralAction
    reason: str | None = None  # a decline's
    outcome: str | None = None  # a completion's


async def act_on_referral(uow: UnitOfWork, command: ActOnReferral) -> Referral:
    """acknowledge / accept / decline (`reason`) / complete (`outcome`): the receiving institution;
    cancel: the sender or the coordinator. Another's is 403, an invalid transition 409; publishes
    `referral.status_changed`."""
    action = command.action
    if action == "decline" and not command.reason:
        raise invalid(["body", "reason"], "a decline needs a reason")
    if action == "complete" and not command.outcome:
        raise invalid(["body", "outcome"], "a completion needs an outcome")
    session, principal = uow.session, uow.principal
    async with session.begin():
        referral = await access.visible_referral(session, principal, command.referral_id, lock=True)
        await access.require_referral_action(session, principal, referral, action)
        previous = referral.status
        try:
            referral.status = domain.next_status(previous, action)
        except domain.InvalidTransition as exc:
            raise conflict(str(exc), status_now=previous) from exc
        at = now()
        if action == "acknowledge":
            referral.acknowledged_at = at
        if action == "decline":
            referral.decline_reason = uow.sealer.seal("referrals", referral.id, "decline_reason", command.reason)
        if action == "complete":
            referral.outcome = uow.sealer.seal("referrals", referral.id, "outcome", command.outcome)
        referral.history = [*referral.history, {"status": referral.status, "at": at.isoformat(), "by": principal.sub}]
        referral.updated_at = at
        await session.flush()
        await events.referral_status_changed(session, uow.settings, referral, previous, principal.role.value, at)
    return referral

"""A case transferred to another municipality (`case.transferred`, CONTRACT §10), as referral sees it.

In the consumer's transaction, after the event id was recorded (a repeated event changes nothing):
the projection moves the case (municipality, case number; `reported_municipality` stays, so reports
keep counting it where it was reported), its protection orders follow it, the sending municipality's
open referrals are cancelled with reason `transferred` (their history says so, `referral.status_changed`
announces each) and its ETN's open plan actions with them, and routing runs in the receiving
municipality by its own rules.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.referral import domain, events, routing
from services.referral.config import ReferralConfig
from services.referral.models import CaseFact, CaseTransfer, PlanAction, ProtectionOrder, Referral
from shared.contracts import parse_instant
from shared.events import Envelope
from shared.settings import Settings


def _instant(value: object) -> datetime | None:
    return parse_instant(value) if value else None

TRANSFER_SYSTEM = "system:transfer"
REASON = "transferred"
MOVED_ORIGIN = "auto_moved"  # an automatic referral that a move of its case ended


async def on_case_transferred(
    settings: Settings, config: ReferralConfig, session: AsyncSession, event: Envelope
) -> None:
    d = event.data
    transfer_id, case_id = uuid.UUID(str(d["transfer_id"])), uuid.UUID(str(d["case_id"]))
    accepted_at = _instant(d.get("accepted_at")) or event.time
    first = await session.execute(
        pg_insert(CaseTransfer)
        .values(
            transfer_id=transfer_id,
            case_id=case_id,
            from_municipality=d["from_municipality"],
            to_municipality=d["to_municipality"],
            from_case_number=d["previous_case_number"],
            to_case_number=d["case_number"],
            accepted_at=accepted_at,
        )
        .on_conflict_do_nothing()
        .returning(col(CaseTransfer.transfer_id))
    )
    if first.first() is None:
        return  # this move was applied already
    case = await _move_case(session, event)
    await session.execute(
        sa.update(ProtectionOrder)
        .where(col(ProtectionOrder.case_id) == case_id)
        .values(municipality=case.municipality, case_number=case.case_number)
    )
    await cancel_senders_referrals(session, settings, case_id, str(d["from_municipality"]))
    # The sending ETN's open plan actions end with its referrals (no overdue alerts for a case it no longer has).
    await session.execute(
        sa.update(PlanAction)
        .where(
            col(PlanAction.case_id) == case_id,
            col(PlanAction.municipality) == d["from_municipality"],
            col(PlanAction.status) == "open",
        )
        .values(status="cancelled")
    )
    await routing.route(session, settings, config, case, event)


async def _move_case(session: AsyncSession, event: Envelope) -> CaseFact:
    """The projected case, now of the receiving municipality; projected from the event's coded facts
    if its report never reached this service."""
    d = event.data
    case = await session.get(CaseFact, uuid.UUID(str(d["case_id"])), with_for_update=True)
    if case is None:
        case = CaseFact(
            case_id=uuid.UUID(str(d["case_id"])),
            case_number=str(d["case_number"]),
            municipality=event.municipality,
            reported_municipality=str(d["from_municipality"]),
            reported_at=_instant(d.get("reported_at")) or event.time,
            risk_level=str(d.get("risk_level") or "low"),
            source=d.get("source"),
            sex=d.get("sex"),
            age_group=d.get("age_group"),
            ethnicity=d.get("ethnicity"),
            disability=d.get("disability"),
            violence_types=list(d.get("violence_types") or []),
            perpetrator_relationship=d.get("perpetrator_relationship"),
            needs=list(d.get("needs") or []),
            children_count=int(d.get("children_count") or 0),
        )
    case.municipality = event.municipality
    case.case_number = str(d["case_number"])
    if d.get("risk_level"):
        case.risk_level = str(d["risk_level"])
    if isinstance(d.get("consent_share_with"), list):  # the consent as it stands at the move
        case.consent_share_with = [str(kind) for kind in d["consent_share_with"]]
    session.add(case)
    await session.flush()
    return case


async def cancel_senders_referrals(
    session: AsyncSession, settings: Settings, case_id: uuid.UUID, municipality: str
) -> int:
    """Cancel the sending municipality's open referrals of the case (reason `transferred`): that ends
    its institutions' access, and the receiving municipality refers by its own rules."""
    now = datetime.now(UTC)
    referrals = (
        await session.execute(
            sa.select(Referral)
            .where(
                col(Referral.case_id) == case_id,
                col(Referral.municipality) == municipality,
                col(Referral.status).in_(domain.ACTIVE_STATUSES),
            )
            .order_by(col(Referral.created_at), col(Referral.id))
            .with_for_update()
        )
    ).scalars().all()
    for referral in referrals:
        previous = referral.status
        referral.status = "cancelled"
        if referral.origin == "auto":
            # Out of the once-per-(case, member, rule) guard of automatic referrals: a case that moves back
            # is referred again by this municipality's rules.
            referral.origin = MOVED_ORIGIN
        referral.history = [
            *referral.history,
            {"status": "cancelled", "at": now.isoformat(), "by": TRANSFER_SYSTEM, "reason": REASON},
        ]
        referral.updated_at = now
        await events.referral_status_changed(session, settings, referral, previous, "system", now, reason=REASON)
    await session.flush()
    return len(referrals)

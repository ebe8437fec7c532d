"""What referral publishes, and what it consumes: intake's cases (routing + projection) and shelter's facts.

Handlers run inside the consumer's transaction, after the event id was recorded, so a repeated
event changes nothing twice. Only ids, case numbers and coded facts go into events.
"""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.referral import domain, erasure
from services.referral.config import ReferralConfig
from services.referral.models import (
    CaseFact,
    EtnMeeting,
    Member,
    Placement,
    PlanAction,
    ProtectionOrder,
    Referral,
    RentBonus,
    RentBonusPayment,
    RoutingDecision,
    RoutingRuleSet,
    ShelterMember,
)
from shared.contracts import EventRejected
from shared.contracts import events as contract
from shared.db import table_of
from shared.dispatch import EventHandlers, Received
from shared.events import Envelope, emit, event_of, publish_events
from shared.settings import Settings
from shared.vocab import MemberKind

SYSTEM = "system:routing"


def _now() -> datetime:
    return datetime.now(UTC)


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


def _referral_created_event(referral: Referral) -> Envelope:
    data = contract.ReferralCreated(
        **_referral_fields(referral),
        service=referral.service,
        urgency=referral.urgency,
        reason=referral.reason,
        status=referral.status,
        ack_due_at=referral.ack_due_at,
        consent_override=referral.consent_override_reason is not None,
        legal_exception=referral.legal_exception,
    )
    return event_of(data, subject=str(referral.case_id), municipality=referral.municipality)


async def referral_created(session: AsyncSession, settings: Settings, referral: Referral) -> None:
    await publish_events(session, settings, [(_referral_created_event(referral), str(referral.case_id))])


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


# --- routing -------------------------------------------------------------------------------------


async def rules_for(
    session: AsyncSession, municipality: str, profile: str = "albania"
) -> tuple[list[domain.RoutingRule], bool]:
    """The municipality's routing table, or the country profile's defaults when it has not set one (second
    value True)."""
    row = await session.get(RoutingRuleSet, municipality)
    if row is None:
        return list(domain.profile_rules(profile)), True
    return [domain.RoutingRule.model_validate(r) for r in row.rules], False


def facts_of(case: CaseFact) -> domain.CaseFacts:
    return domain.CaseFacts(
        case_id=case.case_id,
        risk_level=case.risk_level,
        source=case.source,
        children_count=case.children_count,
        needs=tuple(case.needs),
        violence_types=tuple(case.violence_types),
        consent_share_with=tuple(case.consent_share_with),
    )


Directory = tuple[list[domain.RoutingRule], list[domain.MemberRef]]


async def directory(session: AsyncSession, municipality: str, profile: str = "albania") -> Directory:
    """The municipality's routing rules (the defaults when it has not set its own) and active members, in
    directory order: one query, kept for the rest of the session's transaction (the consumer's batch).

    Members and rules change only through the API, never inside a consumer's transaction.
    """
    cache: dict[str, Directory] = session.info.setdefault("routing_directory", {})
    if municipality in cache:
        return cache[municipality]
    rules = (
        sa.select(col(RoutingRuleSet.rules))
        .where(col(RoutingRuleSet.municipality) == municipality)
        .scalar_subquery()
    )
    members = (
        sa.select(col(Member.id), col(Member.kind), col(Member.created_at))
        .where(col(Member.municipality) == municipality, col(Member.active).is_(True))
        .subquery()
    )
    # One row even without members: the rules ride on every row.
    rows = (
        await session.execute(
            sa.select(rules.label("rules"), members.c.id, members.c.kind)
            .select_from(sa.select(sa.literal(1).label("one")).subquery().outerjoin(members, sa.true()))
            .order_by(members.c.created_at, members.c.id)
        )
    ).all()
    own = rows[0].rules
    found = (
        [domain.RoutingRule.model_validate(r) for r in own] if own is not None else list(domain.profile_rules(profile)),
        [domain.MemberRef(row.id, row.kind) for row in rows if row.id is not None],
    )
    cache[municipality] = found
    return found


async def route(
    session: AsyncSession, settings: Settings, config: ReferralConfig, case: CaseFact,
    event: Received[Any] | Envelope,
) -> None:
    """Apply the routing rules to a case and store every decision, made or not.

    A fixed number of statements whatever the decisions: the directory (once per transaction and
    municipality), the case's active referrals (locked), the new referrals, their events, the decisions.
    """
    rules, members = await directory(session, case.municipality, settings.profile)
    decisions = domain.route_case(facts_of(case), rules, members)
    now = _now()
    to_refer = [d for d in decisions if d.outcome == "refer" and d.member_id is not None]
    active: dict[uuid.UUID, Referral] = {}
    if to_refer:
        for referral in (
            await session.execute(
                sa.select(Referral)
                .where(
                    col(Referral.case_id) == case.case_id,
                    col(Referral.to_member_id).in_([d.member_id for d in to_refer]),
                    col(Referral.status).in_(domain.ACTIVE_STATUSES),
                )
                .order_by(col(Referral.created_at), col(Referral.id))
                .with_for_update()
            )
        ).scalars():
            active.setdefault(referral.to_member_id, referral)
    gaps = [d.kind for d in decisions if d.outcome == "no_member"]
    announced: set[str] = set()
    if gaps:
        announced = set(
            (
                await session.execute(
                    sa.select(col(RoutingDecision.kind))
                    .where(
                        col(RoutingDecision.case_id) == case.case_id,
                        col(RoutingDecision.municipality) == case.municipality,
                        col(RoutingDecision.kind).in_(gaps),
                        col(RoutingDecision.outcome) == "no_member",
                    )
                    .distinct()
                )
            ).scalars()
        )

    outcomes: list[tuple[str, uuid.UUID | None]] = []
    new: dict[int, Referral] = {}  # decision index → the referral to insert
    for i, decision in enumerate(decisions):
        if decision.outcome != "refer" or decision.member_id is None:
            outcomes.append((decision.outcome, None))
            continue
        existing = active.get(decision.member_id)
        if existing is None:
            new[i] = _auto_referral(config, case, decision, now)
            outcomes.append(("referred", new[i].id))
        elif existing.status == "pending" and (
            domain.URGENCY_ORDER[decision.urgency] > domain.URGENCY_ORDER[existing.urgency]
        ):
            # A risk rise: the still-pending referral is escalated (deadline brought forward, never pushed back).
            due = domain.ack_due_at(now, decision.urgency, config.ack_seconds())
            existing.urgency = decision.urgency
            existing.ack_due_at = min(existing.ack_due_at, due)
            existing.updated_at = now
            outcomes.append(("escalated", existing.id))
        else:
            outcomes.append(("already_referred", existing.id))
    inserted: set[uuid.UUID] = set()
    if new:
        inserted = set(
            (await session.execute(_AUTO_REFERRAL_INSERT, [r.model_dump() for r in new.values()])).scalars()
        )
        for i, referral in new.items():
            if referral.id not in inserted:  # the same automatic referral exists already (not active any more)
                outcomes[i] = ("already_referred", None)

    announcements: list[tuple[Envelope, str]] = []
    for i, decision in enumerate(decisions):
        if i in new and new[i].id in inserted:
            announcements.append((_referral_created_event(new[i]), str(case.case_id)))
        elif decision.outcome == "no_member" and decision.kind not in announced:
            data = contract.MechanismGap(
                case_id=case.case_id, case_number=case.case_number, missing_kind=decision.kind, rule=decision.reason
            )
            gap = event_of(data, subject=str(case.case_id), municipality=case.municipality)
            announcements.append((gap, str(case.case_id)))
    await publish_events(session, settings, announcements)
    if decisions:
        await session.execute(
            _DECISION_INSERT,
            [
                {
                    "id": uuid.uuid4(),
                    "case_id": case.case_id,
                    "municipality": case.municipality,
                    "trigger": event.type,
                    "event_id": event.id,
                    "risk_level": case.risk_level,
                    "kind": decision.kind,
                    "rules": decision.rules,
                    "urgency": decision.urgency,
                    "outcome": outcome,
                    "member_id": decision.member_id,
                    "referral_id": referral_id,
                    "legal_exception": decision.legal_exception,
                    "at": now,
                }
                for decision, (outcome, referral_id) in zip(decisions, outcomes, strict=True)
            ],
        )
    await session.flush()  # escalations


# Statements built once (compiled once); the rows go as parameters, in one multi-row INSERT each.
_referrals = table_of(Referral)
_AUTO_REFERRAL_INSERT = (
    pg_insert(_referrals)
    .on_conflict_do_nothing(
        index_elements=["case_id", "to_member_id", "reason"], index_where=sa.text("origin = 'auto'")
    )
    .returning(_referrals.c.id)
)
_DECISION_INSERT = sa.insert(table_of(RoutingDecision))


def _auto_referral(config: ReferralConfig, case: CaseFact, decision: domain.Decision, now: datetime) -> Referral:
    assert decision.member_id is not None
    return Referral(
        case_id=case.case_id,
        case_number=case.case_number,
        municipality=case.municipality,
        to_member_id=decision.member_id,
        to_member_kind=decision.kind,
        service=", ".join(decision.services) or None,
        urgency=decision.urgency,
        reason=decision.reason,
        origin="auto",
        legal_exception=decision.legal_exception,
        sender_role="coordinator",
        created_by=SYSTEM,
        created_at=now,
        updated_at=now,
        ack_due_at=domain.ack_due_at(now, decision.urgency, config.ack_seconds()),
        history=[{"status": "pending", "at": now.isoformat(), "by": SYSTEM}],
    )


CONSENT_SYSTEM = "system:consent"


async def end_withdrawn_referrals(
    session: AsyncSession, settings: Settings, case: CaseFact, withdrawn: set[str]
) -> None:
    """A withdrawal of consent for a kind cancels the case's open referrals to that kind (reason
    `consent_withdrawn`, in the history), which ends that institution's access to the case. A referral a
    legal exception allows without consent (DOMAIN.md: child protection for a child at risk, police for a
    threat to life) stays open and its history says why. Idempotent: only open referrals are touched, and
    a kept one is noted once per withdrawal."""
    facts = facts_of(case)
    open_referrals = (
        await session.execute(
            sa.select(Referral)
            .where(
                col(Referral.case_id) == case.case_id,
                col(Referral.to_member_kind).in_(sorted(withdrawn)),
                col(Referral.status).in_(domain.ACTIVE_STATUSES),
            )
            .order_by(col(Referral.created_at), col(Referral.id))
            .with_for_update()
        )
    ).scalars()
    now = _now()
    for referral in open_referrals:
        exception = domain.legal_exception(referral.to_member_kind, facts)
        if exception is not None:
            kept = f"consent_withdrawn: kept by the legal exception {exception}"
            if not any(entry.get("reason") == kept for entry in referral.history[-1:]):
                referral.history = [
                    *referral.history,
                    {"status": referral.status, "at": now.isoformat(), "by": CONSENT_SYSTEM, "reason": kept},
                ]
                referral.legal_exception = referral.legal_exception or exception
                referral.updated_at = now
            continue
        previous = referral.status
        referral.status = "cancelled"
        referral.history = [
            *referral.history,
            {"status": "cancelled", "at": now.isoformat(), "by": CONSENT_SYSTEM, "reason": "consent_withdrawn"},
        ]
        referral.updated_at = now
        await referral_status_changed(session, settings, referral, previous, "system", now, reason="consent_withdrawn")
    await session.flush()


# --- the projection of other services' events -------------------------------------------------------


def _month(value: str | None) -> date | None:
    if not value:
        return None
    return date.fromisoformat(value + "-01" if len(value) == 7 else value)


def _member_uuid(value: str | None) -> uuid.UUID | None:
    """A shelter's directory member id; one that is not a UUID makes the event unusable here."""
    if not value:
        return None
    try:
        return uuid.UUID(value)
    except ValueError:
        raise EventRejected("invalid_data") from None


def _money(value: str | None) -> Decimal:
    return Decimal(value or "0")


# A report (or a repeated one) sets every projected fact but `closed_at`; built once, compiled once.
_case_insert = pg_insert(CaseFact)
_CASE_UPSERT = _case_insert.on_conflict_do_update(
    index_elements=["case_id"],
    set_={
        name: _case_insert.excluded[name]
        for name in CaseFact.model_fields
        if name not in ("case_id", "closed_at", "reported_municipality", "repeat")  # repeat: only link events
    },
).returning(CaseFact)


def _codes(values: Any) -> list[str]:
    return [str(value) for value in values]


def _case_facts(event: Received[contract.CaseReported]) -> dict[str, Any]:
    d = event.data
    return {
        "case_id": d.case_id,
        "case_number": d.case_number,
        "municipality": event.municipality,
        "reported_municipality": event.municipality,
        "reported_at": d.reported_at or event.time,
        "status": "open",
        "risk_level": str(d.risk_level),
        "source": d.source,
        "sex": None if d.sex is None else str(d.sex),
        "age_group": None if d.age_group is None else str(d.age_group),
        "ethnicity": d.ethnicity,
        "disability": d.disability,
        "violence_types": _codes(d.violence_types),
        "perpetrator_relationship": d.perpetrator_relationship,
        "needs": _codes(d.needs),
        "children_count": d.children_count or len(d.children_ages),
        # No consent given (or an older producer without the field): only the legal exceptions apply.
        "consent_share_with": _codes(d.consent_share_with),
        "reported_by_role": d.reported_by_role,
        "reported_by_member_id": d.reported_by_member_id,
        "pending_duplicates": d.pending_duplicates,
    }


class CaseProjection:
    """Referral's consumer: intake's cases (projected, then routed) and shelter's facts (for plans and reports)."""

    def __init__(self, settings: Settings, config: ReferralConfig) -> None:
        self.settings = settings
        self.config = config

    async def case_reported(self, session: AsyncSession, event: Received[contract.CaseReported]) -> None:
        # The projection row as stored, without reading it back.
        case = (
            await session.execute(_CASE_UPSERT, _case_facts(event), execution_options={"populate_existing": True})
        ).scalar_one()
        await route(session, self.settings, self.config, case, event)

    async def risk_assessed(self, session: AsyncSession, event: Received[contract.CaseRiskAssessed]) -> None:
        case = await session.get(CaseFact, event.data.case_id, with_for_update=True)
        if case is None:
            return  # not reported here (yet): nothing to route
        level = str(event.data.risk_level)
        rose = domain.risk_rose(case.risk_level, level)
        case.risk_level = level
        await session.flush()
        if rose:
            await route(session, self.settings, self.config, case, event)

    async def case_closed(self, session: AsyncSession, event: Received[contract.CaseClosed]) -> None:
        case = await session.get(CaseFact, event.data.case_id, with_for_update=True)
        if case is not None:
            case.status = "closed"
            case.closed_at = event.data.closed_at or event.time
            await session.flush()

    async def case_reopened(self, session: AsyncSession, event: Received[contract.CaseReopened]) -> None:
        case = await session.get(CaseFact, event.data.case_id, with_for_update=True)
        if case is not None:
            case.status = "open"
            case.closed_at = None
            await session.flush()

    async def consent_changed(self, session: AsyncSession, event: Received[contract.ConsentChanged]) -> None:
        case = await session.get(CaseFact, event.data.case_id, with_for_update=True)
        if case is None:
            return
        case.consent_share_with = _codes(event.data.share_with)
        withdrawn = set(_codes(event.data.withdrawn)) - set(case.consent_share_with)
        if withdrawn:
            await session.flush()
            await end_withdrawn_referrals(session, self.settings, case, withdrawn)
        await session.flush()

    def registry(self) -> EventHandlers:
        return EventHandlers({
            contract.CaseReported: self.case_reported,
            contract.CaseRiskAssessed: self.risk_assessed,
            contract.CaseClosed: self.case_closed,
            contract.CaseReopened: self.case_reopened,
            contract.ConsentChanged: self.consent_changed,
            contract.ProtectionOrderRecorded: on_protection_order,
            contract.ShelterAvailabilityChanged: on_shelter,
            contract.ShelterFull: on_shelter,
            contract.PlacementStarted: on_placement_started,
            contract.PlacementEnded: on_placement_ended,
            contract.RentBonusDecided: on_rent_bonus_decided,
            contract.RentBonusPaymentDue: on_payment_due,
            contract.RentBonusPaymentPaid: on_payment_paid,
            contract.CaseTransferred: self.case_transferred,
            contract.CaseAnonymised: on_case_anonymised,
            contract.CaseLinked: on_links_changed,
            contract.CaseUnlinked: on_links_changed,
            contract.CaseFactsCorrected: on_facts_corrected,
        })

    async def case_transferred(self, session: AsyncSession, event: Received[contract.CaseTransferred]) -> None:
        from services.referral import transfers  # it builds on this module's routing and publishing

        await transfers.on_case_transferred(self.settings, self.config, session, event.envelope)


async def on_links_changed(session: AsyncSession, event: Received[contract.CaseLinksChanged]) -> None:
    """`case.linked` / `case.unlinked` carry the case's state after the decision: applied as it is (a
    redelivery sets the same values). A raised risk comes as its own `case.risk_assessed`."""
    await session.execute(
        sa.update(CaseFact)
        .where(col(CaseFact.case_id) == event.data.case_id)
        .values(repeat=event.data.repeat, pending_duplicates=event.data.pending_duplicates)
    )


async def on_facts_corrected(session: AsyncSession, event: Received[contract.CaseFactsCorrected]) -> None:
    """A corrected date of birth moved the case to another age group: the projection (and through its
    triggers the monthly rollups the reports read) follows. Routing does not read the age group."""
    await session.execute(
        sa.update(CaseFact)
        .where(col(CaseFact.case_id) == event.data.case_id)
        .values(age_group=str(event.data.age_group))
    )


async def on_case_anonymised(session: AsyncSession, event: Received[contract.CaseAnonymised]) -> None:
    await erasure.on_case_anonymised(session, event.envelope)


async def on_protection_order(session: AsyncSession, event: Received[contract.ProtectionOrderRecorded]) -> None:
    d = event.data
    values = {
        "order_id": d.order_id,
        "case_id": d.case_id,
        "case_number": d.case_number or "",
        "municipality": event.municipality,
        "kind": d.kind,
        "status": d.status or "issued",
        "issued_at": d.issued_at,
        "expires_at": d.expires_at,
    }
    await session.execute(
        pg_insert(ProtectionOrder).values(**values).on_conflict_do_update(index_elements=["order_id"], set_=values)
    )


async def on_shelter(
    session: AsyncSession, event: Received[contract.ShelterAvailability]
) -> None:
    values = {
        "shelter_id": event.data.shelter_id,
        "member_id": _member_uuid(event.data.member_id),
        "municipality": event.municipality,
    }
    await session.execute(
        pg_insert(ShelterMember).values(**values).on_conflict_do_update(index_elements=["shelter_id"], set_=values)
    )


async def on_placement_started(session: AsyncSession, event: Received[contract.PlacementStarted]) -> None:
    d = event.data
    await session.execute(
        pg_insert(Placement)
        .values(
            placement_id=d.placement_id,
            case_id=d.case_id,
            municipality=event.municipality,
            shelter_id=d.shelter_id,
            adults=d.adults,
            children=d.children,
            started_at=d.started_at or event.time,
        )
        .on_conflict_do_nothing()
    )


async def on_placement_ended(session: AsyncSession, event: Received[contract.PlacementEnded]) -> None:
    await session.execute(
        sa.update(Placement)
        .where(Placement.placement_id == event.data.placement_id)  # type: ignore[arg-type]
        .values(ended_at=event.data.ended_at or event.time)
    )


async def on_rent_bonus_decided(session: AsyncSession, event: Received[contract.RentBonusDecided]) -> None:
    d = event.data
    values = {
        "application_id": d.application_id,
        "case_id": d.case_id,
        "municipality": event.municipality,
        "approved": d.approved,
        "monthly_amount": _money(d.monthly_amount),
        "start_month": _month(d.start_month),
        "months": d.months or 0,
    }
    await session.execute(
        pg_insert(RentBonus).values(**values).on_conflict_do_update(index_elements=["application_id"], set_=values)
    )


async def on_payment_due(session: AsyncSession, event: Received[contract.RentBonusPaymentDue]) -> None:
    d = event.data
    await session.execute(
        pg_insert(RentBonusPayment)
        .values(
            payment_id=d.payment_id,
            application_id=d.application_id,
            case_id=d.case_id,
            municipality=event.municipality,
            month=_month(d.month),
            amount=_money(d.amount),
        )
        .on_conflict_do_nothing()
    )


async def on_payment_paid(session: AsyncSession, event: Received[contract.RentBonusPaymentPaid]) -> None:
    """A payment marked paid: counts in the report's paid_amount."""
    d = event.data
    paid_at = d.paid_at or event.time
    values = {
        "payment_id": d.payment_id,
        "application_id": d.application_id,
        "case_id": d.case_id,
        "municipality": event.municipality,
        "month": _month(d.month),
        "amount": _money(d.amount),
        "paid_at": paid_at,
    }
    await session.execute(
        pg_insert(RentBonusPayment)
        .values(**values)
        .on_conflict_do_update(index_elements=["payment_id"], set_={"paid_at": paid_at})
    )


def make_handler(settings: Settings, config: ReferralConfig) -> EventHandlers:
    return CaseProjection(settings, config).registry()


# Intake's cases and shelter's facts.
CONSUMED_TOPICS = (contract.INTAKE_TOPIC, contract.SHELTER_TOPIC)

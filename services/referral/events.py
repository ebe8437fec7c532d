"""What referral publishes, and what it consumes: intake's cases (routing + projection) and shelter's facts.

Handlers run inside the consumer's transaction, after the event id was recorded, so a repeated
event changes nothing twice. Only ids, case numbers and coded facts go into events.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable
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
from shared.db import table_of
from shared.events import INTAKE_TOPIC, REFERRAL_TOPIC, SHELTER_TOPIC, Envelope, make_event, publish, publish_many
from shared.settings import Settings

SOURCE = "mkr/referral"
CONSUMED_TOPICS = (INTAKE_TOPIC, SHELTER_TOPIC)
SYSTEM = "system:routing"


def _now() -> datetime:
    return datetime.now(UTC)


async def _emit(
    session: AsyncSession, settings: Settings, type_: str, municipality: str, key: str, data: dict[str, Any]
) -> None:
    event = make_event(type_=type_, source=SOURCE, subject=key, municipality=municipality, data=data)
    await publish(session, settings, REFERRAL_TOPIC, event, key=key)


# --- what referral publishes -------------------------------------------------------------------


async def member_saved(session: AsyncSession, settings: Settings, member: Member) -> None:
    data = {
        "member_id": str(member.id),
        "name": member.name,  # an institution's name, not a person's
        "kind": member.kind,
        "services": member.services,
        "email": member.email,
        "active": member.active,
    }
    await _emit(session, settings, "member.saved", member.municipality, str(member.id), data)


def _referral_fields(referral: Referral) -> dict[str, str]:
    """What every referral event says about the referral it concerns."""
    return {
        "referral_id": str(referral.id),
        "case_id": str(referral.case_id),
        "case_number": referral.case_number,
        "to_member_id": str(referral.to_member_id),
        "to_member_kind": referral.to_member_kind,
    }


def _referral_created_event(referral: Referral) -> Envelope:
    data = {
        **_referral_fields(referral),
        "service": referral.service,
        "urgency": referral.urgency,
        "reason": referral.reason,
        "status": referral.status,
        "ack_due_at": referral.ack_due_at.isoformat(),
        "consent_override": referral.consent_override_reason is not None,
        "legal_exception": referral.legal_exception,
    }
    key = str(referral.case_id)
    return make_event(
        type_="referral.created", source=SOURCE, subject=key, municipality=referral.municipality, data=data
    )


async def referral_created(session: AsyncSession, settings: Settings, referral: Referral) -> None:
    await publish(session, settings, REFERRAL_TOPIC, _referral_created_event(referral), key=str(referral.case_id))


async def referral_status_changed(
    session: AsyncSession,
    settings: Settings,
    referral: Referral,
    previous: str,
    by_role: str,
    at: datetime,
    reason: str | None = None,
) -> None:
    data = {
        **_referral_fields(referral),
        "previous_status": previous,
        "status": referral.status,
        "by_role": by_role,
        "at": at.isoformat(),
    }
    if reason is not None:  # a coded reason (e.g. `consent_withdrawn`), never free text
        data["reason"] = reason
    await _emit(session, settings, "referral.status_changed", referral.municipality, str(referral.case_id), data)


async def sla_breached(session: AsyncSession, settings: Settings, referral: Referral) -> None:
    data = {
        **_referral_fields(referral),
        "urgency": referral.urgency,
        "ack_due_at": referral.ack_due_at.isoformat(),
    }
    await _emit(session, settings, "referral.sla_breached", referral.municipality, str(referral.case_id), data)


async def meeting_scheduled(session: AsyncSession, settings: Settings, meeting: EtnMeeting) -> None:
    data = {
        "meeting_id": str(meeting.id),
        "kind": meeting.kind,
        "scheduled_for": meeting.scheduled_for.isoformat(),
        "held": meeting.held,
        "case_ids": meeting.case_ids,
        "member_ids": meeting.member_ids,
    }
    await _emit(session, settings, "etn.meeting_scheduled", meeting.municipality, str(meeting.id), data)


async def minutes_recorded(
    session: AsyncSession, settings: Settings, meeting: EtnMeeting, actions: list[PlanAction]
) -> None:
    data = {
        "meeting_id": str(meeting.id),
        "kind": meeting.kind,
        "actions": [
            {
                "action_id": str(a.id),
                "case_id": str(a.case_id),
                "case_number": a.case_number,
                "responsible_member_id": str(a.responsible_member_id),
                "due_date": a.due_date.isoformat(),
            }
            for a in actions
        ],
    }
    await _emit(session, settings, "etn.minutes_recorded", meeting.municipality, str(meeting.id), data)


async def plan_action_overdue(session: AsyncSession, settings: Settings, action: PlanAction) -> None:
    data = {
        "action_id": str(action.id),
        "case_id": str(action.case_id),
        "case_number": action.case_number,
        "responsible_member_id": str(action.responsible_member_id),
        "due_date": action.due_date.isoformat(),
    }
    await _emit(session, settings, "plan.action_overdue", action.municipality, str(action.case_id), data)


# --- routing -------------------------------------------------------------------------------------


async def rules_for(session: AsyncSession, municipality: str) -> tuple[list[domain.RoutingRule], bool]:
    """The municipality's routing table, or the defaults when it has not set one (second value True)."""
    row = await session.get(RoutingRuleSet, municipality)
    if row is None:
        return list(domain.DEFAULT_RULES), True
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


async def directory(session: AsyncSession, municipality: str) -> Directory:
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
        [domain.RoutingRule.model_validate(r) for r in own] if own is not None else list(domain.DEFAULT_RULES),
        [domain.MemberRef(row.id, row.kind) for row in rows if row.id is not None],
    )
    cache[municipality] = found
    return found


async def route(
    session: AsyncSession, settings: Settings, config: ReferralConfig, case: CaseFact, event: Envelope
) -> None:
    """Apply the routing rules to a case and store every decision, made or not.

    A fixed number of statements whatever the decisions: the directory (once per transaction and
    municipality), the case's active referrals (locked), the new referrals, their events, the decisions.
    """
    rules, members = await directory(session, case.municipality)
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
            data = {
                "case_id": str(case.case_id),
                "case_number": case.case_number,
                "missing_kind": decision.kind,
                "rule": decision.reason,
            }
            gap = make_event(
                type_="mechanism.gap", source=SOURCE, subject=str(case.case_id), municipality=case.municipality,
                data=data,
            )
            announcements.append((gap, str(case.case_id)))
    await publish_many(session, settings, REFERRAL_TOPIC, announcements)
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


def _dt(value: Any) -> datetime | None:
    if value in (None, ""):
        return None
    parsed = datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _month(value: Any) -> date | None:
    if value in (None, ""):
        return None
    text = str(value)
    return date.fromisoformat(text + "-01" if len(text) == 7 else text)


def _uuid(value: Any) -> uuid.UUID | None:
    return uuid.UUID(str(value)) if value not in (None, "") else None


Handler = Callable[[AsyncSession, Envelope], Awaitable[None]]

# A report (or a repeated one) sets every projected fact but `closed_at`; built once, compiled once.
_case_insert = pg_insert(CaseFact)
_CASE_UPSERT = _case_insert.on_conflict_do_update(
    index_elements=["case_id"],
    set_={
        name: _case_insert.excluded[name]
        for name in CaseFact.model_fields
        if name not in ("case_id", "closed_at", "reported_municipality")
    },
).returning(CaseFact)


def make_handler(settings: Settings, config: ReferralConfig) -> Handler:
    from services.referral import transfers  # it builds on this module's routing and publishing

    async def on_case_reported(session: AsyncSession, event: Envelope) -> None:
        d = event.data
        children_ages = d.get("children_ages") or []
        values = {
            "case_id": uuid.UUID(d["case_id"]),
            "case_number": d["case_number"],
            "municipality": event.municipality,
            "reported_municipality": event.municipality,
            "reported_at": _dt(d.get("reported_at")) or event.time,
            "status": "open",
            "risk_level": d.get("risk_level") or "low",
            "source": d.get("source"),
            "sex": d.get("sex"),
            "age_group": d.get("age_group"),
            "ethnicity": d.get("ethnicity"),
            "disability": d.get("disability"),
            "violence_types": list(d.get("violence_types") or []),
            "perpetrator_relationship": d.get("perpetrator_relationship"),
            "needs": list(d.get("needs") or []),
            "children_count": int(d.get("children_count") or len(children_ages)),
            # No consent given (or an older producer without the field): only the legal exceptions apply.
            "consent_share_with": list(d.get("consent_share_with") or []),
            "reported_by_role": d.get("reported_by_role"),
            "reported_by_member_id": d.get("reported_by_member_id"),
        }
        # The projection row as stored, without reading it back.
        case = (
            await session.execute(_CASE_UPSERT, values, execution_options={"populate_existing": True})
        ).scalar_one()
        await route(session, settings, config, case, event)

    async def on_risk_assessed(session: AsyncSession, event: Envelope) -> None:
        case = await session.get(CaseFact, uuid.UUID(event.data["case_id"]), with_for_update=True)
        if case is None:
            return  # not reported here (yet): nothing to route
        level = event.data["risk_level"]
        rose = domain.risk_rose(case.risk_level, level)
        case.risk_level = level
        await session.flush()
        if rose:
            await route(session, settings, config, case, event)

    async def on_case_changed(session: AsyncSession, event: Envelope) -> None:
        case = await session.get(CaseFact, uuid.UUID(event.data["case_id"]), with_for_update=True)
        if case is None:
            return
        if event.type == "case.closed":
            case.status = "closed"
            case.closed_at = _dt(event.data.get("closed_at")) or event.time
        elif event.type == "case.reopened":
            case.status = "open"
            case.closed_at = None
        elif event.type == "case.consent_changed":
            case.consent_share_with = list(event.data.get("share_with") or [])
            withdrawn = set(event.data.get("withdrawn") or []) - set(case.consent_share_with)
            if withdrawn:
                await session.flush()
                await end_withdrawn_referrals(session, settings, case, withdrawn)
        await session.flush()

    async def on_protection_order(session: AsyncSession, event: Envelope) -> None:
        d = event.data
        values = {
            "order_id": uuid.UUID(d["order_id"]),
            "case_id": uuid.UUID(d["case_id"]),
            "case_number": d.get("case_number") or "",
            "municipality": event.municipality,
            "kind": d["kind"],
            "status": d.get("status") or "issued",
            "issued_at": _dt(d.get("issued_at")),
            "expires_at": _dt(d.get("expires_at")),
        }
        await session.execute(
            pg_insert(ProtectionOrder).values(**values).on_conflict_do_update(index_elements=["order_id"], set_=values)
        )

    async def on_shelter(session: AsyncSession, event: Envelope) -> None:
        d = event.data
        values = {
            "shelter_id": uuid.UUID(d["shelter_id"]),
            "member_id": _uuid(d.get("member_id")),
            "municipality": event.municipality,
        }
        await session.execute(
            pg_insert(ShelterMember).values(**values).on_conflict_do_update(index_elements=["shelter_id"], set_=values)
        )

    async def on_placement(session: AsyncSession, event: Envelope) -> None:
        d = event.data
        placement_id = uuid.UUID(d["placement_id"])
        if event.type == "placement.started":
            await session.execute(
                pg_insert(Placement)
                .values(
                    placement_id=placement_id,
                    case_id=uuid.UUID(d["case_id"]),
                    municipality=event.municipality,
                    shelter_id=_uuid(d.get("shelter_id")),
                    adults=int(d.get("adults") or 0),
                    children=int(d.get("children") or 0),
                    started_at=_dt(d.get("started_at")) or event.time,
                )
                .on_conflict_do_nothing()
            )
        else:
            await session.execute(
                sa.update(Placement)
                .where(Placement.placement_id == placement_id)  # type: ignore[arg-type]
                .values(ended_at=_dt(d.get("ended_at")) or event.time)
            )

    async def on_rent_bonus(session: AsyncSession, event: Envelope) -> None:
        d = event.data
        if event.type == "rent_bonus.decided":
            values = {
                "application_id": uuid.UUID(d["application_id"]),
                "case_id": uuid.UUID(d["case_id"]),
                "municipality": event.municipality,
                "approved": bool(d.get("approved")),
                "monthly_amount": Decimal(str(d.get("monthly_amount") or "0")),
                "start_month": _month(d.get("start_month")),
                "months": int(d.get("months") or 0),
            }
            await session.execute(
                pg_insert(RentBonus)
                .values(**values)
                .on_conflict_do_update(index_elements=["application_id"], set_=values)
            )
        elif event.type == "rent_bonus.payment_due":
            month = _month(d.get("month"))
            if month is None:
                return
            await session.execute(
                pg_insert(RentBonusPayment)
                .values(
                    payment_id=uuid.UUID(d["payment_id"]),
                    application_id=uuid.UUID(d["application_id"]),
                    case_id=uuid.UUID(d["case_id"]),
                    municipality=event.municipality,
                    month=month,
                    amount=Decimal(str(d.get("amount") or "0")),
                )
                .on_conflict_do_nothing()
            )
        else:  # a payment marked paid (if shelter announces it): counts in the report's paid_amount
            payment_id = _uuid(d.get("payment_id"))
            month = _month(d.get("month"))
            if payment_id is None or month is None:
                return
            paid_at = _dt(d.get("paid_at")) or event.time
            values = {
                "payment_id": payment_id,
                "application_id": uuid.UUID(d["application_id"]),
                "case_id": uuid.UUID(d["case_id"]),
                "municipality": event.municipality,
                "month": month,
                "amount": Decimal(str(d.get("amount") or "0")),
                "paid_at": paid_at,
            }
            await session.execute(
                pg_insert(RentBonusPayment)
                .values(**values)
                .on_conflict_do_update(index_elements=["payment_id"], set_={"paid_at": paid_at})
            )

    handlers: dict[str, Handler] = {
        "case.reported": on_case_reported,
        "case.risk_assessed": on_risk_assessed,
        "case.closed": on_case_changed,
        "case.reopened": on_case_changed,
        "case.consent_changed": on_case_changed,
        "case.anonymised": erasure.on_case_anonymised,
        "case.protection_order_recorded": on_protection_order,
        "shelter.availability_changed": on_shelter,
        "shelter.full": on_shelter,
        "placement.started": on_placement,
        "placement.ended": on_placement,
        "rent_bonus.decided": on_rent_bonus,
        "rent_bonus.payment_due": on_rent_bonus,
        "rent_bonus.payment_paid": on_rent_bonus,
        "rent_bonus.paid": on_rent_bonus,
        "case.transferred": functools.partial(transfers.on_case_transferred, settings, config),
    }

    async def on_event(session: AsyncSession, event: Envelope) -> None:
        handler = handlers.get(event.type)
        if handler is not None:  # unknown types are ignored (§ event data)
            await handler(session, event)

    return on_event

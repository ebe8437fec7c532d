"""Automatic routing: a reported case (or a risk rise, or a case transferred in) meets the municipality's
routing rules, and every decision is stored, made or not; a withdrawal of consent ends the referrals it
no longer allows.

Runs inside the consumer's transaction (`consumer.py`), after the event id was recorded, so a repeated
event changes nothing twice. The rules themselves are pure (`domain.route_case`); this module reads the
directory, writes the referrals, decisions and events.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.referral import domain, events
from services.referral.config import ReferralConfig
from services.referral.models import CaseFact, Member, Referral, RoutingDecision, RoutingRuleSet
from shared.contracts import events as contract
from shared.db import table_of
from shared.dispatch import Received
from shared.etags import weak_etag
from shared.events import Envelope, event_of, flush_deferred, insert_rows, publish_events
from shared.settings import Settings

SYSTEM = "system:routing"
CONSENT_SYSTEM = "system:consent"


def _now() -> datetime:
    return datetime.now(UTC)


# --- the rules and the directory -------------------------------------------------------------------


async def rules_for(
    session: AsyncSession, municipality: str, profile: str = "albania"
) -> tuple[list[domain.RoutingRule], bool]:
    """The municipality's routing table, or the country profile's defaults when it has not set one (second
    value True)."""
    row = await session.get(RoutingRuleSet, municipality)
    if row is None:
        return list(domain.profile_rules(profile)), True
    return [domain.RoutingRule.model_validate(r) for r in row.rules], False


def rules_version(rules: list[domain.RoutingRule], is_default: bool) -> str:
    """The table's version: a digest of the rules as stored (the defaults have their own)."""
    canonical = json.dumps(
        {"default": is_default, "rules": [r.model_dump(mode="json", exclude_none=True) for r in rules]},
        sort_keys=True, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def rules_etag(rules: list[domain.RoutingRule], is_default: bool) -> str:
    """The table's version as an ETag."""
    return weak_etag(rules_version(rules, is_default))


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


# --- routing a case ------------------------------------------------------------------------------------


@dataclass
class Routing:
    """One routing of one case: its decisions, and what each became (`outcomes[i]` for `decisions[i]`)."""

    case: CaseFact
    decisions: list[domain.Decision]
    now: datetime
    outcomes: list[tuple[str, uuid.UUID | None]] = field(default_factory=list)
    new: dict[int, dict[str, Any]] = field(default_factory=dict)  # decision index → the referral row to insert
    inserted: set[uuid.UUID] = field(default_factory=set)


async def route(
    session: AsyncSession, settings: Settings, config: ReferralConfig, case: CaseFact,
    event: Received[Any] | Envelope, *, new_case: bool = False, defer_referrals: bool = False,
) -> None:
    """Apply the routing rules to a case and store every decision, made or not.

    A fixed number of statements whatever the decisions: the directory (once per transaction and
    municipality), the case's active referrals (locked), the gaps already announced, the new referrals;
    their events and the decisions go in with the consumer's batch (`shared.events.insert_rows`).
    `new_case`: the case's row was inserted by this transaction's upsert a moment ago, so it has neither
    referrals nor decisions yet (none is made without the case's row, and the row is never deleted) and
    the two reads are skipped. `defer_referrals` (a new case no other event of the consumer's batch names,
    `projection.project_reports`): its referrals go in with the batch's too, since none can exist already
    and nothing in the batch reads them before its end (one INSERT, one run of the rollup triggers, their
    row locks taken just before the commit).
    """
    rules, members = await directory(session, case.municipality, settings.profile)
    routing = Routing(case, domain.route_case(facts_of(case), rules, members), _now())
    active: dict[uuid.UUID, Referral] = {}
    announced: set[str] = set()
    if not new_case:
        active = await _active_referrals(session, case, [d for d in routing.decisions if d.outcome == "refer"])
        gaps = [d.kind for d in routing.decisions if d.outcome == "no_member"]
        announced = await _announced_gaps(session, case, gaps)
    _decide(routing, active, config)
    await _insert_referrals(session, routing, deferred=defer_referrals and new_case)
    await publish_events(session, settings, _announcements(routing, announced))
    await _record_decisions(session, routing, event)
    await session.flush()  # escalations


async def _active_referrals(
    session: AsyncSession, case: CaseFact, to_refer: Sequence[domain.Decision]
) -> dict[uuid.UUID, Referral]:
    """The case's active referrals to the members the decisions name, the oldest per member (locked)."""
    member_ids = [d.member_id for d in to_refer if d.member_id is not None]
    if not member_ids:
        return {}
    active: dict[uuid.UUID, Referral] = {}
    for referral in (
        await session.execute(_ACTIVE_REFERRALS, {"case_id": case.case_id, "member_ids": member_ids})
    ).scalars():
        active.setdefault(referral.to_member_id, referral)
    return active


_ACTIVE_REFERRALS = (
    sa.select(Referral)
    .where(
        col(Referral.case_id) == sa.bindparam("case_id"),
        col(Referral.to_member_id).in_(sa.bindparam("member_ids", expanding=True)),
        col(Referral.status).in_(domain.ACTIVE_STATUSES),
    )
    .order_by(col(Referral.created_at), col(Referral.id))
    .with_for_update()
)


async def _announced_gaps(session: AsyncSession, case: CaseFact, gaps: Sequence[str]) -> set[str]:
    """The kinds among `gaps` whose `mechanism.gap` this case announced already (announced once)."""
    if not gaps:
        return set()
    await flush_deferred(session)  # the decisions of this case's events before, in the consumer's batch
    return set(
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


def _decide(routing: Routing, active: dict[uuid.UUID, Referral], config: ReferralConfig) -> None:
    """Each decision's outcome: not a referral, a new one, an escalated pending one, or already referred."""
    for i, decision in enumerate(routing.decisions):
        if decision.outcome != "refer" or decision.member_id is None:
            routing.outcomes.append((decision.outcome, None))
            continue
        existing = active.get(decision.member_id)
        if existing is None:
            routing.new[i] = _auto_referral(config, routing.case, decision, routing.now)
            routing.outcomes.append(("referred", routing.new[i]["id"]))
        elif existing.status == "pending" and (
            domain.URGENCY_ORDER[decision.urgency] > domain.URGENCY_ORDER[existing.urgency]
        ):
            _escalate(existing, decision, routing.now, config)
            routing.outcomes.append(("escalated", existing.id))
        else:
            routing.outcomes.append(("already_referred", existing.id))


def _escalate(referral: Referral, decision: domain.Decision, now: datetime, config: ReferralConfig) -> None:
    """A risk rise: the still-pending referral is escalated (deadline brought forward, never pushed back)."""
    due = domain.ack_due_at(now, decision.urgency, config.ack_seconds())
    referral.urgency = decision.urgency
    referral.ack_due_at = min(referral.ack_due_at, due)
    referral.updated_at = now


async def _insert_referrals(session: AsyncSession, routing: Routing, *, deferred: bool = False) -> None:
    """The new automatic referrals in one INSERT; one that exists already (not active any more) is skipped
    and its decision reads `already_referred`. `deferred`: the case has no referral yet, they all go in,
    with the batch's (one that did exist would fail the batch, whose events are then applied one by one)."""
    if not routing.new:
        return
    if deferred:
        routing.inserted = {referral["id"] for referral in routing.new.values()}
        await insert_rows(session, _NEW_REFERRALS_INSERT, list(routing.new.values()))
        return
    routing.inserted = set((await session.execute(_AUTO_REFERRAL_INSERT, list(routing.new.values()))).scalars())
    for i, referral in routing.new.items():
        if referral["id"] not in routing.inserted:
            routing.outcomes[i] = ("already_referred", None)


def _announcements(routing: Routing, announced: set[str]) -> list[tuple[Envelope, str]]:
    """`referral.created` for each inserted referral, `mechanism.gap` for each gap not announced yet."""
    case = routing.case
    found: list[tuple[Envelope, str]] = []
    for i, decision in enumerate(routing.decisions):
        if i in routing.new and routing.new[i]["id"] in routing.inserted:
            found.append((events.referral_created_event(routing.new[i]), str(case.case_id)))
        elif decision.outcome == "no_member" and decision.kind not in announced:
            data = contract.MechanismGap(
                case_id=case.case_id, case_number=case.case_number, missing_kind=decision.kind, rule=decision.reason
            )
            found.append((event_of(data, subject=str(case.case_id), municipality=case.municipality), str(case.case_id)))
    return found


async def _record_decisions(session: AsyncSession, routing: Routing, event: Received[Any] | Envelope) -> None:
    if not routing.decisions:
        return
    case = routing.case
    await insert_rows(
        session,
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
                "at": routing.now,
            }
            for decision, (outcome, referral_id) in zip(routing.decisions, routing.outcomes, strict=True)
        ],
    )


# Statements built once (compiled once); the rows go as parameters, in one multi-row INSERT each.
_referrals = table_of(Referral)
_AUTO_REFERRAL_INSERT = (
    pg_insert(_referrals)
    .on_conflict_do_nothing(
        index_elements=["case_id", "to_member_id", "reason"], index_where=sa.text("origin = 'auto'")
    )
    .returning(_referrals.c.id)
)
_NEW_REFERRALS_INSERT = sa.insert(_referrals)
_DECISION_INSERT = sa.insert(table_of(RoutingDecision))


# Every column of a referral, None unless an automatic one sets it: the rows of one multi-row INSERT.
_REFERRAL_COLUMNS = dict.fromkeys(Referral.model_fields)


def _auto_referral(
    config: ReferralConfig, case: CaseFact, decision: domain.Decision, now: datetime
) -> dict[str, Any]:
    """The row of an automatic referral (a dict: building the ORM object cost more than the INSERT)."""
    assert decision.member_id is not None
    return {
        **_REFERRAL_COLUMNS,
        "id": uuid.uuid4(),
        "case_id": case.case_id,
        "case_number": case.case_number,
        "municipality": case.municipality,
        "to_member_id": decision.member_id,
        "to_member_kind": decision.kind,
        "service": ", ".join(decision.services) or None,
        "urgency": decision.urgency,
        "status": "pending",
        "reason": decision.reason,
        "origin": "auto",
        "legal_exception": decision.legal_exception,
        "sender_role": "coordinator",
        "created_by": SYSTEM,
        "created_at": now,
        "updated_at": now,
        "ack_due_at": domain.ack_due_at(now, decision.urgency, config.ack_seconds()),
        "history": [{"status": "pending", "at": now.isoformat(), "by": SYSTEM}],
    }


# --- consent withdrawn ---------------------------------------------------------------------------------


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
            _keep_by_exception(referral, exception, now)
            continue
        previous = referral.status
        referral.status = "cancelled"
        referral.history = [
            *referral.history,
            {"status": "cancelled", "at": now.isoformat(), "by": CONSENT_SYSTEM, "reason": "consent_withdrawn"},
        ]
        referral.updated_at = now
        await events.referral_status_changed(
            session, settings, referral, previous, "system", now, reason="consent_withdrawn"
        )
    await session.flush()


def _keep_by_exception(referral: Referral, exception: str, now: datetime) -> None:
    kept = f"consent_withdrawn: kept by the legal exception {exception}"
    if not any(entry.get("reason") == kept for entry in referral.history[-1:]):
        referral.history = [
            *referral.history,
            {"status": referral.status, "at": now.isoformat(), "by": CONSENT_SYSTEM, "reason": kept},
        ]
        referral.legal_exception = referral.legal_exception or exception
        referral.updated_at = now

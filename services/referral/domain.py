"""The referral rules, pure: routing (DOMAIN.md "Default routing rules"), consent, the referral state machine."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from pydantic import BaseModel, Field

from shared import profiles
from shared.vocab import RISK_ORDER, MemberKind, RiskLevel

URGENCY_ORDER = {"normal": 0, "high": 1, "emergency": 2}
URGENCY_BY_RISK = {"high": "emergency", "medium": "high", "low": "normal"}

Urgency = Literal["emergency", "high", "normal"]
# What a referral asks for: one of the case's `needs` codes or a member kind (CONTRACT §6) — a code,
# never free text, since it travels in events, webhooks and alerts.
ServiceCode = Literal[
    "shelter", "legal_aid", "health", "psychological", "economic_aid", "employment", "housing", "childcare",
    "protection_order", "police", "social_services", "child_protection", "education", "ngo", "prosecution",
    "court",
]


class Condition(BaseModel):
    """All given tests must hold; an empty condition always holds."""

    risk_level_in: list[RiskLevel] | None = None
    source_not_in: list[str] | None = None
    children_present: bool | None = None
    needs_any: list[str] | None = None
    violence_types_any: list[str] | None = None

    def holds(self, facts: CaseFacts) -> bool:
        if self.risk_level_in is not None and facts.risk_level not in self.risk_level_in:
            return False
        if self.source_not_in is not None and facts.source in self.source_not_in:
            return False
        if self.children_present is not None and (facts.children_count > 0) != self.children_present:
            return False
        if self.needs_any is not None and not set(self.needs_any) & set(facts.needs):
            return False
        return not (
            self.violence_types_any is not None and not set(self.violence_types_any) & set(facts.violence_types)
        )


class RoutingRule(BaseModel):
    """One row of the routing table: when any of `when` holds, refer to the first member of `refer_to`."""

    name: str = Field(min_length=1, max_length=80, pattern=r"^[a-z0-9_]+$")
    when: list[Condition] = Field(min_length=1, max_length=20)
    refer_to: MemberKind
    # "by_risk": high → emergency, medium → high, low → normal.
    urgency: Urgency | Literal["by_risk"]
    urgency_if_high_risk: Urgency | None = None
    service: ServiceCode | None = None

    def urgency_for(self, facts: CaseFacts) -> str:
        if facts.risk_level == "high" and self.urgency_if_high_risk is not None:
            return self.urgency_if_high_risk
        if self.urgency == "by_risk":
            return URGENCY_BY_RISK[facts.risk_level]
        return self.urgency


@functools.cache
def profile_rules(name: str) -> tuple[RoutingRule, ...]:
    """The country profile's default routing table (shared/profiles/<name>.toml), checked as rules."""
    return tuple(RoutingRule.model_validate(rule) for rule in profiles.load(name).routing_rules)


# DOMAIN.md's table, seeded for every municipality that has not PUT its own: Albania's, the default profile.
DEFAULT_RULES: tuple[RoutingRule, ...] = profile_rules("albania")


@dataclass(frozen=True)
class CaseFacts:
    """What routing needs to know about a case (coded facts only)."""

    case_id: uuid.UUID
    risk_level: str
    source: str | None = None
    children_count: int = 0
    needs: Sequence[str] = ()
    violence_types: Sequence[str] = ()
    consent_share_with: Sequence[str] = ()


@dataclass(frozen=True)
class MemberRef:
    id: uuid.UUID
    kind: str


def legal_exception(kind: str, facts: CaseFacts) -> str | None:
    """The law's exceptions to consent (DOMAIN.md): fixed in code, a municipality's rules cannot widen them."""
    if kind == "child_protection" and facts.children_count > 0:
        return "child_at_risk"
    if kind == "police" and facts.risk_level == "high":
        return "threat_to_life"
    return None


Outcome = Literal["refer", "no_consent", "no_member"]


@dataclass
class Decision:
    """One routing outcome: a referral to make (`refer`), or why none is made."""

    outcome: Outcome
    kind: str
    rules: list[str]
    urgency: str
    member_id: uuid.UUID | None = None
    legal_exception: str | None = None
    services: list[str] = field(default_factory=list)

    @property
    def reason(self) -> str:
        return "+".join(self.rules)


def route_case(facts: CaseFacts, rules: Sequence[RoutingRule], members: Sequence[MemberRef]) -> list[Decision]:
    """Decide who gets a referral. `members` are the municipality's active members in directory order.

    The first member of a needed kind gets it; two rules picking the same kind make one decision
    (rules merged, highest urgency). A kind outside the consent, with no legal exception, is a
    `no_consent` decision; a kind with no member is `no_member` (a mechanism gap).
    """
    first_of_kind: dict[str, uuid.UUID] = {}
    for member in members:
        first_of_kind.setdefault(member.kind, member.id)
    by_kind: dict[str, Decision] = {}
    for rule in rules:
        if not any(condition.holds(facts) for condition in rule.when):
            continue
        urgency = rule.urgency_for(facts)
        existing = by_kind.get(rule.refer_to)
        if existing is not None:
            existing.rules.append(rule.name)
            if URGENCY_ORDER[urgency] > URGENCY_ORDER[existing.urgency]:
                existing.urgency = urgency
            if rule.service and rule.service not in existing.services:
                existing.services.append(rule.service)
            continue
        kind = rule.refer_to
        exception = None if kind in facts.consent_share_with else legal_exception(kind, facts)
        if kind not in facts.consent_share_with and exception is None:
            outcome: Outcome = "no_consent"
        elif kind not in first_of_kind:
            outcome = "no_member"
        else:
            outcome = "refer"
        by_kind[kind] = Decision(
            outcome=outcome,
            kind=kind,
            rules=[rule.name],
            urgency=urgency,
            member_id=first_of_kind.get(kind) if outcome == "refer" else None,
            legal_exception=exception,
            services=[rule.service] if rule.service else [],
        )
    return list(by_kind.values())


def risk_rose(previous: str | None, current: str) -> bool:
    return RISK_ORDER.get(current, 0) > RISK_ORDER.get(previous or "low", 0)


def ack_due_at(now: datetime, urgency: str, seconds_by_urgency: dict[str, float]) -> datetime:
    return now + timedelta(seconds=seconds_by_urgency[urgency])


# The referral life cycle (CONTRACT §4): action → (statuses it may start from, resulting status).
TRANSITIONS: dict[str, tuple[frozenset[str], str]] = {
    "acknowledge": (frozenset({"pending"}), "acknowledged"),
    "accept": (frozenset({"acknowledged"}), "accepted"),
    "decline": (frozenset({"acknowledged"}), "declined"),
    "complete": (frozenset({"accepted"}), "completed"),
    "cancel": (frozenset({"pending", "acknowledged", "accepted"}), "cancelled"),
}
RECEIVER_ACTIONS = frozenset({"acknowledge", "accept", "decline", "complete"})
ACTIVE_STATUSES = frozenset({"pending", "acknowledged", "accepted"})


class InvalidTransition(Exception):
    pass


def next_status(current: str, action: str) -> str:
    sources, target = TRANSITIONS[action]
    if current not in sources:
        raise InvalidTransition(f"Cannot {action} a referral that is {current}.")
    return target

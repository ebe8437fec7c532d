"""`route_case` against DOMAIN.md's default routing table, row by row (pure, no I/O)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.referral.domain import (
    DEFAULT_RULES,
    CaseFacts,
    InvalidTransition,
    MemberRef,
    RoutingRule,
    ack_due_at,
    next_status,
    risk_rose,
    route_case,
)

ALL_KINDS = (
    "police", "social_services", "child_protection", "health", "education", "employment",
    "legal_aid", "ngo", "shelter", "housing",
)  # fmt: skip
MEMBERS = [MemberRef(uuid.uuid4(), kind) for kind in ALL_KINDS]
MEMBER_OF = {m.kind: m.id for m in MEMBERS}


def facts(**overrides: Any) -> CaseFacts:
    values: dict[str, Any] = {
        "case_id": uuid.uuid4(),
        "risk_level": "low",
        "source": "police",
        "children_count": 0,
        "needs": (),
        "violence_types": ("physical",),
        "consent_share_with": ALL_KINDS,
    }
    values.update(overrides)
    return CaseFacts(**values)


def referred(decisions: list[Any]) -> dict[str, Any]:
    return {d.kind: d for d in decisions if d.outcome == "refer"}


# (row of the table, facts, kind expected, urgency expected, rule expected)
TABLE = [
    ("always social services, low", {}, "social_services", "normal", "always_social_services"),
    ("always social services, medium", {"risk_level": "medium"}, "social_services", "high", "always_social_services"),
    ("always social services, high", {"risk_level": "high"}, "social_services", "emergency", "always_social_services"),
    ("high risk, not police", {"risk_level": "high", "source": "health"}, "police", "emergency", "high_risk_police"),
    ("children present", {"children_count": 2}, "child_protection", "high", "children_child_protection"),
    (
        "children present, high risk",
        {"children_count": 1, "risk_level": "high"},
        "child_protection",
        "emergency",
        "children_child_protection",
    ),
    ("need shelter, low", {"needs": ("shelter",)}, "shelter", "normal", "shelter_need_or_high_risk"),
    ("risk high → shelter", {"risk_level": "high"}, "shelter", "emergency", "shelter_need_or_high_risk"),
    ("sexual violence", {"violence_types": ("sexual",)}, "health", "emergency", "sexual_violence_health"),
    ("need legal aid", {"needs": ("legal_aid",)}, "legal_aid", "high", "legal_aid_need"),
    ("need protection order", {"needs": ("protection_order",)}, "legal_aid", "high", "legal_aid_need"),
    ("need health", {"needs": ("health",)}, "health", "normal", "health_need"),
    ("need psychological", {"needs": ("psychological",)}, "health", "normal", "health_need"),
    ("need employment", {"needs": ("employment",)}, "employment", "normal", "employment_need"),
    ("need housing", {"needs": ("housing",)}, "housing", "normal", "housing_need"),
    ("need childcare", {"needs": ("childcare",)}, "education", "normal", "childcare_need"),
]


@pytest.mark.parametrize(("row", "given", "kind", "urgency", "rule"), TABLE, ids=[t[0] for t in TABLE])
def test_default_table_row_refers_to_kind_with_urgency(
    row: str, given: dict[str, Any], kind: str, urgency: str, rule: str
) -> None:
    decision = referred(route_case(facts(**given), DEFAULT_RULES, MEMBERS))[kind]
    assert decision.urgency == urgency
    assert rule in decision.rules
    assert decision.member_id == MEMBER_OF[kind]


NOT_FIRING = [
    ("police source, high risk: no police rule", {"risk_level": "high", "source": "police"}, "police"),
    ("medium risk: no police", {"risk_level": "medium", "source": "health"}, "police"),
    ("no children: no child protection", {}, "child_protection"),
    ("no shelter need, low risk: no shelter", {}, "shelter"),
    ("no needs, no sexual violence: no health", {}, "health"),
    ("no needs: no legal aid", {}, "legal_aid"),
]


@pytest.mark.parametrize(("row", "given", "kind"), NOT_FIRING, ids=[t[0] for t in NOT_FIRING])
def test_rule_that_does_not_apply_refers_nobody(row: str, given: dict[str, Any], kind: str) -> None:
    assert kind not in referred(route_case(facts(**given), DEFAULT_RULES, MEMBERS))


def test_two_rules_for_one_kind_merge_into_one_referral_with_highest_urgency() -> None:
    decisions = route_case(facts(violence_types=("sexual",), needs=("health",)), DEFAULT_RULES, MEMBERS)
    health = [d for d in decisions if d.kind == "health"]
    assert len(health) == 1
    assert health[0].urgency == "emergency"
    assert health[0].rules == ["sexual_violence_health", "health_need"]
    assert health[0].reason == "sexual_violence_health+health_need"


def test_first_member_of_kind_in_directory_order_gets_the_referral() -> None:
    first, second = MemberRef(uuid.uuid4(), "social_services"), MemberRef(uuid.uuid4(), "social_services")
    decision = referred(route_case(facts(), DEFAULT_RULES, [first, second]))["social_services"]
    assert decision.member_id == first.id


def test_missing_member_kind_is_a_gap() -> None:
    decisions = route_case(facts(risk_level="high"), DEFAULT_RULES, [])
    assert {d.kind for d in decisions if d.outcome == "no_member"} == {"social_services", "shelter"}


@pytest.mark.parametrize(
    ("given", "kind", "exception"),
    [
        ({"children_count": 1}, "child_protection", "child_at_risk"),
        ({"risk_level": "high", "source": "ngo"}, "police", "threat_to_life"),
    ],
    ids=["child at risk", "threat to life"],
)
def test_legal_exception_refers_without_consent_and_records_it(
    given: dict[str, Any], kind: str, exception: str
) -> None:
    decision = referred(route_case(facts(consent_share_with=(), **given), DEFAULT_RULES, MEMBERS))[kind]
    assert decision.legal_exception == exception


def test_kind_without_consent_or_exception_is_not_referred_but_decided() -> None:
    decisions = route_case(facts(consent_share_with=(), needs=("legal_aid",)), DEFAULT_RULES, MEMBERS)
    by_kind = {d.kind: d for d in decisions}
    assert by_kind["legal_aid"].outcome == "no_consent"
    assert by_kind["social_services"].outcome == "no_consent"
    assert by_kind["legal_aid"].member_id is None


def test_consented_kind_carries_no_legal_exception() -> None:
    decision = referred(route_case(facts(children_count=1), DEFAULT_RULES, MEMBERS))["child_protection"]
    assert decision.legal_exception is None


def test_rules_are_data_a_municipality_can_replace() -> None:
    rules = [RoutingRule.model_validate({"name": "all_to_ngo", "when": [{}], "refer_to": "ngo", "urgency": "high"})]
    decisions = route_case(facts(), rules, MEMBERS)
    assert [(d.kind, d.urgency, d.reason) for d in decisions] == [("ngo", "high", "all_to_ngo")]


def test_risk_rise_is_detected_only_upwards() -> None:
    assert risk_rose("low", "high") and risk_rose("medium", "high") and risk_rose(None, "medium")
    assert not risk_rose("high", "medium") and not risk_rose("medium", "medium")


def test_ack_deadline_follows_urgency() -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime(2026, 11, 21, tzinfo=UTC)
    seconds = {"emergency": 3600, "high": 86400, "normal": 259200}
    assert ack_due_at(now, "emergency", seconds) - now == timedelta(hours=1)
    assert ack_due_at(now, "normal", seconds) - now == timedelta(hours=72)


@pytest.mark.parametrize(
    ("current", "action", "expected"),
    [
        ("pending", "acknowledge", "acknowledged"),
        ("acknowledged", "accept", "accepted"),
        ("acknowledged", "decline", "declined"),
        ("accepted", "complete", "completed"),
        ("pending", "cancel", "cancelled"),
        ("accepted", "cancel", "cancelled"),
        ("pending", "complete", None),
        ("declined", "cancel", None),
        ("completed", "acknowledge", None),
        ("cancelled", "accept", None),
    ],
)
def test_referral_state_machine(current: str, action: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(InvalidTransition):
            next_status(current, action)
    else:
        assert next_status(current, action) == expected

"""The coded vocabularies every service shares (CONTRACT §4), declared once.

Intake's request bodies, referral's routing rules and directory, shelter's projection and the event
contracts (`shared/contracts/events.py`) all use these; a code added here is known everywhere at once.
They are `StrEnum`s, so a member compares, hashes and serialises as its code (`RiskLevel.high == "high"`).
"""

from __future__ import annotations

from enum import StrEnum


class RiskLevel(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


# Risk levels in rising order (a "rise" is a move to a later one).
RISK_ORDER: dict[str, int] = {level.value: rank for rank, level in enumerate(RiskLevel)}


class MemberKind(StrEnum):
    """The kinds of institution in a municipality's mechanism (the directory, referrals, consent)."""

    police = "police"
    social_services = "social_services"
    child_protection = "child_protection"
    health = "health"
    education = "education"
    employment = "employment"
    legal_aid = "legal_aid"
    ngo = "ngo"
    shelter = "shelter"
    housing = "housing"
    prosecution = "prosecution"
    court = "court"


class Sex(StrEnum):
    female = "female"
    male = "male"
    other = "other"


class AgeGroup(StrEnum):
    """The age groups of reports (intake's `domain.age_group` computes them from an age)."""

    child = "0-11"
    adolescent = "12-17"
    young_adult = "18-24"
    adult = "25-39"
    middle_aged = "40-59"
    older = "60+"
    unknown = "unknown"


AGE_GROUPS: tuple[str, ...] = tuple(group.value for group in AgeGroup)


__all__ = ["AGE_GROUPS", "RISK_ORDER", "AgeGroup", "MemberKind", "RiskLevel", "Sex"]

"""Intake rules, pure: the risk screen, age groups, case numbers, visibility."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from shared.auth import Principal, Role
from shared.vocab import AgeGroup

# DOMAIN.md "The risk screen": the defaults; a municipality may replace them (risk_screen_configs).
DEFAULT_QUESTIONS: tuple[tuple[str, bool], ...] = (
    ("threats_to_kill", True),
    ("strangulation", True),
    ("weapon_used_or_threatened", True),
    ("afraid_of_being_killed", True),
    ("violence_escalating", False),
    ("pregnant_or_newborn", False),
    ("separation_recent_or_planned", False),
    ("perpetrator_weapon_access", False),
    ("threats_to_children", False),
    ("perpetrator_substance_abuse", False),
    ("perpetrator_prior_violence", False),
    ("protection_order_breached", False),
    ("controlling_or_isolating", False),
    ("stalking_or_harassment", False),
    ("sexual_violence", False),
    ("perpetrator_suicidal", False),
)
LEVELS = ("low", "medium", "high")


@dataclass(frozen=True)
class RiskScreen:
    questions: tuple[tuple[str, bool], ...] = DEFAULT_QUESTIONS
    high_yes_count: int = 8
    medium_yes_count: int = 4

    @property
    def ids(self) -> set[str]:
        return {qid for qid, _ in self.questions}

    @property
    def red_flag_ids(self) -> list[str]:
        return [qid for qid, red in self.questions if red]


@dataclass(frozen=True)
class RiskResult:
    risk_level: str
    computed_level: str
    yes_count: int
    red_flags: list[str] = field(default_factory=list)


def unknown_answers(screen: RiskScreen, answers: dict[str, bool]) -> list[str]:
    return sorted(set(answers) - screen.ids)


def score_risk(screen: RiskScreen, answers: dict[str, bool], judgement: str | None = None) -> RiskResult:
    """High on any red flag or ≥ high_yes_count yes; medium from medium_yes_count; judgement only raises."""
    yes = [qid for qid, value in answers.items() if value]
    red = [qid for qid in screen.red_flag_ids if answers.get(qid)]
    if red or len(yes) >= screen.high_yes_count:
        computed = "high"
    elif len(yes) >= screen.medium_yes_count:
        computed = "medium"
    else:
        computed = "low"
    level = max(computed, judgement or "low", key=LEVELS.index)
    return RiskResult(risk_level=level, computed_level=computed, yes_count=len(yes), red_flags=red)


def age_on(birth: date, day: date) -> int:
    return day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))


def age_group(age: int | None) -> str:
    """The report's age group (shared.vocab.AgeGroup) of an age."""
    if age is None or age < 0:
        return AgeGroup.unknown.value
    bounds = ((11, AgeGroup.child), (17, AgeGroup.adolescent), (24, AgeGroup.young_adult), (39, AgeGroup.adult),
              (59, AgeGroup.middle_aged))  # fmt: skip
    for upper, group in bounds:
        if age <= upper:
            return group.value
    return AgeGroup.older.value


def case_prefix(municipality: str, configured: dict[str, str]) -> str:
    return configured.get(municipality) or municipality.replace("-", "")[:3].upper()


def format_case_number(prefix: str, year: int, seq: int) -> str:
    return f"{prefix}-{year}-{seq:05d}"


def can_read_case(
    principal: Principal, *, reported_by_sub: str, reported_by_member_id: str | None, referred: bool
) -> bool:
    """CONTRACT §2: the coordinator everything; an institution what it reported or was referred."""
    if principal.role is Role.coordinator:
        return True
    if not principal.is_institution:
        return False
    return is_reporter(principal, reported_by_sub, reported_by_member_id) or referred


def is_reporter(principal: Principal, reported_by_sub: str, reported_by_member_id: str | None) -> bool:
    if principal.member_id is not None and principal.member_id == reported_by_member_id:
        return True
    return principal.sub == reported_by_sub

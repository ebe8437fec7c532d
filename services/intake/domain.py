"""Intake rules, pure: the risk screen, age groups, case numbers, visibility."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from shared import profiles
from shared.auth import Principal, Role
from shared.vocab import AgeGroup


# DOMAIN.md "The risk screen": the defaults are the country profile's (shared/profiles/<name>.toml); a
# municipality may replace them (risk_screen_configs). DEFAULT_QUESTIONS: Albania's, the default profile.
def profile_questions(profile: profiles.Profile) -> tuple[tuple[str, bool], ...]:
    return tuple((str(q["id"]), bool(q.get("red_flag"))) for q in profile.risk_screen.questions)


DEFAULT_QUESTIONS: tuple[tuple[str, bool], ...] = profile_questions(profiles.load("albania"))
LEVELS = ("low", "medium", "high")


@dataclass(frozen=True)
class RiskScreen:
    questions: tuple[tuple[str, bool], ...] = DEFAULT_QUESTIONS
    high_yes_count: int = 8
    medium_yes_count: int = 4
    # MARAC's "potential escalation": the `escalation_cases`-th case of the same person (linked by the
    # coordinator) within `escalation_window_days` is high risk.
    escalation_cases: int = 3
    escalation_window_days: int = 365

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


# --- repeats and escalation (CONTRACT §10, DOMAIN.md "Repeats") ---------------------------------------------

ESCALATION_FLAG = "potential_escalation"  # the red flag an escalation adds to the risk history


@dataclass(frozen=True)
class LinkedCase:
    id: uuid.UUID
    reported_at: datetime


def year_before(at: datetime) -> datetime:
    """The same instant twelve months earlier (29 February → 28 February)."""
    try:
        return at.replace(year=at.year - 1)
    except ValueError:
        return at.replace(year=at.year - 1, day=28)


def repeat_of(case: LinkedCase, same_person: Sequence[LinkedCase]) -> uuid.UUID | None:
    """The latest case of the same person reported in the 12 months before `case` (MARAC's repeat), if any."""
    since = year_before(case.reported_at)
    earlier = [c for c in same_person if c.id != case.id and since <= c.reported_at <= case.reported_at
               and (c.reported_at, str(c.id)) < (case.reported_at, str(case.id))]
    return max(earlier, key=lambda c: (c.reported_at, str(c.id))).id if earlier else None


def escalates(case: LinkedCase, same_person: Sequence[LinkedCase], screen: RiskScreen) -> bool:
    """`case` is at least the `escalation_cases`-th case of the person within the window ending at its report."""
    since = case.reported_at - timedelta(days=screen.escalation_window_days)
    earlier = [c for c in same_person if c.id != case.id and since <= c.reported_at <= case.reported_at
               and (c.reported_at, str(c.id)) < (case.reported_at, str(case.id))]
    return len(earlier) + 1 >= screen.escalation_cases


def default_screen(profile: profiles.Profile) -> RiskScreen:
    """The risk screen of a municipality that has not configured its own, in this country."""
    return RiskScreen(
        questions=profile_questions(profile),
        high_yes_count=profile.risk_screen.high_yes_count,
        medium_yes_count=profile.risk_screen.medium_yes_count,
    )

"""The coordinator's duplicate decisions (CONTRACT §10): possible duplicates found at report time, links of
the same person, pairs ruled apart, repeats and MARAC's "potential escalation".

The system proposes (the duplicate search stores its candidates), the coordinator decides (`case_links`),
and only she undoes a decision. The rules are pure functions in `domain.py`; this module reads and writes.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.intake import domain, events, service
from services.intake.models import Case, CaseLink, DuplicateCandidate, RiskAssessment
from shared.auth import Principal
from shared.db import table_of
from shared.settings import Settings

SAME_PERSON = "same_person"
NOT_SAME_PERSON = "not_same_person"


def pair(a: uuid.UUID, b: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    """The stored order of a pair: the lower id first."""
    return (a, b) if str(a) < str(b) else (b, a)


async def record_candidates(session: AsyncSession, case: Case, matches: list[service.Match]) -> None:
    """The possible duplicates of a new case, kept until the coordinator decides on each pair."""
    if not matches:
        return
    now = datetime.now(UTC)
    table = table_of(DuplicateCandidate)
    await session.execute(
        pg_insert(table).on_conflict_do_nothing(),
        [
            {"case_id": case.id, "other_id": m.id, "municipality": case.municipality, "score": m.score,
             "found_at": now}
            for m in matches
        ],
    )


COMPONENT_SQL = sa.text(
    """
    WITH RECURSIVE person(id) AS (
        SELECT CAST(:id AS uuid)
        UNION
        SELECT CASE WHEN l.low_id = p.id THEN l.high_id ELSE l.low_id END
        FROM case_links l JOIN person p ON p.id IN (l.low_id, l.high_id)
        WHERE l.relation = 'same_person'
    )
    SELECT id FROM person
    """
)


async def same_person(session: AsyncSession, case_id: uuid.UUID) -> list[uuid.UUID]:
    """Every case linked to `case_id` by the coordinator, directly or through others, itself included."""
    return list((await session.execute(COMPONENT_SQL, {"id": case_id})).scalars())


UNDECIDED = """NOT EXISTS (SELECT 1 FROM case_links l
                   WHERE l.low_id = LEAST(d.case_id, d.other_id) AND l.high_id = GREATEST(d.case_id, d.other_id))"""
# LEAST/GREATEST on uuid compare as PostgreSQL orders uuids: bytewise, the same order as their text form.
POSSIBLE_SQL = sa.text(
    f"""
    SELECT c.id, c.case_number, d.score, d.case_id = :id AS found_for_this FROM duplicate_candidates d
    JOIN cases c ON c.id = CASE WHEN d.case_id = :id THEN d.other_id ELSE d.case_id END
    WHERE (d.case_id = :id OR d.other_id = :id) AND {UNDECIDED}
    ORDER BY d.score DESC, c.reported_at DESC, c.id
    """
)


@dataclass
class LinkState:
    """A case's place among its possible duplicates, as the coordinator sees it."""

    case: Case
    linked: list[Case] = field(default_factory=list)
    ruled_apart: list[uuid.UUID] = field(default_factory=list)
    possible: list[service.Match] = field(default_factory=list)
    # Candidates found when this case was reported, still undecided (the dashboard sums them: each pair
    # counts once, on its later case).
    pending: int = 0

    @property
    def repeat_of(self) -> uuid.UUID | None:
        return domain.repeat_of(_linked(self.case), [_linked(c) for c in self.linked])


def _linked(case: Case) -> domain.LinkedCase:
    return domain.LinkedCase(case.id, case.reported_at)


async def link_state(session: AsyncSession, case: Case) -> LinkState:
    ids = [i for i in await same_person(session, case.id) if i != case.id]
    linked = list(
        (await session.execute(sa.select(Case).where(col(Case.id).in_(ids)).order_by(col(Case.reported_at)))).scalars()
    ) if ids else []
    apart = await session.execute(
        sa.select(col(CaseLink.low_id), col(CaseLink.high_id)).where(
            sa.or_(CaseLink.low_id == case.id, CaseLink.high_id == case.id),  # type: ignore[arg-type]
            CaseLink.relation == NOT_SAME_PERSON,  # type: ignore[arg-type]
        )
    )
    # A pair both of whose cases are already linked to the same person (through others) awaits nothing.
    undecided = [row for row in await session.execute(POSSIBLE_SQL, {"id": case.id}) if row.id not in ids]
    possible = [service.Match(row.id, row.case_number, round(float(row.score), 3)) for row in undecided]
    pending = sum(1 for row in undecided if row.found_for_this)
    return LinkState(
        case=case,
        linked=linked,
        ruled_apart=sorted((high if low == case.id else low for low, high in apart.tuples()), key=str),
        possible=possible,
        pending=pending,
    )


async def decide(
    session: AsyncSession, principal: Principal, case: Case, other: Case, relation: str
) -> CaseLink | None:
    """Record the decision on the pair; None when it is already recorded (a repeated call changes nothing).
    Raises LookupError when the pair carries the other decision (undo it first)."""
    low, high = pair(case.id, other.id)
    existing = await session.get(CaseLink, (low, high), with_for_update=True)
    if existing is not None:
        if existing.relation != relation:
            raise LookupError(existing.relation)
        return None
    link = CaseLink(
        low_id=low, high_id=high, municipality=case.municipality, relation=relation,
        decided_at=datetime.now(UTC), decided_by_sub=principal.sub,
    )
    session.add(link)
    await session.flush()
    return link


async def undo(session: AsyncSession, case: Case, other: Case) -> CaseLink | None:
    """Remove the decision on the pair (None when there is none)."""
    link = await session.get(CaseLink, pair(case.id, other.id), with_for_update=True)
    if link is not None:
        await session.delete(link)
        await session.flush()
    return link


async def announce(
    session: AsyncSession,
    settings: Settings,
    principal: Principal,
    cases: list[Case],
    type_: str,
) -> None:
    """After a decision or its undoing: every case whose links may have changed (both people's cases)
    gets its state published (flags and counts only), and a case that is now the escalation_cases-th of
    the same person within the window is raised to high risk (routing follows the risk rise)."""
    seen: set[uuid.UUID] = set()
    for start in cases:
        for case_id in await same_person(session, start.id):
            if case_id in seen:
                continue
            seen.add(case_id)
            case = await session.get(Case, case_id, with_for_update=True)
            assert case is not None
            state = await link_state(session, case)
            await events.case_links_changed(
                session, settings, case, type_, repeat_of=state.repeat_of, linked_count=len(state.linked),
                pending_duplicates=state.pending,
            )
            await _escalate(session, settings, principal, state)


async def _escalate(session: AsyncSession, settings: Settings, principal: Principal, state: LinkState) -> None:
    case = state.case
    if case.status != "open" or case.risk_level == "high":
        return
    screen = await service.load_screen(session, case.municipality)
    if not domain.escalates(_linked(case), [_linked(c) for c in state.linked], screen):
        return
    previous = case.risk_level
    case.risk_level = "high"
    session.add(case)
    session.add(
        RiskAssessment(
            case_id=case.id, answers={}, yes_count=0, red_flags=[domain.ESCALATION_FLAG], computed_level="high",
            professional_judgement=None, risk_level="high", assessed_at=datetime.now(UTC),
            assessed_by_sub=principal.sub, assessed_by_role=principal.role.value,
        )
    )
    await session.flush()
    await service.record_audit(session, principal, case, "case.risk_escalated")
    await events.case_risk_assessed(
        session, settings, case, previous=previous, yes_count=0, red_flags=[domain.ESCALATION_FLAG]
    )

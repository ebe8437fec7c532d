"""Intake's persistence: case numbers, the risk screen, listing cases (`shared.paging`), a case's records.

The other ideas live in their own modules: the audit trail (`trail.py`; its hash chain in `audit.py`),
who may see a case (`access.py`), the keyed-trigram search SQL and key census (`search_index.py`).
Their names are re-exported here for the callers that still say `service.<name>`.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.intake import domain
from services.intake.models import (
    Case,
    CaseTransfer,
    ConsentRecord,
    ProtectionOrder,
    RiskAssessment,
)
from shared.db import DriverStatement
from shared.paging import Keyset, fetch_page

# Every report reads it first (asyncpg itself runs it; it also begins the report's transaction).
_LOAD_SCREEN = DriverStatement(sa.text(
    "SELECT questions, high_yes_count, medium_yes_count, escalation_cases, escalation_window_days"
    " FROM risk_screen_configs WHERE municipality = :m"
))


async def load_screen(
    session: AsyncSession, municipality: str, default: domain.RiskScreen | None = None
) -> domain.RiskScreen:
    """The municipality's risk screen, or `default` (the country profile's; Albania's when not given).
    No ORM object to build."""
    rows = await _LOAD_SCREEN.fetch(session, {"m": municipality})
    if not rows:
        return default or domain.RiskScreen()
    row = rows[0]
    questions = row.questions  # the jsonb as text (SQLAlchemy's asyncpg codec), or decoded by another codec
    if isinstance(questions, str):
        questions = json.loads(questions)
    return domain.RiskScreen(
        questions=tuple((str(q["id"]), bool(q.get("red_flag"))) for q in questions),
        high_yes_count=row.high_yes_count,
        medium_yes_count=row.medium_yes_count,
        escalation_cases=row.escalation_cases,
        escalation_window_days=row.escalation_window_days,
    )


T = TypeVar("T", RiskAssessment, ProtectionOrder, ConsentRecord)


CASE_ORDER = Keyset("cases", (Case.reported_at, Case.id), descending=True)  # newest first


async def search_cases(
    session: AsyncSession,
    *,
    municipality: str,
    status: str | None,
    risk_level: str | None,
    q: str | None,
    keys: list[str],
    threshold: float,
    cursor: str | None,
    limit: int,
    under: list[Probe] | None = None,
) -> tuple[list[tuple[Case, float | None]], str | None]:
    """Newest first, keyset-paginated (`shared.paging`); `q` matches names (keyed trigrams) or case
    numbers (pg_trgm/ILIKE). Returns the page and the next page's cursor (a bad cursor is a 422).
    `keys` is the name under one index key; `under` (`search_index.probes`) under each key read while
    MKR_INDEX_KEY changes (a case's score is its best, one row per case)."""
    named = [probe for probe in (under if under is not None else [Probe(keys, None)]) if probe.keys]
    score_sql = sa.literal(None, sa.Float).label("score")
    stmt = sa.select(Case).where(col(Case.municipality) == municipality)
    if status:
        stmt = stmt.where(col(Case.status) == status)
    if risk_level:
        stmt = stmt.where(col(Case.risk_level) == risk_level)
    if q:
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        # A transferred case is found under the number it had before too (the paper file says that one).
        before = (
            sa.select(sa.literal(1))
            .where(
                col(CaseTransfer.case_id) == col(Case.id),
                col(CaseTransfer.status) == "accepted",
                col(CaseTransfer.from_case_number).ilike(like),
            )
            .exists()
        )
        by_number = sa.or_(col(Case.case_number).ilike(like), before)
        if named:
            hits = (
                sa.text(_hits_sql(len(named)))
                .columns(sa.column("case_id", sa.Uuid), sa.column("score", sa.Float))
                .subquery("hits")
            )
            stmt = stmt.outerjoin(hits, hits.c.case_id == Case.id).where(sa.or_(by_number, hits.c.score >= threshold))
            score_sql = hits.c.score.label("score")
        else:
            stmt = stmt.where(by_number)
    stmt = stmt.add_columns(score_sql)
    params: dict[str, Any] = {"m": municipality, "threshold": threshold}
    for i, probe in enumerate(named):
        params |= {f"keys{i}": probe.keys, f"n{i}": len(probe.keys),
                   f"probe{i}": await probe_keys(session, municipality, probe.keys, threshold)}
    rows, next_cursor = await fetch_page(session, stmt, CASE_ORDER, limit, cursor, params=params, scalars=False)
    return [(row[0], None if row[1] is None else round(float(row[1]), 3)) for row in rows], next_cursor


def _hits_sql(probes: int) -> str:
    """Cases whose name shares enough keys with the query's probe `i` (`:keys<i>`, `:n<i>`, `:probe<i>`);
    with two probes (two index keys), one row per case with its best score."""
    named = [
        f"""SELECT s.case_id, {SHARED_KEYS.replace(":keys", f":keys{i}")}::float / :n{i} AS score
            FROM survivor_index s WHERE s.municipality = :m AND {PROBED.replace(":probe", f":probe{i}")}"""
        for i in range(probes)
    ]
    if probes == 1:
        return f"SELECT case_id, score FROM ({named[0]}) AS named WHERE score >= :threshold"
    return (f"SELECT case_id, max(score) AS score FROM ({' UNION ALL '.join(named)}) AS named "
            "GROUP BY case_id HAVING max(score) >= :threshold")


# --- reading a case ---


@dataclass
class CaseRecords:
    assessments: list[RiskAssessment]
    orders: list[ProtectionOrder]
    consents: list[ConsentRecord]


async def case_records(session: AsyncSession, case_id: uuid.UUID) -> CaseRecords:
    return CaseRecords(
        await _records(session, RiskAssessment, case_id, RiskAssessment.assessed_at),
        await _records(session, ProtectionOrder, case_id, ProtectionOrder.recorded_at),
        await _records(session, ConsentRecord, case_id, ConsentRecord.id),
    )


async def _records(session: AsyncSession, model: type[T], case_id: uuid.UUID, order: Any) -> list[T]:
    """A case's rows of one record table, in `order`."""
    stmt = sa.select(model).where(model.case_id == case_id).order_by(order)  # type: ignore[arg-type]
    return list((await session.execute(stmt)).scalars())


def current_consent(records: list[ConsentRecord]) -> tuple[list[str], list[str]]:
    """(kinds shared with, kinds withdrawn) from the latest record per kind."""
    latest: dict[str, bool] = {}
    for record in records:
        latest[record.kind] = record.given
    return sorted(k for k, v in latest.items() if v), sorted(k for k, v in latest.items() if not v)


# Re-exported: callers written as `service.<name>` keep working while they move to the modules above.
from services.intake.access import (  # noqa: E402
    READABLE_STATUSES,
    CaseHidden,
    get_visible_case,
    is_referred,
    readable_referral,
)
from services.intake.search_index import (  # noqa: E402
    CENSUS_BUCKET,
    DUPLICATES_SQL,
    KEY_COUNTS_SQL,
    PROBED,
    SHARED_KEYS,
    Match,
    Probe,
    census_bucket,
    count_survivor_keys,
    possible_duplicates,
    probe_keys,
    probe_size,
    probes,
    rarest,
)
from services.intake.trail import (  # noqa: E402
    audit_trail,
    record_audit,
    record_audit_many,
    record_denied,
    record_forbidden,
)

__all__ = [
    "CENSUS_BUCKET",
    "DUPLICATES_SQL",
    "KEY_COUNTS_SQL",
    "READABLE_STATUSES",
    "CaseHidden",
    "CaseRecords",
    "Match",
    "Probe",
    "audit_trail",
    "case_records",
    "census_bucket",
    "count_survivor_keys",
    "current_consent",
    "get_visible_case",
    "is_referred",
    "load_screen",
    "possible_duplicates",
    "probe_keys",
    "probe_size",
    "probes",
    "rarest",
    "readable_referral",
    "record_audit",
    "record_audit_many",
    "record_denied",
    "record_forbidden",
    "search_cases",
]

"""Intake's persistence: case numbers, the search index, idempotency, audit, and reading a case back."""

from __future__ import annotations

import math
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import domain
from services.intake.models import (
    AuditEntry,
    Case,
    CaseTransfer,
    ConsentRecord,
    ProtectionOrder,
    ReferralAccess,
    RiskAssessment,
    RiskScreenConfig,
)
from shared.auth import Principal, Role
from shared.errors import Problem, not_found
from shared.paging import Keyset, fetch_page


async def load_screen(session: AsyncSession, municipality: str) -> domain.RiskScreen:
    row = await session.get(RiskScreenConfig, municipality)
    if row is None:
        return domain.RiskScreen()
    return domain.RiskScreen(
        questions=tuple((str(q["id"]), bool(q.get("red_flag"))) for q in row.questions),
        high_yes_count=row.high_yes_count,
        medium_yes_count=row.medium_yes_count,
    )


async def record_audit(session: AsyncSession, principal: Principal, case: Case, action: str) -> None:
    await record_audit_many(session, principal, [case], action)


async def record_audit_many(session: AsyncSession, principal: Principal, cases: list[Case], action: str) -> None:
    if not cases:
        return
    now = datetime.now(UTC)
    table = AuditEntry.__table__  # type: ignore[attr-defined]
    await session.execute(
        table.insert(),
        [
            {
                "at": now,
                "case_id": case.id,
                "municipality": case.municipality,
                "sub": principal.sub,
                "role": principal.role.value,
                "action": action,
            }
            for case in cases
        ],
    )


T = TypeVar("T", RiskAssessment, ProtectionOrder, ConsentRecord)


# --- duplicates and search: keyed trigrams compared in SQL -------------------------------------------------
#
# A name is a set of keyed trigrams (shared/crypto.py). Both searches ask for names holding at least
# `need` of the query's n keys: the duplicate search because Jaccard(A, B) >= t implies |A ∩ B| >= t·|A ∪ B|
# >= t·n, the case search because its score is |A ∩ B| / n. By pigeonhole, such a name holds at least one
# of ANY n - need + 1 of the query's keys, so the GIN index is probed with only that many keys — the
# rarest ones by the key census, looked up first — and no match is missed whatever the census says (a
# stale census only makes the probe wider). The probe keys are a plain parameter, so the planner sees
# them. Scores are then computed once per remaining row, and `cases` is joined only for the rows returned.

KEY_COUNTS_SQL = (
    "SELECT key, survivors FROM survivor_key_counts WHERE municipality = :m AND key = ANY(CAST(:keys AS text[]))"
)
_SHARED = "(SELECT count(*) FROM unnest(s.name_keys) AS k WHERE k = ANY(CAST(:keys AS text[])))"


def probe_size(n: int, share: float) -> int:
    """How many of a query's n keys the index must be probed with so that no name sharing
    at least ⌈share·n⌉ of them is missed (pigeonhole): n - ⌈share·n⌉ + 1."""
    need = max(1, math.ceil(share * n - 1e-9))
    return max(1, n - need + 1)


def rarest(keys: list[str], counts: dict[str, int], share: float) -> list[str]:
    """The keys to probe the index with: the `probe_size` rarest by the census (unknown keys count as rare)."""
    return sorted(keys, key=lambda key: (counts.get(key, 0), key))[: probe_size(len(keys), share)]


async def probe_keys(session: AsyncSession, municipality: str, keys: list[str], share: float) -> list[str]:
    """The probe keys of a query, and plans made for them: a prepared statement's generic plan cannot see
    which keys (or how rare) it will be probed with, and measured twice as slow (asyncpg prepares every
    statement, and PostgreSQL switches to the generic plan after five executions)."""
    await session.execute(sa.text("SET LOCAL plan_cache_mode = force_custom_plan"))
    rows = await session.execute(sa.text(KEY_COUNTS_SQL), {"m": municipality, "keys": keys})
    return rarest(keys, {key: survivors for key, survivors in rows.all()}, share)


DUPLICATES_SQL = f"""
    WITH candidates AS (
        SELECT s.case_id, s.birth_date_key, cardinality(s.name_keys) AS size, o.shared
        FROM survivor_index s CROSS JOIN LATERAL {_SHARED} AS o(shared)
        WHERE s.municipality = :m
          AND s.name_keys && CAST(:probe AS text[])
          AND s.case_id <> :exclude
          AND (CAST(:by AS int) IS NULL OR s.birth_year IS NULL
               OR s.birth_year BETWEEN CAST(:by AS int) - 1 AND CAST(:by AS int) + 1)
    ), scored AS (
        SELECT case_id, birth_date_key, shared::float / (size + :n - shared) AS name_score FROM candidates
    ), top AS (
        SELECT case_id,
               LEAST(1.0, name_score + CASE WHEN birth_date_key = :bdk THEN 0.1 ELSE 0 END) AS score
        FROM scored WHERE name_score >= :threshold
    )
    SELECT c.id, c.case_number, t.score FROM top t JOIN cases c ON c.id = t.case_id
    WHERE CAST(:everything AS boolean)
       OR c.reported_by_sub = :viewer_sub
       OR (CAST(:viewer_member AS text) IS NOT NULL AND (
            c.reported_by_member_id = CAST(:viewer_member AS text)
            OR EXISTS (SELECT 1 FROM referral_access a
                       WHERE a.case_id = c.id AND a.member_id = CAST(:viewer_member AS text)
                         AND a.status IN ('pending', 'acknowledged', 'accepted', 'completed'))))
    ORDER BY t.score DESC, c.reported_at DESC, c.id
    LIMIT :limit
    """


@dataclass(frozen=True)
class Match:
    id: uuid.UUID
    case_number: str
    score: float


async def possible_duplicates(
    session: AsyncSession,
    *,
    viewer: Principal,
    municipality: str,
    keys: list[str],
    birth_year: int | None,
    birth_date_key: str | None,
    exclude: uuid.UUID,
    threshold: float,
    limit: int,
) -> list[Match]:
    """Earlier cases whose survivor's name is similar (Jaccard of keyed trigrams) and birth year fits,
    among those `viewer` may read (CONTRACT §2: no oracle of who has a case elsewhere)."""
    if not keys:
        return []
    params = {
        "keys": keys,
        "n": len(keys),
        "probe": await probe_keys(session, municipality, keys, threshold),
        "m": municipality,
        "exclude": exclude,
        "by": birth_year,
        "bdk": birth_date_key,
        "threshold": threshold,
        "limit": limit,
        "everything": viewer.role is Role.coordinator,
        "viewer_sub": viewer.sub,
        "viewer_member": viewer.member_id if viewer.is_institution else None,
    }
    rows = (await session.execute(sa.text(DUPLICATES_SQL), params)).all()
    return [Match(row.id, row.case_number, round(float(row.score), 3)) for row in rows]


# The census keeps no exact count per key at rest: each is rounded up to a power of two (1, 2, 4, 8, …),
# enough to tell rare keys from common ones. Rounding up is monotonic, so the probe stays correct.
CENSUS_BUCKET = "CAST(power(2, ceil(log(2.0, GREATEST({count}, 1)::numeric))) AS int)"


def census_bucket(count: int) -> int:
    """What the census stores for `count` survivors holding a key: the power of two at or above it."""
    return 1 << max(0, count - 1).bit_length()


async def count_survivor_keys(session: AsyncSession) -> list[str]:
    """Recount the key census of each municipality whose number of survivors changed since its last count.

    One replica at a time (a transaction-scoped advisory lock; the others skip). Returns the
    municipalities recounted."""
    got = await session.scalar(sa.text("SELECT pg_try_advisory_xact_lock(hashtext('mkr.intake.key_census'))"))
    if not got:
        return []
    stale = (
        await session.execute(
            sa.text(
                """
                SELECT s.municipality, count(*) AS survivors
                FROM survivor_index s LEFT JOIN survivor_key_census c ON c.municipality = s.municipality
                GROUP BY s.municipality, c.survivors
                HAVING c.survivors IS DISTINCT FROM count(*)
                """
            )
        )
    ).all()
    for municipality, _ in stale:
        await session.execute(sa.text("DELETE FROM survivor_key_counts WHERE municipality = :m"), {"m": municipality})
        await session.execute(
            sa.text(
                f"""
                INSERT INTO survivor_key_counts (municipality, key, survivors)
                SELECT :m, k, {CENSUS_BUCKET.format(count="count(*)")} FROM survivor_index s, unnest(s.name_keys) AS k
                WHERE s.municipality = :m GROUP BY k
                """
            ),
            {"m": municipality},
        )
        await session.execute(
            sa.text(
                """
                INSERT INTO survivor_key_census (municipality, survivors, counted_at)
                SELECT :m, count(*), now() FROM survivor_index WHERE municipality = :m
                ON CONFLICT (municipality) DO UPDATE
                SET survivors = EXCLUDED.survivors, counted_at = EXCLUDED.counted_at
                """
            ),
            {"m": municipality},
        )
    return [municipality for municipality, _ in stale]


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
) -> tuple[list[tuple[Case, float | None]], str | None]:
    """Newest first, keyset-paginated (`shared.paging`); `q` matches names (keyed trigrams) or case
    numbers (pg_trgm/ILIKE). Returns the page and the next page's cursor (a bad cursor is a 422)."""
    score_sql = sa.literal(None, sa.Float).label("score")
    stmt = sa.select(Case).where(Case.municipality == municipality)  # type: ignore[arg-type]
    if status:
        stmt = stmt.where(Case.status == status)  # type: ignore[arg-type]
    if risk_level:
        stmt = stmt.where(Case.risk_level == risk_level)  # type: ignore[arg-type]
    if q:
        like = "%" + q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        # A transferred case is found under the number it had before too (the paper file says that one).
        before = (
            sa.select(sa.literal(1))
            .where(
                CaseTransfer.case_id == Case.id,  # type: ignore[arg-type]
                CaseTransfer.status == "accepted",  # type: ignore[arg-type]
                CaseTransfer.from_case_number.ilike(like),  # type: ignore[attr-defined]
            )
            .exists()
        )
        by_number = sa.or_(Case.case_number.ilike(like), before)  # type: ignore[attr-defined]
        if keys:
            hits = (
                sa.text(
                    f"""SELECT case_id, score FROM (
                            SELECT s.case_id, {_SHARED}::float / :n AS score FROM survivor_index s
                            WHERE s.municipality = :m AND s.name_keys && CAST(:probe AS text[])
                        ) AS named WHERE score >= :threshold"""
                )
                .columns(sa.column("case_id", sa.Uuid), sa.column("score", sa.Float))
                .subquery("hits")
            )
            stmt = stmt.outerjoin(hits, hits.c.case_id == Case.id).where(sa.or_(by_number, hits.c.score >= threshold))
            score_sql = hits.c.score.label("score")
        else:
            stmt = stmt.where(by_number)
    stmt = stmt.add_columns(score_sql)
    params: dict[str, Any] = {
        "keys": keys,
        "n": max(len(keys), 1),
        "probe": await probe_keys(session, municipality, keys, threshold) if keys else [],
        "m": municipality,
        "threshold": threshold,
    }
    rows, next_cursor = await fetch_page(session, stmt, CASE_ORDER, limit, cursor, params=params, scalars=False)
    return [(row[0], None if row[1] is None else round(float(row[1]), 3)) for row in rows], next_cursor


# --- reading a case ---


async def get_visible_case(
    session: AsyncSession, principal: Principal, case_id: uuid.UUID, *, for_update: bool = False
) -> Case:
    """The case if the caller may see it; 404 otherwise (another municipality, or not theirs)."""
    stmt = sa.select(Case).where(Case.id == case_id)  # type: ignore[arg-type]
    if for_update:
        stmt = stmt.with_for_update()
    case = (await session.execute(stmt)).scalar_one_or_none()
    if case is None:
        raise not_found("case")
    if case.municipality != principal.municipality:
        raise CaseHidden(case, principal)
    referred = False
    if principal.is_institution and principal.member_id is not None:
        referred = await is_referred(session, case.id, principal.member_id)
    if not domain.can_read_case(
        principal,
        reported_by_sub=case.reported_by_sub,
        reported_by_member_id=case.reported_by_member_id,
        referred=referred,
    ):
        raise CaseHidden(case, principal)
    return case


READABLE_STATUSES = ("pending", "acknowledged", "accepted", "completed")  # CONTRACT §2


def readable_referral(case_id: Any, member_id: Any) -> sa.ColumnElement[bool]:
    """A referral of the case to the institution that lets it read the case (declined/cancelled do not)."""
    return (
        sa.select(sa.literal(1))
        .where(
            ReferralAccess.case_id == case_id,  # type: ignore[arg-type]
            ReferralAccess.member_id == member_id,  # type: ignore[arg-type]
            ReferralAccess.status.in_(READABLE_STATUSES),  # type: ignore[attr-defined]
        )
        .exists()
    )


async def is_referred(session: AsyncSession, case_id: uuid.UUID, member_id: str) -> bool:
    return bool(await session.scalar(sa.select(readable_referral(case_id, member_id))))


class CaseHidden(Problem):
    """404 for a case that exists but is not the caller's to see, like one that does not exist. The app's
    handler records the attempt in the case's audit trail once the request's transaction is over."""

    def __init__(self, case: Case, principal: Principal) -> None:
        super().__init__(404, "No such case.")
        self.case_id = case.id
        self.case_municipality = case.municipality
        self.principal = principal


async def record_denied(session: AsyncSession, denied: CaseHidden) -> None:
    table = AuditEntry.__table__  # type: ignore[attr-defined]
    await session.execute(
        table.insert().values(
            at=datetime.now(UTC),
            case_id=denied.case_id,
            municipality=denied.case_municipality,
            sub=denied.principal.sub,
            role=denied.principal.role.value,
            action="case.access_denied",
        )
    )


async def record_forbidden(session: AsyncSession, principal: Principal, case_id: uuid.UUID | None) -> None:
    """A 403: in the trail of the case the path names when there is one (and it exists), else of no case."""
    case = await session.get(Case, case_id) if case_id is not None else None
    table = AuditEntry.__table__  # type: ignore[attr-defined]
    await session.execute(
        table.insert().values(
            at=datetime.now(UTC),
            case_id=case.id if case else None,
            municipality=case.municipality if case else principal.municipality,
            sub=principal.sub,
            role=principal.role.value,
            action="access.forbidden",
        )
    )


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


AUDIT_ORDER = Keyset("audit", (AuditEntry.id,))  # the order of the hash chain


async def audit_trail(
    session: AsyncSession, case_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[AuditEntry], str | None]:
    """One page of a case's trail, oldest first, and the next page's cursor."""
    stmt = sa.select(AuditEntry).where(AuditEntry.case_id == case_id)  # type: ignore[arg-type]
    return await fetch_page(session, stmt, AUDIT_ORDER, limit, cursor)

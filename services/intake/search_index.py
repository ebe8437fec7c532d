"""Duplicates and case search over the survivor index: keyed trigrams compared in SQL, and the key census."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from shared import db
from shared.auth import Principal, Role
from shared.crypto import SearchIndexer

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
    "SELECT key, max(survivors) FROM survivor_key_counts WHERE municipality = :m AND key = ANY(CAST(:keys AS text[]))"
    " GROUP BY key"
)
# How many keys a row shares with the query (SHARED_KEYS), and which rows the index yields for the probe keys
# (PROBED): both over the keys' 32-bit codes (intarray's `&` and `&&`; GIN index ix_survivor_index_name_codes).
# survivor_key_codes of a parameter folds to a constant when the statement is planned.
SHARED_KEYS = "icount(s.name_codes & survivor_key_codes(CAST(:keys AS text[])))"
PROBED = "s.name_codes && survivor_key_codes(CAST(:probe AS text[]))"


def probe_size(n: int, share: float) -> int:
    """How many of a query's n keys the index must be probed with so that no name sharing
    at least ⌈share·n⌉ of them is missed (pigeonhole): n - ⌈share·n⌉ + 1."""
    need = max(1, math.ceil(share * n - 1e-9))
    return max(1, n - need + 1)


def rarest(keys: list[str], counts: dict[str, int], share: float) -> list[str]:
    """The keys to probe the index with: the `probe_size` rarest by the census (unknown keys count as rare)."""
    return sorted(keys, key=lambda key: (counts.get(key, 0), key))[: probe_size(len(keys), share)]


# One statement: the plan mode for the statements after it (set_config(..., true) is SET LOCAL) — custom plans,
# and no parallel workers (on a small host a worker's start costs more than a search) — and the
# census counts of the query's keys (the largest over index key ids, as KEY_COUNTS_SQL). The LEFT JOIN from
# the one-row subquery always yields a row, so set_config runs even when no key is counted yet (key NULL).
CENSUS_SELECT = (
    "SELECT c.key, max(c.survivors) AS survivors "
    "FROM (SELECT set_config('plan_cache_mode', 'force_custom_plan', true),"
    " set_config('max_parallel_workers_per_gather', '0', true)) AS plan(mode, workers) "
    "LEFT JOIN survivor_key_counts c ON c.municipality = :m AND c.key = ANY(CAST(:keys AS text[])) GROUP BY c.key"
)


def probe_of(rows: Iterable[Any], keys: list[str], share: float) -> list[str]:
    """The probe keys, from the rows of CENSUS_SELECT."""
    return rarest(keys, {row.key: row.survivors for row in rows if row.key is not None}, share)


async def probe_keys(session: AsyncSession, municipality: str, keys: list[str], share: float) -> list[str]:
    """The probe keys of a query, and plans made for them: a prepared statement's generic plan cannot see
    which keys (or how rare) it will be probed with, and measured twice as slow (asyncpg prepares every
    statement, and PostgreSQL switches to the generic plan after five executions). One round trip."""
    rows = await session.execute(sa.text(CENSUS_SELECT), {"m": municipality, "keys": keys})
    return probe_of(rows, keys, share)


# Names alike (Jaccard of keyed trigrams) among the probed rows, scored once per row: the `top` CTE.
_TOP = f"""
    WITH candidates AS (
        SELECT s.case_id, s.birth_date_key, cardinality(s.name_codes) AS size, {SHARED_KEYS} AS shared
        FROM survivor_index s
        WHERE s.municipality = :m
          AND {PROBED}
          AND s.case_id <> :exclude
          AND (CAST(:by AS int) IS NULL OR s.birth_year IS NULL
               OR s.birth_year BETWEEN CAST(:by AS int) - 1 AND CAST(:by AS int) + 1)
    ), scored AS (
        SELECT case_id, birth_date_key, shared::float / (size + :n - shared) AS name_score FROM candidates
    ), top AS (
        SELECT case_id,
               LEAST(1.0, name_score + CASE WHEN birth_date_key = :bdk THEN 0.1 ELSE 0 END) AS score
        FROM scored WHERE name_score >= :threshold
    )"""
# Whether the viewer may read case `c` (CONTRACT §2), or `everything` is asked.
_VISIBLE = """(CAST(:everything AS boolean)
       OR c.reported_by_sub = :viewer_sub
       OR (CAST(:viewer_member AS text) IS NOT NULL AND (
            c.reported_by_member_id = CAST(:viewer_member AS text)
            OR EXISTS (SELECT 1 FROM referral_access a
                       WHERE a.case_id = c.id AND a.member_id = CAST(:viewer_member AS text)
                         AND a.status IN ('pending', 'acknowledged', 'accepted', 'completed')))))"""
DUPLICATES_SQL = f"""{_TOP}
    SELECT c.id, c.case_number, c.reported_at, t.score FROM top t JOIN cases c ON c.id = t.case_id
    WHERE {_VISIBLE}
    ORDER BY t.score DESC, c.reported_at DESC, c.id
    LIMIT :limit
    """
# A report's two searches in one (under one index key): the first `limit` of all matches (the candidates the
# coordinator decides on) and the first `limit` of those the reporter may read (shown to her), in the order
# of DUPLICATES_SQL.
REPORT_DUPLICATES_SQL = f"""{_TOP}, ranked AS (
        SELECT c.id, c.case_number, t.score, COALESCE({_VISIBLE}, false) AS visible,
               row_number() OVER (ORDER BY t.score DESC, c.reported_at DESC, c.id) AS rank_all
        FROM top t JOIN cases c ON c.id = t.case_id
    ), ranked_visible AS (
        SELECT id, case_number, score, visible, rank_all,
               row_number() OVER (PARTITION BY visible ORDER BY rank_all) AS rank_shown
        FROM ranked
    )
    SELECT id, case_number, score, rank_all <= :limit AS candidate, (visible AND rank_shown <= :limit) AS shown
    FROM ranked_visible WHERE rank_all <= :limit OR (visible AND rank_shown <= :limit)
    ORDER BY rank_all
    """


@dataclass(frozen=True)
class Match:
    id: uuid.UUID
    case_number: str
    score: float


@dataclass(frozen=True)
class Probe:
    """A name (and date of birth) keyed under one index key: what a search compares rows with."""

    keys: list[str]
    birth_date_key: str | None


def probes(indexer: SearchIndexer, name: str, municipality: str, date_of_birth: str | None) -> list[Probe]:
    """The query under each key a search reads (MKR_INDEX_KEY, and MKR_INDEX_KEY_PREVIOUS while the key
    changes). A row holds the keys of one index key only, so each probe meets only its own key's rows."""
    return [
        Probe(reader.keyed(name, municipality), reader.token(date_of_birth, municipality) if date_of_birth else None)
        for reader in indexer.readers
    ]


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
    everything: bool = False,
    under: list[Probe] | None = None,
) -> list[Match]:
    """Earlier cases whose survivor's name is similar (Jaccard of keyed trigrams) and birth year fits,
    among those `viewer` may read (CONTRACT §2: no oracle of who has a case elsewhere).

    `keys` and `birth_date_key` are the query under one key; `under` (`probes`) gives it under each key
    the index is read with: while MKR_INDEX_KEY changes, the candidates of both are merged (one per case,
    its best score) in the query's own order (`under` lists the current key first)."""
    found: dict[uuid.UUID, Any] = {}
    # One statement per key, so the previous key's first: `mkr reindex` (and every write) only ever moves
    # a row onto the current key, so a row moving between the two statements is met by one or both of
    # them (both: one result, the best score), never by neither.
    for probe in reversed(under if under is not None else [Probe(keys, birth_date_key)]):
        if not probe.keys:
            continue
        params = {
            "keys": probe.keys,
            "n": len(probe.keys),
            "probe": await probe_keys(session, municipality, probe.keys, threshold),
            "m": municipality,
            "exclude": exclude,
            "by": birth_year,
            "bdk": probe.birth_date_key,
            "threshold": threshold,
            "limit": limit,
            "everything": everything or viewer.role is Role.coordinator,
            "viewer_sub": viewer.sub,
            "viewer_member": viewer.member_id if viewer.is_institution else None,
        }
        for row in (await session.execute(sa.text(DUPLICATES_SQL), params)).all():
            if row.id not in found or row.score > found[row.id].score:
                found[row.id] = row
    rows = sorted(found.values(), key=lambda row: (-row.score, -row.reported_at.timestamp(), row.id))[:limit]
    return [Match(row.id, row.case_number, round(float(row.score), 3)) for row in rows]


async def report_duplicates(
    session: AsyncSession,
    *,
    viewer: Principal,
    municipality: str,
    keys: list[str],
    probe: list[str],
    birth_year: int | None,
    birth_date_key: str | None,
    exclude: uuid.UUID,
    threshold: float,
    limit: int,
) -> tuple[list[Match], list[Match]]:
    """A report's duplicate search under one index key in one statement, probed with `probe` (its plan custom:
    CENSUS_SELECT ran before in the transaction): every possible duplicate (the coordinator decides on each),
    and those the reporter is shown (she may read them) — `possible_duplicates` with and without `everything`."""
    if not keys:
        return [], []
    params = {
        "keys": keys, "n": len(keys), "probe": probe, "m": municipality, "exclude": exclude, "by": birth_year,
        "bdk": birth_date_key, "threshold": threshold, "limit": limit,
        "everything": viewer.role is Role.coordinator, "viewer_sub": viewer.sub,
        "viewer_member": viewer.member_id if viewer.is_institution else None,
    }  # fmt: skip
    rows = await _REPORT_DUPLICATES.fetch(session, params)
    found = [(Match(row.id, row.case_number, round(float(row.score), 3)), row) for row in rows]
    return [m for m, row in found if row.candidate], [m for m, row in found if row.shown]


_REPORT_DUPLICATES = db.DriverStatement(sa.text(REPORT_DUPLICATES_SQL))  # run by asyncpg itself: every report's


# The census keeps no exact count per key at rest: each is rounded up to a power of two (1, 2, 4, 8, …),
# enough to tell rare keys from common ones. Rounding up is monotonic, so the probe stays correct.
CENSUS_BUCKET = "CAST(power(2, ceil(log(2.0, GREATEST({count}, 1)::numeric))) AS int)"


def census_bucket(count: int) -> int:
    """What the census stores for `count` survivors holding a key: the power of two at or above it."""
    return 1 << max(0, count - 1).bit_length()


async def count_survivor_keys(session: AsyncSession) -> list[str]:
    """Recount the key census of each municipality whose number of survivors changed since its last count.

    Counted per index key id (`survivor_index.key_id`; '' for rows of before key ids): while `mkr reindex`
    moves rows from the previous key to the new one, each key's count changes and is recounted on its
    own, and a key no row is under any more loses its census. One replica at a time (a transaction-scoped
    advisory lock; the others skip). Returns the municipalities recounted."""
    got = await session.scalar(sa.text("SELECT pg_try_advisory_xact_lock(hashtext('mkr.intake.key_census'))"))
    if not got:
        return []
    stale = (await session.execute(sa.text(STALE_CENSUS_SQL))).all()
    for municipality, key_id, survivors in stale:
        where = {"m": municipality, "kid": key_id}
        await session.execute(
            sa.text("DELETE FROM survivor_key_counts WHERE municipality = :m AND key_id = :kid"), where
        )
        if survivors is None:
            await session.execute(
                sa.text("DELETE FROM survivor_key_census WHERE municipality = :m AND key_id = :kid"), where
            )
            continue
        await session.execute(
            sa.text(
                f"""
                INSERT INTO survivor_key_counts (municipality, key_id, key, survivors)
                SELECT :m, :kid, k, {CENSUS_BUCKET.format(count="count(*)")}
                FROM survivor_index s, unnest(s.name_keys) AS k
                WHERE s.municipality = :m AND coalesce(s.key_id, '') = :kid GROUP BY k
                """
            ),
            where,
        )
        await session.execute(
            sa.text(
                """
                INSERT INTO survivor_key_census (municipality, key_id, survivors, counted_at)
                VALUES (:m, :kid, :n, now())
                ON CONFLICT (municipality, key_id) DO UPDATE
                SET survivors = EXCLUDED.survivors, counted_at = EXCLUDED.counted_at
                """
            ),
            where | {"n": survivors},
        )
    return list(dict.fromkeys(municipality for municipality, _, _ in stale))


# Each (municipality, index key id) whose number of survivors is not the census's; survivors NULL: no row
# is under that key any more. The count is taken in the same transaction as the recount that follows.
STALE_CENSUS_SQL = """
    SELECT coalesce(i.municipality, c.municipality), coalesce(i.key_id, c.key_id), i.survivors
    FROM (SELECT municipality, coalesce(key_id, '') AS key_id, count(*) AS survivors
          FROM survivor_index GROUP BY 1, 2) AS i
    FULL JOIN survivor_key_census c ON c.municipality = i.municipality AND c.key_id = i.key_id
    WHERE c.survivors IS DISTINCT FROM i.survivors
    """

"""The summary's counts of cases and referrals from the monthly rollups, exact for any period.

A period (UTC dates, inclusive) is split into its whole months, read from the rollups the triggers keep
(migration 0005_h15lp: `case_counts`, `referral_counts`, `referral_ack_buckets`), and the days before the
first and after the last whole month, counted from the rows themselves with the same definitions. The
median time to acknowledge is exact too: counts per bucket of the time (8 per doubling of the seconds) say in
which bucket the middle referrals lie, and only that bucket's rows are read (an expression index finds them).

Why: over 500 000 cases the national summary scanned every row of the period, several times, 1.2-3.6 s;
a year is now 12 months × the municipalities × ~40 cells. See BENCHMARKS.md.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

CASE_CELLS_ROLLUP = sa.text(
    """
    SELECT municipality, dimension, value, sum(n) AS n FROM case_counts
    WHERE municipality = :m AND month = ANY(CAST(:whole_months AS date[]))
    GROUP BY 1, 2, 3
    """
)
# The days outside whole months: one scan of their rows, per municipality (totals), per combination of the
# coded breakdowns and per list of violence types (few distinct lists), turned into cells in Python: an
# independent count of what `case_count_cells` defines for the trigger (tests compare the two). Calling
# that function per row took 15 times as long.
CASE_CELLS_ROWS = sa.text(
    """
    SELECT grouping(municipality) AS by_breakdown, grouping(vts) AS not_violence,
           municipality, s, a, e, r, src, vts, count(*) AS n,
           count(*) FILTER (WHERE children_count > 0) AS with_children,
           count(*) FILTER (WHERE status = 'closed') AS closed,
           count(*) FILTER (WHERE repeat) AS repeats,
           count(*) FILTER (WHERE moved) AS transferred_out
    FROM (
        SELECT reported_municipality AS municipality, coalesce(sex, 'unknown') AS s,
               coalesce(age_group, 'unknown') AS a, coalesce(ethnicity, 'undisclosed') AS e, risk_level AS r,
               coalesce(source, 'unknown') AS src, violence_types AS vts, children_count, status, repeat,
               municipality <> reported_municipality AS moved
        FROM case_facts
        WHERE reported_municipality = :m AND reported_at >= :start AND reported_at < :end
    ) t
    GROUP BY GROUPING SETS ((municipality), (s, a, e, r, src), (vts))
    """
)
BREAKDOWN_COLUMNS = (("s", "sex"), ("a", "age_group"), ("e", "ethnicity"), ("r", "risk_level"), ("src", "source"))


def _cells_of(row: Any) -> Iterator[tuple[tuple[str, str, str], int]]:
    """The cells one row of CASE_CELLS_ROWS counts in (breakdown cells under the municipality ``)."""
    n = int(row.n)
    if not row.by_breakdown:
        yield (row.municipality, "total", "all"), n
        for dimension, count in (("with_children", row.with_children), ("closed", row.closed),
                                 ("repeat", row.repeats), ("transferred_out", row.transferred_out)):
            yield (row.municipality, dimension, "yes"), int(count)
    elif not row.not_violence:
        for vt in sorted(set(row.vts)) or ["unknown"]:
            yield ("", "violence_type", vt), n
    else:
        for column, dimension in BREAKDOWN_COLUMNS:
            yield ("", dimension, getattr(row, column)), n


REFERRALS_ROLLUP = sa.text(
    """
    SELECT to_member_kind, status, sum(n) AS n, sum(breaches) AS breaches FROM referral_counts
    WHERE municipality = :m AND month = ANY(CAST(:whole_months AS date[]))
    GROUP BY 1, 2
    """
)
REFERRALS_ROWS = sa.text(
    """
    SELECT to_member_kind, status, count(*) AS n, count(*) FILTER (WHERE sla_breached_at IS NOT NULL) AS breaches
    FROM referrals WHERE municipality = :m AND created_at >= :start AND created_at < :end
    GROUP BY 1, 2
    """
)
ACK_BUCKETS_ROLLUP = sa.text(
    """
    SELECT bucket, sum(n) AS n FROM referral_ack_buckets
    WHERE municipality = :m AND month = ANY(CAST(:whole_months AS date[]))
    GROUP BY 1
    """
)
# The bucket exactly as the trigger computes it, so that the expression index ix_referrals_ack_bucket applies.
BUCKET = "floor(8 * ln(greatest(date_part('epoch', acknowledged_at - created_at), 1)) / ln(2.0))::integer"
ACK_BUCKETS_ROWS = sa.text(
    f"""
    SELECT {BUCKET} AS bucket, count(*) AS n FROM referrals
    WHERE municipality = :m AND created_at >= :start AND created_at < :end AND acknowledged_at IS NOT NULL
    GROUP BY 1
    """
)
ACK_SECONDS_IN_BUCKET = sa.text(
    f"""
    SELECT date_part('epoch', acknowledged_at - created_at) AS seconds FROM referrals
    WHERE municipality = :m AND created_at >= :start AND created_at < :end AND acknowledged_at IS NOT NULL
      AND {BUCKET} = :bucket
    ORDER BY 1
    """
)


@dataclass(frozen=True)
class Period:
    """Whole UTC months of a period, and the spans of days around them ([start, end) instants)."""

    months: list[date]
    edges: list[tuple[datetime, datetime]]
    start: datetime
    end: datetime


def _instant(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def split(start: date, end: date, *, rollups: bool = True) -> Period:
    """`start`..`end` (inclusive dates) as whole months and edges; without `rollups`, one edge: all rows."""
    first = date(start.year, start.month, 1)
    if first < start:
        first = _next_month(first)
    months: list[date] = []
    month = first
    while rollups and _next_month(month) - timedelta(days=1) <= end:
        months.append(month)
        month = _next_month(month)
    after = end + timedelta(days=1)
    if not months:
        return Period([], [(_instant(start), _instant(after))], _instant(start), _instant(after))
    edges = [(_instant(start), _instant(months[0])), (_instant(_next_month(months[-1])), _instant(after))]
    return Period(months, [(a, b) for a, b in edges if a < b], _instant(start), _instant(after))


def _parts(period: Period, params: dict[str, Any]) -> Iterator[tuple[bool, dict[str, Any]]]:
    """(from the rollup?, parameters) for each part of the period that has days in it."""
    if period.months:
        yield True, {**params, "whole_months": period.months}
    for a, b in period.edges:
        yield False, {**params, "start": a, "end": b}


async def case_cells(
    session: AsyncSession, scoped: Any, period: Period, params: dict[str, Any]
) -> Counter[tuple[str, str, str]]:
    """Cases per (reporting municipality, dimension, value) over the period (cells: SQL `case_count_cells`)."""
    cells: Counter[tuple[str, str, str]] = Counter()
    for rolled, part in _parts(period, params):
        if rolled:
            for row in await session.execute(scoped(CASE_CELLS_ROLLUP), part):
                cells[(row.municipality, row.dimension, row.value)] += int(row.n)
        else:
            for row in await session.execute(scoped(CASE_CELLS_ROWS), part):
                for cell, n in _cells_of(row):
                    cells[cell] += n
    return +cells  # a cell whose cases all moved away (n = 0) is not shown


async def referral_cells(
    session: AsyncSession, scoped: Any, period: Period, params: dict[str, Any]
) -> tuple[Counter[tuple[str, str]], int]:
    """Referrals per (member kind, status), and the SLA breaches among them."""
    cells: Counter[tuple[str, str]] = Counter()
    breaches = 0
    for rolled, part in _parts(period, params):
        for row in await session.execute(scoped(REFERRALS_ROLLUP if rolled else REFERRALS_ROWS), part):
            cells[(row.to_member_kind, row.status)] += int(row.n)
            breaches += int(row.breaches)
    return +cells, breaches


async def median_ack_hours(session: AsyncSession, scoped: Any, period: Period, params: dict[str, Any]) -> float | None:
    """percentile_cont(0.5) of the hours from creation to acknowledgement, as the SQL aggregate computes it."""
    buckets: Counter[int] = Counter()
    for rolled, part in _parts(period, params):
        for row in await session.execute(scoped(ACK_BUCKETS_ROLLUP if rolled else ACK_BUCKETS_ROWS), part):
            buckets[int(row.bucket)] += int(row.n)
    total = sum(buckets.values())
    if total == 0:
        return None
    lower, upper = (total - 1) // 2, total // 2  # the 0-based ranks of the middle value(s)
    values: dict[int, float] = {}
    below = 0
    for bucket in sorted(buckets):
        count = buckets[bucket]
        wanted = [rank for rank in (lower, upper) if below <= rank < below + count and rank not in values]
        if wanted:
            whole = {**params, "start": period.start, "end": period.end, "bucket": bucket}
            seconds = list((await session.execute(scoped(ACK_SECONDS_IN_BUCKET), whole)).scalars())
            if len(seconds) != count:  # a referral acknowledged between the two reads: count from the rows
                return await _median_from_rows(session, scoped, period, params)
            for rank in wanted:
                values[rank] = float(seconds[rank - below]) / 3600.0
        below += count
        if below > upper:
            break
    first, second = values[lower], values[upper]
    return first + (second - first) * 0.5 if upper != lower else first


MEDIAN_FROM_ROWS = sa.text(
    """
    SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY date_part('epoch', acknowledged_at - created_at) / 3600.0)
    FROM referrals
    WHERE municipality = :m AND created_at >= :start AND created_at < :end AND acknowledged_at IS NOT NULL
    """
)


async def _median_from_rows(session: AsyncSession, scoped: Any, period: Period, params: dict[str, Any]) -> float | None:
    whole = {**params, "start": period.start, "end": period.end}
    value = (await session.execute(scoped(MEDIAN_FROM_ROWS), whole)).scalar()
    return None if value is None else float(value)

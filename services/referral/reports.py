"""Dashboard and report queries: SQL aggregation over referral's own tables and projections (indexed).

Periods are UTC dates, `from` and `to` inclusive. Counting rules are DOMAIN.md's "Reports".
"""

from __future__ import annotations

import csv
import functools
import io
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.referral import disclosure, rollups
from services.referral.schemas import Dashboard, ReportSummary
from shared.vocab import AGE_GROUPS

SEXES = ("female", "male", "other")
RISK_LEVELS = ("low", "medium", "high")
ITEMS = 50  # the dashboard lists at most this many of each; `count` is always the full number
NATIONAL = "*"  # the auditor's `municipality=*`: every municipality summed (CONTRACT.md §10)


def _bounds(start: date, end: date) -> dict[str, Any]:
    return {
        "start": datetime.combine(start, time.min, tzinfo=UTC),
        "end": datetime.combine(end + timedelta(days=1), time.min, tzinfo=UTC),
        "from_date": start,
        "to_date": end,
    }


def _zeros(keys: Sequence[str]) -> dict[str, int]:
    return dict.fromkeys(keys, 0)


MEETINGS = sa.text(
    """
    SELECT kind, count(*) FROM etn_meetings
    WHERE municipality = :m AND scheduled_for >= :start AND scheduled_for < :end
      AND (held OR scheduled_for <= now())
    GROUP BY kind
    """
)
ORDERS = sa.text(
    """
    SELECT kind, count(*) FROM protection_orders
    WHERE municipality = :m AND issued_at >= :start AND issued_at < :end AND status NOT IN ('requested', 'rejected')
    GROUP BY kind
    """
)
PLACEMENTS = sa.text(
    """
    SELECT count(*), coalesce(sum(children), 0) FROM placements
    WHERE municipality = :m AND started_at >= :start AND started_at < :end
    """
)
RENT_BONUS = sa.text(
    """
    SELECT count(DISTINCT r.case_id), coalesce(sum(r.monthly_amount), 0)
    FROM rent_bonuses r
    CROSS JOIN LATERAL generate_series(
        r.start_month::timestamp, r.start_month::timestamp + (r.months - 1) * interval '1 month', interval '1 month'
    ) AS m(month)
    WHERE r.municipality = :m AND r.approved AND r.months > 0 AND r.start_month IS NOT NULL
      AND m.month >= date_trunc('month', CAST(:from_date AS date)) AND m.month <= CAST(:to_date AS date)
    """
)
RENT_PAID = sa.text(
    """
    SELECT coalesce(sum(amount), 0) FROM rent_bonus_payments
    WHERE municipality = :m AND paid_at IS NOT NULL
      AND month >= date_trunc('month', CAST(:from_date AS date)) AND month <= CAST(:to_date AS date)
    """
)


# Cases transferred in: by the date the receiving coordinator accepted them (CONTRACT §10).
TRANSFERRED_IN = sa.text(
    """
    SELECT count(*) FROM case_transfers
    WHERE to_municipality = :m AND accepted_at >= :start AND accepted_at < :end
    """
)

@functools.cache
def _national(sql: str) -> sa.TextClause:
    """The same statement over every municipality: its `[alias.]municipality = :m` condition dropped."""
    return sa.text(re.sub(r"\b(?:\w+\.)?(?:reported_|to_)?municipality = :m\b", "true", sql))


def _scoped(statement: sa.TextClause, municipality: str) -> sa.TextClause:
    return _national(statement.text) if municipality == NATIONAL else statement


def _case_counts(cells: Counter[tuple[str, str, str]]) -> dict[str, Any]:
    """`cases` of the summary, and the count per municipality, from the cells (rollups.case_cells)."""
    by: dict[str, dict[str, int]] = {
        "by_sex": _zeros(SEXES),
        "by_age_group": _zeros(AGE_GROUPS),
        "by_ethnicity": {},
        "by_risk_level": _zeros(RISK_LEVELS),
        "by_source": {},
        "by_violence_type": {},
    }
    totals = dict.fromkeys(("total", "with_children", "closed", "repeat", "transferred_out"), 0)
    per_municipality: dict[str, int] = {}
    for (municipality, dimension, value), n in sorted(cells.items()):
        if dimension in totals:
            totals[dimension] += n
            if dimension == "total":
                per_municipality[municipality] = n
        else:
            breakdown = by[f"by_{dimension}"]
            breakdown[value] = breakdown.get(value, 0) + n
    # `transferred_out`: reported here in the period and since moved to another municipality (still counted).
    cases = {"total": totals["total"], **by, "with_children": totals["with_children"], "closed": totals["closed"],
             "repeat": totals["repeat"], "transferred_out": totals["transferred_out"]}
    return {"cases": cases, "by_municipality": per_municipality}


async def _referral_counts(
    session: AsyncSession, q: Any, period: rollups.Period, params: dict[str, Any]
) -> dict[str, Any]:
    cells, breaches = await rollups.referral_cells(session, q, period, params)
    by_kind: dict[str, int] = {}
    by_status: dict[str, int] = {}
    for (kind, status), n in sorted(cells.items()):
        by_kind[kind] = by_kind.get(kind, 0) + n
        by_status[status] = by_status.get(status, 0) + n
    median = await rollups.median_ack_hours(session, q, period, params)
    return {
        "total": sum(by_kind.values()),
        "by_member_kind": by_kind,
        "by_status": by_status,
        "median_hours_to_acknowledge": round(float(median), 2) if median is not None else None,
        "sla_breaches": breaches,
    }


async def summary(
    session: AsyncSession,
    municipality: str,
    start: date,
    end: date,
    *,
    min_cell: int | None = None,
    use_rollups: bool = True,
) -> ReportSummary:
    """The summary of one municipality, or of all of them (`NATIONAL`, with `by_municipality`). With
    `min_cell` (the auditor's view) small cells are suppressed (services/referral/disclosure.py). Whole
    months come from the rollups (services/referral/rollups.py); `use_rollups=False` counts every row
    (the same answer, slower: tests compare the two)."""
    params = {"m": municipality, **_bounds(start, end)}
    q = functools.partial(_scoped, municipality=municipality)
    period = rollups.split(start, end, rollups=use_rollups)
    counted = _case_counts(await rollups.case_cells(session, q, period, params))
    counted["cases"]["transferred_in"] = int((await session.execute(q(TRANSFERRED_IN), params)).scalar() or 0)
    referrals = await _referral_counts(session, q, period, params)
    meetings: dict[str, int] = dict((await session.execute(q(MEETINGS), params)).tuples().all())
    orders: dict[str, int] = dict((await session.execute(q(ORDERS), params)).tuples().all())
    placements, children_placed = (await session.execute(q(PLACEMENTS), params)).one()
    beneficiaries, approved = (await session.execute(q(RENT_BONUS), params)).one()
    paid = (await session.execute(q(RENT_PAID), params)).scalar() or Decimal(0)

    body: dict[str, Any] = {
        "municipality": municipality,
        "from": start,
        "to": end,
        "cases": counted["cases"],
        "referrals": referrals,
        "etn_meetings": int(meetings.get("etn", 0)),
        "steering_committee_meetings": int(meetings.get("steering_committee", 0)),
        "protection_orders": {
            "immediate": int(orders.get("immediate", 0)),
            "protection": int(orders.get("protection", 0)),
        },
        "shelter": {"placements": int(placements), "children_placed": int(children_placed)},
        "rent_bonus": {
            "beneficiaries": int(beneficiaries),
            "approved_amount": str(Decimal(approved).quantize(Decimal("0.01"))),
            "paid_amount": str(Decimal(paid).quantize(Decimal("0.01"))),
        },
    }
    if municipality == NATIONAL:
        body["by_municipality"] = counted["by_municipality"]
    if min_cell is not None:
        body = disclosure.suppress_summary(body, min_cell)
    return ReportSummary.model_validate(body)


async def dashboard(session: AsyncSession, municipality: str, expiry_days: int) -> Dashboard:
    params = {"m": municipality, "horizon": datetime.now(UTC) + timedelta(days=expiry_days)}
    risk = _zeros(RISK_LEVELS)
    for level, n in await session.execute(
        sa.text("SELECT risk_level, count(*) FROM case_facts WHERE municipality = :m AND status = 'open' GROUP BY 1"),
        params,
    ):
        risk[level] = int(n)

    async def listing(count_sql: str, items_sql: str) -> dict[str, Any]:
        count = (await session.execute(sa.text(count_sql), params)).scalar() or 0
        rows = (await session.execute(sa.text(items_sql + f" LIMIT {ITEMS}"), params)).mappings().all()
        return {"count": int(count), "items": [{k: _plain(v) for k, v in row.items()} for row in rows]}

    overdue_referrals = "FROM referrals WHERE municipality = :m AND status = 'pending' AND ack_due_at < now()"
    overdue_actions = "FROM plan_actions WHERE municipality = :m AND status = 'open' AND due_date < CURRENT_DATE"
    expiring = (
        "FROM protection_orders WHERE municipality = :m AND status = 'issued' "
        "AND expires_at >= now() AND expires_at <= :horizon"
    )
    pending = await session.execute(
        sa.text("SELECT coalesce(sum(pending_duplicates), 0) FROM case_facts WHERE municipality = :m"), params
    )
    return Dashboard(
        municipality=municipality,
        open_cases_by_risk_level=risk,
        possible_duplicates_awaiting_decision={"count": int(pending.scalar() or 0)},
        overdue_referrals=await listing(
            f"SELECT count(*) {overdue_referrals}",
            "SELECT id AS referral_id, case_id, case_number, to_member_id, to_member_kind, urgency, ack_due_at "
            f"{overdue_referrals} ORDER BY ack_due_at",
        ),
        overdue_plan_actions=await listing(
            f"SELECT count(*) {overdue_actions}",
            f"SELECT id AS action_id, case_id, case_number, responsible_member_id, due_date {overdue_actions} "
            "ORDER BY due_date",
        ),
        protection_orders_expiring=await listing(
            f"SELECT count(*) {expiring}",
            f"SELECT order_id, case_id, case_number, kind, expires_at {expiring} ORDER BY expires_at",
        ),
    )


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if value is not None and not isinstance(value, str | int | float | bool):
        return str(value)
    return value


CSV_COLUMNS = (
    "case_number",
    "reported_at",
    "status",
    "closed_at",
    "risk_level",
    "sex",
    "age_group",
    "ethnicity",
    "disability",
    "violence_types",
    "perpetrator_relationship",
    "source",
    "needs",
    "children_count",
    "referrals",
    "referrals_completed",
    "referrals_declined",
    "sla_breaches",
    "referral_outcomes",
)
CASE_ROWS = sa.text(
    """
    SELECT coalesce(t.from_case_number, c.case_number) AS case_number, c.reported_at, c.status, c.closed_at,
           c.risk_level, c.sex, c.age_group, c.ethnicity, c.reported_municipality AS municipality, c.disability,
           c.violence_types, c.perpetrator_relationship, c.source, c.needs,
           c.children_count,
           coalesce(r.n, 0) AS referrals, coalesce(r.completed, 0) AS referrals_completed,
           coalesce(r.declined, 0) AS referrals_declined, coalesce(r.breaches, 0) AS sla_breaches,
           coalesce(r.outcomes, '') AS referral_outcomes
    FROM case_facts c
    LEFT JOIN LATERAL (
        SELECT count(*) AS n,
               count(*) FILTER (WHERE status = 'completed') AS completed,
               count(*) FILTER (WHERE status = 'declined') AS declined,
               count(*) FILTER (WHERE sla_breached_at IS NOT NULL) AS breaches,
               string_agg(to_member_kind || ':' || status, ';' ORDER BY created_at, id) AS outcomes
        FROM referrals WHERE referrals.case_id = c.case_id
          AND referrals.municipality = :m  -- a moved case: this municipality's own referrals only
    ) r ON true
    LEFT JOIN LATERAL (  -- a transferred case keeps the number it was reported under (CONTRACT §10)
        SELECT from_case_number FROM case_transfers
        WHERE case_transfers.case_id = c.case_id AND case_transfers.from_municipality = c.reported_municipality
        ORDER BY accepted_at LIMIT 1
    ) t ON true
    WHERE c.reported_municipality = :m AND c.reported_at >= :start AND c.reported_at < :end
    ORDER BY c.reported_at, c.case_number
    """
)


async def case_rows(session: AsyncSession, municipality: str, start: date, end: date) -> list[sa.Row[Any]]:
    statement = _scoped(CASE_ROWS, municipality)
    return list((await session.execute(statement, {"m": municipality, **_bounds(start, end)})).all())


# The auditor's export names the municipality (a national export spans them all), generalised with the rest.
AUDITOR_CSV_COLUMNS = ("municipality", *CSV_COLUMNS)


def auditor_rows(rows: Sequence[sa.Row[Any]], min_cell: int) -> list[dict[str, Any]]:
    """The rows k-anonymised over (municipality, sex, age group, ethnicity) (disclosure.generalise_rows).
    Where the municipality is generalised, so is the case number (its prefix names the municipality)."""
    out = disclosure.generalise_rows([dict(row._mapping) for row in rows], min_cell)
    for row in out:
        if row["municipality"] == disclosure.SUPPRESSED:
            row["case_number"] = disclosure.SUPPRESSED
    return out


def to_csv(rows: Sequence[Any], columns: Sequence[str] = CSV_COLUMNS) -> Iterator[str]:
    """The pseudonymous export: coded facts only; lists joined with `;`; outcomes as `kind:status`."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    for index, row in enumerate(rows, start=1):
        values = []
        for column in columns:
            value = row[column] if isinstance(row, dict) else getattr(row, column)
            if isinstance(value, list):
                value = ";".join(value)
            elif isinstance(value, datetime):
                value = value.astimezone(UTC).isoformat()
            values.append("" if value is None else value)
        writer.writerow(values)
        if index % 1000 == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()

"""The shelter rules: beds, ETags, rent-bonus months and budgets. Pure; no I/O."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

from shared import etags
from shared.etags import weak_etag

MAX_MONTHS = 60
ZERO = Decimal("0.00")

# Discharge reasons that may travel in `placement.ended`; any other text stays in this database
# and the event says "other" (free text could carry a narrative, §9).
DISCHARGE_CODES = frozenset(
    {"moved_on", "returned_home", "transferred", "independent_housing", "left_voluntarily", "rules_breach", "other"}
)


def event_reason(reason: str) -> str:
    code = reason.strip().lower()
    return code if code in DISCHARGE_CODES else "other"


# --- optimistic concurrency -------------------------------------------------------------------


def etag(version: int) -> str:
    return weak_etag(str(version))


def if_match_allows(header: str, version: int) -> bool:
    """True when an If-Match header names the current version (weak comparison, RFC 9110 §13.1.1)."""
    return etags.if_match_allows(header, str(version))


# --- rent bonus -------------------------------------------------------------------------------


def parse_month(value: str) -> date:
    """`YYYY-MM` → the first day of that month; ValueError otherwise."""
    match = re.fullmatch(r"(\d{4})-(\d{2})", value)
    if not match:
        raise ValueError("a month is YYYY-MM")
    year, month = int(match.group(1)), int(match.group(2))
    if not (2000 <= year <= 2100 and 1 <= month <= 12):
        raise ValueError("a month is YYYY-MM between 2000 and 2100")
    return date(year, month, 1)


def format_month(value: date) -> str:
    return f"{value.year:04d}-{value.month:02d}"


def add_months(start: date, count: int) -> date:
    index = start.year * 12 + (start.month - 1) + count
    return date(index // 12, index % 12 + 1, 1)


def payment_months(start: date, months: int) -> list[date]:
    """One payment per month, starting with `start`."""
    return [add_months(start, i) for i in range(months)]


def commitment_by_year(start: date, months: int, monthly_amount: Decimal) -> dict[int, Decimal]:
    """What an approval commits against each calendar year's budget.

    Rule: each monthly payment counts against the budget of the calendar year it pays for, so an
    approval from 2026-11 for 4 months commits 2 months against 2026 and 2 against 2027; each of
    those years needs a budget with room for its share.
    """
    per_year: dict[int, Decimal] = defaultdict(lambda: ZERO)
    for month in payment_months(start, months):
        per_year[month.year] += monthly_amount
    return dict(sorted(per_year.items()))


def ending_notice_on(last_month: date, notice_days: int) -> date:
    """The day `rent_bonus.ending` is due: `notice_days` before the last paid month starts."""
    return last_month - timedelta(days=notice_days)


def cents(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"))


def remaining(amount: Decimal, committed: Decimal) -> Decimal:
    return amount - committed

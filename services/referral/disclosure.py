"""Statistical disclosure control for readers outside the municipality (DOMAIN.md "Small numbers identify").

Pure functions, no I/O: the report queries give exact counts, these decide what the auditor may see.

Summary cells (CONTRACT.md §10): a count from 1 to k - 1 is suppressed (`None`, its path listed). In a
breakdown, suppressing one cell alone is pointless, since it equals the published total minus the rest;
so more cells go (secondary suppression), deterministically:

1. primary: every cell with 1 <= n < k;
2. while fewer than two cells are suppressed, or the suppressed cells add up to less than k (their sum,
   total minus the rest, would itself be a small number and could pin each of them down, e.g. 1 + 1),
   the smallest other non-zero cell (ties: the first key) is suppressed too;
3. if the suppressed cells still add up to less than k (the whole breakdown is small: nothing left to
   hide them among), every cell of the breakdown is suppressed, zeros included.

Zeros are published otherwise (a 0 identifies nobody). Totals stay: the caller publishes them as they are.

CSV rows: k-anonymity over the quasi-identifiers (municipality, sex, age group, ethnicity) by local
generalisation in a fixed order: the rows of every equivalence class smaller than k first have their
ethnicity replaced by `suppressed`, then (those still in a class smaller than k) the age group, then the
sex, then the municipality; a row still in a small class after that has all four suppressed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

SUPPRESSED = "suppressed"
QUASI_IDENTIFIERS = ("municipality", "sex", "age_group", "ethnicity")
GENERALISATION_ORDER = ("ethnicity", "age_group", "sex", "municipality")


def small(n: int | None, k: int) -> bool:
    """A count that identifies: 1 <= n < k."""
    return n is not None and 0 < n < k


def suppressed_cells(cells: Mapping[str, int], k: int) -> set[str]:
    """The keys of one breakdown to hide (primary and secondary suppression, module docstring)."""
    hidden = {key for key, n in cells.items() if small(n, k)}
    if not hidden:
        return hidden
    order = list(cells)

    def hidden_sum() -> int:
        return sum(cells[key] for key in hidden)

    while len(hidden) < 2 or hidden_sum() < k:
        others = [key for key in order if key not in hidden and cells[key] > 0]
        if not others:
            break
        hidden.add(min(others, key=lambda key: (cells[key], order.index(key))))
    if hidden_sum() < k:
        hidden = set(cells)
    return hidden


def suppress_breakdown(cells: Mapping[str, int], k: int, path: str) -> tuple[dict[str, int | None], list[str]]:
    """The breakdown as the auditor sees it, and the paths (`path.key`) of what was hidden, in key order."""
    hidden = suppressed_cells(cells, k)
    shown: dict[str, int | None] = {key: (None if key in hidden else n) for key, n in cells.items()}
    return shown, [f"{path}.{key}" for key in cells if key in hidden]


def suppress_count(n: int, k: int, path: str) -> tuple[int | None, list[str]]:
    """A single count of people with no published complement (e.g. cases with children)."""
    return (None, [path]) if small(n, k) else (n, [])


def generalise_rows(rows: Sequence[Mapping[str, Any]], k: int) -> list[dict[str, Any]]:
    """Rows (dicts with the QUASI_IDENTIFIERS among their keys) with quasi-identifiers generalised so that
    every combination shown occurs at least k times; the rest reads `suppressed`. Order is kept."""
    out = [dict(row) for row in rows]

    def key(row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(row[q] for q in QUASI_IDENTIFIERS)

    for column in GENERALISATION_ORDER:
        sizes = Counter(key(row) for row in out)
        small_rows = [row for row in out if sizes[key(row)] < k]
        if not small_rows:
            return out
        for row in small_rows:
            row[column] = SUPPRESSED
    return out


# The summary's breakdowns (dicts of counts of cases or referrals) and single counts of people.
SUMMARY_BREAKDOWNS = (
    ("cases", "by_sex"),
    ("cases", "by_age_group"),
    ("cases", "by_ethnicity"),
    ("cases", "by_violence_type"),
    ("cases", "by_risk_level"),
    ("cases", "by_source"),
    ("referrals", "by_member_kind"),
    ("referrals", "by_status"),
    ("protection_orders",),
    ("by_municipality",),
)
SUMMARY_COUNTS = (
    ("cases", "with_children"),
    ("cases", "closed"),
    ("cases", "repeat"),
    ("cases", "transferred_in"),
    ("cases", "transferred_out"),
    ("referrals", "sla_breaches"),
    ("shelter", "placements"),
    ("shelter", "children_placed"),
    ("rent_bonus", "beneficiaries"),
)


def _parent(body: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = body
    for part in path[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def suppress_summary(body: Mapping[str, Any], k: int) -> dict[str, Any]:
    """The summary report (DOMAIN.md "Reports", as a JSON-ready dict) as the auditor sees it: small cells
    `None`, their paths in `suppressed`. Totals, meetings and the median stay. Where the rent-bonus
    beneficiaries are few, the amounts (one woman's bonus) are hidden with them."""
    out: dict[str, Any] = {key: (dict(value) if isinstance(value, dict) else value) for key, value in body.items()}
    suppressed: list[str] = []
    for path in SUMMARY_BREAKDOWNS:
        parent = _parent(out, path)
        if parent is None or not isinstance(parent.get(path[-1]), dict):
            continue
        shown, hidden = suppress_breakdown(parent[path[-1]], k, ".".join(path))
        parent[path[-1]] = shown
        suppressed += hidden
    for path in SUMMARY_COUNTS:
        parent = _parent(out, path)
        if parent is None or not isinstance(parent.get(path[-1]), int):
            continue
        parent[path[-1]], hidden = suppress_count(parent[path[-1]], k, ".".join(path))
        suppressed += hidden
    if "rent_bonus.beneficiaries" in suppressed:
        for amount in ("approved_amount", "paid_amount"):
            out["rent_bonus"][amount] = None
            suppressed.append(f"rent_bonus.{amount}")
    out["suppressed"] = suppressed
    return out

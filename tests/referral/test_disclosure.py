"""Small-cell suppression and CSV k-anonymity as pure functions (services/referral/disclosure.py), as tables."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from services.referral import disclosure

K = 5

# (what, cells, expected hidden keys)
BREAKDOWNS: list[tuple[str, dict[str, int], set[str]]] = [
    ("nothing small", {"albanian": 40, "roma": 12, "egyptian": 0}, set()),
    ("zero cells only", {"female": 0, "male": 0, "other": 0}, set()),
    # One small cell: it equals total minus the rest, so the smallest other non-zero cell goes too.
    ("single small cell", {"albanian": 40, "roma": 12, "egyptian": 1, "greek": 0}, {"egyptian", "roma"}),
    ("single small cell, tie on the smallest other", {"a": 3, "b": 9, "c": 9}, {"a", "b"}),
    # Two small cells hide each other only if their sum (total minus the rest) is not small itself.
    ("two small cells, sum at least k", {"albanian": 40, "roma": 3, "egyptian": 2}, {"roma", "egyptian"}),
    ("two small cells, sum below k", {"albanian": 40, "roma": 1, "egyptian": 1}, {"roma", "egyptian", "albanian"}),
    # The small cell is the whole total minus zeros: nothing non-zero to hide it among, so every cell goes.
    ("small cell equal to total minus the rest", {"female": 3, "male": 0, "other": 0}, {"female", "male", "other"}),
    ("all cells small", {"low": 1, "medium": 2, "high": 1}, {"low", "medium", "high"}),
    ("all cells small, sum at least k", {"low": 4, "medium": 2, "high": 3}, {"low", "medium", "high"}),
    ("a single cell, small", {"egyptian": 2}, {"egyptian"}),
    ("a single cell, not small", {"egyptian": 7}, set()),
]


@pytest.mark.parametrize(("what", "cells", "hidden"), BREAKDOWNS, ids=[b[0] for b in BREAKDOWNS])
def test_suppressed_cells(what: str, cells: dict[str, int], hidden: set[str]) -> None:
    assert disclosure.suppressed_cells(cells, K) == hidden
    shown, paths = disclosure.suppress_breakdown(cells, K, "cases.by_x")
    assert paths == [f"cases.by_x.{key}" for key in cells if key in hidden]
    assert {key for key, n in shown.items() if n is None} == hidden
    assert all(shown[key] == n for key, n in cells.items() if key not in hidden)
    # Whatever is shown: no small count, and no single hidden cell recoverable from the total.
    assert not any(disclosure.small(n, K) for n in shown.values())
    if hidden:
        assert len(hidden) >= 2 or hidden == set(cells)
        assert sum(cells[key] for key in hidden) >= K or hidden == set(cells)


@pytest.mark.parametrize(
    ("k", "n", "hidden"), [(5, 0, False), (5, 1, True), (5, 4, True), (5, 5, False), (10, 9, True)]
)
def test_small_is_one_to_k_minus_one(k: int, n: int, hidden: bool) -> None:
    assert disclosure.small(n, k) is hidden
    assert disclosure.suppress_count(n, k, "cases.closed") == ((None, ["cases.closed"]) if hidden else (n, []))


def summary(**cases: Any) -> dict[str, Any]:
    return {
        "municipality": "*",
        "cases": {
            "total": 47,
            "by_sex": {"female": 45, "male": 2, "other": 0},
            "by_ethnicity": {"albanian": 40, "roma": 6, "egyptian": 1},
            "with_children": 3,
            "closed": 20,
            **cases,
        },
        "referrals": {"total": 10, "by_status": {"pending": 10}, "median_hours_to_acknowledge": 1.5, "sla_breaches": 0},
        "etn_meetings": 2,
        "protection_orders": {"immediate": 1, "protection": 9},
        "shelter": {"placements": 1, "children_placed": 0},
        "rent_bonus": {"beneficiaries": 1, "approved_amount": "15000.00", "paid_amount": "0.00"},
        "by_municipality": {"elbasan": 44, "korce": 3},
    }


def test_suppress_summary_paths_totals_and_input_untouched() -> None:
    body = summary()
    seen = disclosure.suppress_summary(body, K)
    assert body["cases"]["by_ethnicity"]["egyptian"] == 1 and "suppressed" not in body  # the input is not changed
    c = seen["cases"]
    assert c["total"] == 47 and c["closed"] == 20 and seen["referrals"]["total"] == 10  # totals stay
    assert c["by_sex"] == {"female": None, "male": None, "other": 0}
    assert c["by_ethnicity"] == {"albanian": 40, "roma": None, "egyptian": None}
    assert c["with_children"] is None
    assert seen["by_municipality"] == {"elbasan": None, "korce": None}
    assert seen["protection_orders"] == {"immediate": None, "protection": None}
    assert seen["rent_bonus"] == {"beneficiaries": None, "approved_amount": None, "paid_amount": None}
    assert seen["etn_meetings"] == 2 and seen["referrals"]["median_hours_to_acknowledge"] == 1.5
    assert seen["suppressed"] == [
        "cases.by_sex.female",
        "cases.by_sex.male",
        "cases.by_ethnicity.roma",
        "cases.by_ethnicity.egyptian",
        "protection_orders.immediate",
        "protection_orders.protection",
        "by_municipality.elbasan",
        "by_municipality.korce",
        "cases.with_children",
        "shelter.placements",
        "rent_bonus.beneficiaries",
        "rent_bonus.approved_amount",
        "rent_bonus.paid_amount",
    ]


def rows(spec: list[tuple[str, str, str, str, int]]) -> list[dict[str, Any]]:
    out = []
    for municipality, sex, age, ethnicity, count in spec:
        out += [
            {"municipality": municipality, "sex": sex, "age_group": age, "ethnicity": ethnicity, "risk": "low"}
        ] * count
    return out


S = disclosure.SUPPRESSED
# (what, rows, expected (municipality, sex, age_group, ethnicity) → count after generalisation)
GENERALISATIONS: list[tuple[str, list[tuple[str, str, str, str, int]], dict[tuple[str, ...], int]]] = [
    ("already k-anonymous", [("e", "female", "25-39", "roma", 5)], {("e", "female", "25-39", "roma"): 5}),
    (
        "ethnicity generalised first",
        [("e", "female", "25-39", "roma", 5), ("e", "female", "25-39", "egyptian", 1),
         ("e", "female", "25-39", "greek", 4)],
        {("e", "female", "25-39", "roma"): 5, ("e", "female", "25-39", S): 5},
    ),
    (
        "then the age group",
        [("e", "female", "25-39", "roma", 5), ("e", "female", "40-59", "egyptian", 2),
         ("e", "female", "60+", "greek", 3)],
        {("e", "female", "25-39", "roma"): 5, ("e", "female", S, S): 5},
    ),
    (
        "then the sex, then the municipality",
        [("e", "female", "25-39", "roma", 5), ("e", "male", "40-59", "egyptian", 2),
         ("k", "other", "60+", "greek", 3)],
        {("e", "female", "25-39", "roma"): 5, (S, S, S, S): 5},
    ),
    ("fully suppressed when too few in all", [("e", "female", "25-39", "roma", 2)], {(S, S, S, S): 2}),
    ("no rows", [], {}),
]  # fmt: skip


@pytest.mark.parametrize(("what", "spec", "classes"), GENERALISATIONS, ids=[g[0] for g in GENERALISATIONS])
def test_generalise_rows(what: str, spec: list[tuple[str, str, str, str, int]], classes: dict[Any, int]) -> None:
    given = rows(spec)
    out = disclosure.generalise_rows(given, K)
    assert len(out) == len(given) and all(row["risk"] == "low" for row in out)
    counted = Counter(tuple(row[q] for q in disclosure.QUASI_IDENTIFIERS) for row in out)
    assert dict(counted) == classes
    # Every combination shown occurs at least k times, except the fully suppressed one.
    assert all(n >= K for key, n in counted.items() if key != (S, S, S, S))
    assert given == rows(spec)  # the input is not changed

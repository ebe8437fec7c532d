"""The national view (CONTRACT.md §10) on the real stack: the auditor's summary over every municipality with
small cells suppressed, the auditor's k-anonymous CSV, and the coordinator's exact figures beside them."""

from __future__ import annotations

import csv
import io
from collections import Counter
from typing import Any

from aiokafka import AIOKafkaProducer

from tests.referral.helpers import produce, reported
from tests.support import Stack, new_municipality, wait_for

# A period no other test reports in: the national sums see only the cases seeded here.
FROM, TO = "2019-03-01", "2019-03-31"
S = "suppressed"


def at(day: int) -> str:
    return f"2019-03-{day:02d}T10:00:00+00:00"


async def seed(stack: Stack, producer: AIOKafkaProducer) -> tuple[str, str, str]:
    """Three municipalities: big (12 cases, 2 of them Egyptian), small (3 Roma), middle (7, one man of 60+)."""
    big, small, middle = new_municipality(), new_municipality(), new_municipality()
    spec: list[tuple[str, str, str, str, int]] = [
        (big, "female", "25-39", "albanian", 10),
        (big, "female", "25-39", "egyptian", 2),
        (small, "female", "40-59", "roma", 3),
        (middle, "female", "25-39", "albanian", 6),
        (middle, "male", "60+", "albanian", 1),
    ]
    day = 1
    for municipality, sex, age, ethnicity, count in spec:
        for _ in range(count):
            data = reported(
                municipality, reported_at=at(day % 28 + 1), sex=sex, age_group=age, ethnicity=ethnicity,
                risk_level="low", violence_types=["physical"], consent_share_with=[],
            )  # fmt: skip
            await produce(producer, stack.settings, "case.reported", municipality, data)
            day += 1
    return big, small, middle


async def summary(stack: Stack, headers: dict[str, str], municipality: str | None) -> Any:
    params = {"from": FROM, "to": TO, **({"municipality": municipality} if municipality else {})}
    return await stack.referral.get("/v1/reports/summary", params=params, headers=headers)


async def test_national_summary_and_csv_suppressed_for_the_auditor_exact_for_the_coordinator(
    stack: Stack, producer: AIOKafkaProducer
) -> None:
    big, small, middle = await seed(stack, producer)
    auditor = stack.auth("auditor", "*")

    async def projected() -> dict[str, Any] | None:
        response = await summary(stack, auditor, "*")
        assert response.status_code == 200, response.text
        body = dict(response.json())
        return body if body["cases"]["total"] == 22 else None

    national = await wait_for(projected, timeout=20, what="the projection to hold the 22 seeded cases")
    c = national["cases"]
    assert national["municipality"] == "*"
    # Totals stay; by_municipality: the small one (3) hidden and the smallest other (7) beside it.
    assert national["by_municipality"] == {big: 12, small: None, middle: None}
    # Two small cells (2 + 3 >= 5) hide each other; one small cell (1 man) takes the smallest other along.
    assert c["by_ethnicity"] == {"albanian": 17, "egyptian": None, "roma": None}
    assert c["by_sex"] == {"female": None, "male": None, "other": 0}
    # Two small cells adding up to a small number (3 + 1) would pin each other down: the next goes too.
    assert c["by_age_group"] == {
        "0-11": 0, "12-17": 0, "18-24": 0, "25-39": None, "40-59": None, "60+": None, "unknown": 0,
    }  # fmt: skip
    assert c["by_risk_level"] == {"low": 22, "medium": 0, "high": 0}
    assert set(national["suppressed"]) == {
        f"by_municipality.{small}",
        f"by_municipality.{middle}",
        "cases.by_ethnicity.egyptian",
        "cases.by_ethnicity.roma",
        "cases.by_sex.female",
        "cases.by_sex.male",
        "cases.by_age_group.25-39",
        "cases.by_age_group.40-59",
        "cases.by_age_group.60+",
    }
    assert len(national["suppressed"]) == len(set(national["suppressed"]))
    # No small count anywhere in what the auditor reads.
    for section in ("cases", "referrals"):
        for key, value in national[section].items():
            if isinstance(value, dict):
                assert not any(isinstance(n, int) and 0 < n < 5 for n in value.values()), (section, key)

    # One municipality for the auditor: suppressed too (2 Egyptian women, and the 10 beside them).
    one = (await summary(stack, auditor, big)).json()
    assert one["by_municipality"] is None and one["cases"]["total"] == 12
    assert one["cases"]["by_ethnicity"] == {"albanian": None, "egyptian": None}
    assert set(one["suppressed"]) == {"cases.by_ethnicity.albanian", "cases.by_ethnicity.egyptian"}
    # An auditor working for one municipality has no national view.
    assert (await summary(stack, stack.auth("auditor", big), "*")).status_code == 404
    assert (await summary(stack, stack.auth("auditor", big), None)).json()["suppressed"]

    # The coordinator: her own exact figures, nothing suppressed, no national view.
    coordinator = stack.auth("coordinator", big)
    own = (await summary(stack, coordinator, None)).json()
    assert own["cases"]["by_ethnicity"] == {"albanian": 10, "egyptian": 2}
    assert own["suppressed"] == [] and own["by_municipality"] is None
    assert (await summary(stack, coordinator, "*")).status_code == 404

    # The auditor's national CSV: k-anonymous over (municipality, sex, age group, ethnicity).
    export = await stack.referral.get(
        "/v1/reports/cases.csv", params={"from": FROM, "to": TO, "municipality": "*"}, headers=auditor
    )
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert len(rows) == 22 and next(iter(rows[0])) == "municipality"
    classes = Counter((r["municipality"], r["sex"], r["age_group"], r["ethnicity"]) for r in rows)
    assert dict(classes) == {
        (big, "female", "25-39", "albanian"): 10,
        (middle, "female", "25-39", "albanian"): 6,
        (S, S, S, S): 6,
    }
    for row in rows:
        if row["municipality"] == S:
            assert row["case_number"] == S  # its prefix would name the municipality
        else:
            assert row["case_number"] and row["risk_level"] == "low"
    # For one municipality the auditor's CSV is generalised the same way.
    export = await stack.referral.get(
        "/v1/reports/cases.csv", params={"from": FROM, "to": TO, "municipality": small}, headers=auditor
    )
    assert {(r["municipality"], r["ethnicity"]) for r in csv.DictReader(io.StringIO(export.text))} == {(S, S)}
    # The coordinator's CSV stays exact (and keeps its columns).
    export = await stack.referral.get("/v1/reports/cases.csv", params={"from": FROM, "to": TO}, headers=coordinator)
    exact = list(csv.DictReader(io.StringIO(export.text)))
    assert "municipality" not in exact[0]
    assert Counter(r["ethnicity"] for r in exact) == {"albanian": 10, "egyptian": 2}

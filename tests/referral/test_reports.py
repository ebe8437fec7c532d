"""Dashboard, summary report and the pseudonymous CSV export, from referral's own projection."""

from __future__ import annotations

import csv
import io
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer

from tests.referral.helpers import SHELTER_TOPIC, add_member, produce, reported
from tests.support import Stack, new_municipality, wait_for

FROM, TO = "2026-01-01", "2026-06-30"


def at(day: str) -> str:
    return f"{day}T10:00:00+00:00"


async def seed(stack: Stack, producer: AIOKafkaProducer, m: str) -> list[dict[str, Any]]:
    await add_member(stack, m, "social_services")
    await add_member(stack, m, "child_protection")
    cases = [
        reported(m, reported_at=at("2026-02-01"), sex="female", age_group="25-39", ethnicity="roma",
                 violence_types=["physical", "psychological"], risk_level="high", children_count=2, source="police"),
        reported(m, reported_at=at("2026-03-15"), sex="male", age_group=None, ethnicity=None,
                 violence_types=["economic"], risk_level="low", source="self_referral"),
        reported(m, reported_at=at("2026-06-30"), sex=None, age_group="60+", ethnicity="egyptian",
                 violence_types=[], risk_level="medium", source="health"),
        reported(m, reported_at=at("2026-07-01"), risk_level="high"),  # outside the period
    ]  # fmt: skip
    for data in cases:
        await produce(producer, stack.settings, "case.reported", m, data)
    first, second = cases[0], cases[1]
    await produce(
        producer,
        stack.settings,
        "case.closed",
        m,
        {"case_id": second["case_id"], "case_number": second["case_number"], "closed_at": at("2026-05-01")},
    )
    soon = (datetime.now(UTC) + timedelta(days=5)).isoformat()
    for kind, issued in (("immediate", "2026-02-02"), ("protection", "2026-02-20"), ("protection", "2025-12-01")):
        await produce(
            producer,
            stack.settings,
            "case.protection_order_recorded",
            m,
            {
                "case_id": first["case_id"],
                "case_number": first["case_number"],
                "order_id": str(uuid.uuid4()),
                "kind": kind,
                "status": "issued",
                "issued_at": at(issued),
                "expires_at": soon,
                "court": "Elbasan",
            },
        )
    shelter_id = str(uuid.uuid4())
    await produce(
        producer,
        stack.settings,
        "placement.started",
        m,
        {
            "placement_id": str(uuid.uuid4()),
            "case_id": first["case_id"],
            "case_number": first["case_number"],
            "shelter_id": shelter_id,
            "adults": 1,
            "children": 2,
            "planned_until": "2026-03-01",
            "started_at": at("2026-02-02"),
        },
        topic=SHELTER_TOPIC,
    )
    application = str(uuid.uuid4())
    await produce(
        producer,
        stack.settings,
        "rent_bonus.decided",
        m,
        {
            "application_id": application,
            "case_id": first["case_id"],
            "case_number": first["case_number"],
            "approved": True,
            "monthly_amount": "15000.00",
            "start_month": "2026-05",
            "months": 6,
            "total": "90000.00",
        },
        topic=SHELTER_TOPIC,
    )
    await produce(
        producer,
        stack.settings,
        "rent_bonus.payment_paid",
        m,
        {
            "application_id": application,
            "payment_id": str(uuid.uuid4()),
            "case_id": first["case_id"],
            "case_number": first["case_number"],
            "month": "2026-05",
            "amount": "15000.00",
        },
        topic=SHELTER_TOPIC,
    )
    # fmt: on
    return cases


async def test_summary_counts_by_the_domain_rules_and_breakdowns_sum_to_totals(
    stack: Stack, producer: AIOKafkaProducer
) -> None:
    m = new_municipality()
    cases = await seed(stack, producer, m)
    coordinator = stack.auth("coordinator", m)
    for kind, day in (("etn", "2026-02-10"), ("etn", "2026-03-10"), ("steering_committee", "2026-04-01"),
                      ("etn", "2026-08-01")):  # fmt: skip
        made = await stack.referral.post(
            "/v1/etn-meetings", json={"municipality": m, "kind": kind, "scheduled_for": at(day)}, headers=coordinator
        )
        assert made.status_code == 201

    async def complete() -> dict[str, Any] | None:
        response = await stack.referral.get("/v1/reports/summary", params={"from": FROM, "to": TO}, headers=coordinator)
        assert response.status_code == 200, response.text
        body = dict(response.json())
        ready = (
            body["cases"]["total"] == 3 and body["cases"]["closed"] == 1 and body["shelter"]["placements"] == 1
            and body["rent_bonus"]["paid_amount"] == "15000.00" and body["protection_orders"]["protection"] == 1
        )  # fmt: skip
        return body if ready else None

    report = await wait_for(complete, timeout=15, what="the projection to hold the seeded facts")
    c = report["cases"]
    assert report["municipality"] == m and report["from"] == FROM and report["to"] == TO
    assert c["by_sex"] == {"female": 1, "male": 1, "other": 0, "unknown": 1}
    assert c["by_age_group"]["25-39"] == 1 and c["by_age_group"]["60+"] == 1 and c["by_age_group"]["unknown"] == 1
    assert c["by_ethnicity"] == {"roma": 1, "undisclosed": 1, "egyptian": 1}
    assert c["by_risk_level"] == {"low": 1, "medium": 1, "high": 1}
    assert c["by_source"] == {"police": 1, "self_referral": 1, "health": 1}
    assert c["by_violence_type"] == {"physical": 1, "psychological": 1, "economic": 1, "unknown": 1}
    for key in ("by_sex", "by_age_group", "by_ethnicity", "by_risk_level", "by_source"):
        assert sum(c[key].values()) == c["total"], key
    assert c["with_children"] == 1
    # Referrals count by the day they were made: today, not in the cases' (historical) period.
    assert report["referrals"]["total"] == 0
    today = datetime.now(UTC).date().isoformat()
    now_report = await stack.referral.get("/v1/reports/summary", params={"from": today, "to": today},
                                          headers=coordinator)  # fmt: skip
    r = now_report.json()["referrals"]
    # social services for each of the four cases + child protection (child at risk) for the first.
    assert r["by_member_kind"] == {"social_services": 4, "child_protection": 1}
    assert sum(r["by_status"].values()) == r["total"] == 5
    assert r["median_hours_to_acknowledge"] is None and r["sla_breaches"] == 0
    assert (report["etn_meetings"], report["steering_committee_meetings"]) == (2, 1)
    assert report["protection_orders"] == {"immediate": 1, "protection": 1}
    assert report["shelter"] == {"placements": 1, "children_placed": 2}
    # May and June of a 6-month bonus fall in the period.
    assert report["rent_bonus"] == {"beneficiaries": 1, "approved_amount": "30000.00", "paid_amount": "15000.00"}

    auditor = stack.auth("auditor", "*")
    audited = await stack.referral.get("/v1/reports/summary", params={"from": FROM, "to": TO, "municipality": m},
                                       headers=auditor)  # fmt: skip
    # The auditor sees the same totals, but every count here is one woman: suppressed (CONTRACT.md §10).
    seen = audited.json()
    assert seen["cases"]["total"] == c["total"] == 3 and seen["referrals"]["total"] == 0
    assert seen["cases"]["by_ethnicity"] == {"roma": None, "undisclosed": None, "egyptian": None}
    assert seen["cases"]["by_sex"] == {"female": None, "male": None, "other": None, "unknown": None}
    assert "cases.by_ethnicity.egyptian" in seen["suppressed"] and seen["cases"]["with_children"] is None
    assert report["suppressed"] == []
    dashboard = await stack.referral.get("/v1/dashboard", headers=coordinator)
    assert dashboard.status_code == 200
    board = dashboard.json()
    assert board["open_cases_by_risk_level"] == {"low": 0, "medium": 1, "high": 2}
    assert board["protection_orders_expiring"]["count"] == 3
    assert {i["case_number"] for i in board["protection_orders_expiring"]["items"]} == {cases[0]["case_number"]}

    export = await stack.referral.get("/v1/reports/cases.csv", params={"from": FROM, "to": TO}, headers=coordinator)
    assert export.status_code == 200 and export.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(export.text)))
    assert [row["case_number"] for row in rows] == [d["case_number"] for d in cases[:3]]
    assert rows[0]["violence_types"] == "physical;psychological" and rows[0]["children_count"] == "2"
    assert sorted(rows[0]["referral_outcomes"].split(";")) == ["child_protection:pending", "social_services:pending"]
    assert rows[1]["status"] == "closed" and rows[1]["closed_at"].startswith("2026-05-01")
    assert not {"name", "first_name", "phone", "address", "date_of_birth", "description"} & set(rows[0])


async def test_report_scope_and_roles(stack: Stack) -> None:
    m = new_municipality()
    params = {"from": FROM, "to": TO}
    empty = await stack.referral.get("/v1/reports/summary", params=params, headers=stack.auth("coordinator", m))
    assert empty.status_code == 200 and empty.json()["cases"]["total"] == 0
    assert empty.json()["referrals"]["median_hours_to_acknowledge"] is None
    foreign = await stack.referral.get(
        "/v1/reports/summary",
        params={**params, "municipality": new_municipality()},
        headers=stack.auth("coordinator", m),
    )
    assert foreign.status_code == 404
    auditor = stack.auth("auditor", "*")
    assert (await stack.referral.get("/v1/reports/summary", params=params, headers=auditor)).status_code == 422
    assert (await stack.referral.get("/v1/reports/cases.csv", params={**params, "municipality": m},
                                     headers=auditor)).status_code == 200  # fmt: skip
    backwards = await stack.referral.get(
        "/v1/reports/summary", params={"from": TO, "to": FROM}, headers=stack.auth("coordinator", m)
    )
    assert backwards.status_code == 422
    for role in ("police", "admin", "shelter_staff"):
        assert (
            await stack.referral.get("/v1/reports/summary", params=params, headers=stack.auth(role, m))
        ).status_code == 403
    assert (await stack.referral.get("/v1/dashboard", headers=stack.auth("auditor", "*"))).status_code == 403

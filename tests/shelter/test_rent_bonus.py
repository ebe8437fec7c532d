"""The rent bonus: applications, one decision, payments per month, budgets that never overcommit."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

from tests.shelter.helpers import outbox_events
from tests.support import Stack, new_municipality


def application_body(m: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "case_id": str(uuid.uuid4()),
        "municipality": m,
        "monthly_rent": "25000.00",
        "household_size": 3,
        "requested_months": 6,
    }
    body.update(overrides)
    return body


def officer(stack: Stack, m: str) -> dict[str, str]:
    return stack.auth("housing_officer", m)


async def apply(stack: Stack, m: str, role: str = "coordinator", **overrides: Any) -> dict[str, Any]:
    response = await stack.shelter.post(
        "/v1/rent-bonus/applications", json=application_body(m, **overrides), headers=stack.auth(role, m, member_id="x")
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def set_budget(stack: Stack, m: str, year: int, amount: str) -> dict[str, Any]:
    response = await stack.shelter.put(
        f"/v1/rent-bonus/budgets/{m}/{year}", json={"amount": amount}, headers=officer(stack, m)
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


async def budget(stack: Stack, m: str, year: int, role: str = "housing_officer") -> dict[str, Any]:
    headers = stack.auth(role, "*" if role == "auditor" else m)
    response = await stack.shelter.get(f"/v1/rent-bonus/budgets/{m}/{year}", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json())


def approval(start: str = "2026-01", months: int = 3, amount: str = "20000.00") -> dict[str, Any]:
    return {"approved": True, "monthly_amount": amount, "start_month": start, "months": months, "reason": "lease ok"}


async def decide(stack: Stack, m: str, app_id: str, body: dict[str, Any]) -> Any:
    return await stack.shelter.post(
        f"/v1/rent-bonus/applications/{app_id}/decision", json=body, headers=officer(stack, m)
    )


async def test_application_is_pending_with_money_as_decimal_strings(stack: Stack) -> None:
    m = new_municipality()
    for role in ("coordinator", "social_services", "housing_officer"):
        app = await apply(stack, m, role=role, monthly_rent="25000.5")
        assert app["status"] == "pending" and app["approved"] is None
        assert app["monthly_rent"] == "25000.50"
        assert app["payments"] == []


async def test_approval_creates_one_payment_per_month(stack: Stack) -> None:
    m = new_municipality()
    await set_budget(stack, m, 2026, "100000.00")
    app = await apply(stack, m)
    response = await decide(stack, m, app["id"], approval("2026-02", 3, "15000.00"))
    assert response.status_code == 200, response.text
    decided = response.json()
    assert decided["status"] == "approved" and decided["total"] == "45000.00"
    assert [(p["month"], p["amount"], p["status"]) for p in decided["payments"]] == [
        ("2026-02", "15000.00", "due"),
        ("2026-03", "15000.00", "due"),
        ("2026-04", "15000.00", "due"),
    ]
    fetched = await stack.shelter.get(f"/v1/rent-bonus/applications/{app['id']}", headers=officer(stack, m))
    assert fetched.json()["payments"] == decided["payments"]
    assert await budget(stack, m, 2026) == {
        "municipality": m,
        "year": 2026,
        "amount": "100000.00",
        "committed": "45000.00",
        "paid": "0.00",
        "remaining": "55000.00",
    }
    events = await outbox_events(stack, "rent_bonus.decided", application_id=app["id"])
    assert events[0]["data"]["total"] == "45000.00" and events[0]["data"]["approved"] is True
    assert "reason" not in events[0]["data"]


async def test_deciding_twice_is_409(stack: Stack) -> None:
    m = new_municipality()
    await set_budget(stack, m, 2026, "100000.00")
    app = await apply(stack, m)
    assert (await decide(stack, m, app["id"], approval())).status_code == 200
    again = await decide(stack, m, app["id"], {"approved": False, "reason": "changed mind"})
    assert again.status_code == 409
    assert (await budget(stack, m, 2026))["committed"] == "60000.00"


async def test_rejection_creates_no_payments(stack: Stack) -> None:
    m = new_municipality()
    app = await apply(stack, m)
    response = await decide(stack, m, app["id"], {"approved": False, "reason": "no lease"})
    assert response.status_code == 200
    assert response.json()["status"] == "rejected" and response.json()["payments"] == []
    missing_reason = await decide(stack, m, (await apply(stack, m))["id"], {"approved": False})
    assert missing_reason.status_code == 422


async def test_approval_beyond_the_remaining_budget_is_409(stack: Stack) -> None:
    m = new_municipality()
    await set_budget(stack, m, 2026, "50000.00")
    first = await apply(stack, m)
    assert (await decide(stack, m, first["id"], approval("2026-01", 2, "20000.00"))).status_code == 200
    second = await apply(stack, m)
    response = await decide(stack, m, second["id"], approval("2026-03", 1, "10000.01"))
    assert response.status_code == 409
    assert response.json()["type"].endswith("budget-exhausted")
    fetched = await stack.shelter.get(f"/v1/rent-bonus/applications/{second['id']}", headers=officer(stack, m))
    assert fetched.json()["status"] == "pending" and fetched.json()["payments"] == []
    assert (await decide(stack, m, second["id"], approval("2026-03", 1, "10000.00"))).status_code == 200
    assert (await budget(stack, m, 2026))["remaining"] == "0.00"


async def test_no_budget_for_the_year_is_409(stack: Stack) -> None:
    m = new_municipality()
    app = await apply(stack, m)
    response = await decide(stack, m, app["id"], approval("2031-01", 1))
    assert response.status_code == 409


async def test_months_into_next_year_commit_against_each_calendar_year(stack: Stack) -> None:
    m = new_municipality()
    await set_budget(stack, m, 2026, "40000.00")
    app = await apply(stack, m)
    # 2026-11..2027-02: two months against 2026, two against 2027, which has no budget yet.
    assert (await decide(stack, m, app["id"], approval("2026-11", 4, "10000.00"))).status_code == 409
    await set_budget(stack, m, 2027, "15000.00")
    assert (await decide(stack, m, app["id"], approval("2026-11", 4, "10000.00"))).status_code == 409
    await set_budget(stack, m, 2027, "20000.00")
    assert (await decide(stack, m, app["id"], approval("2026-11", 4, "10000.00"))).status_code == 200
    assert (await budget(stack, m, 2026))["committed"] == "20000.00"
    assert (await budget(stack, m, 2027))["committed"] == "20000.00"


async def test_ten_concurrent_approvals_for_a_budget_of_three_exactly_three_win(stack: Stack) -> None:
    m = new_municipality()
    await set_budget(stack, m, 2026, "90000.00")
    apps = [await apply(stack, m) for _ in range(10)]
    responses = await asyncio.gather(*(decide(stack, m, a["id"], approval("2026-05", 3, "10000.00")) for a in apps))
    codes = sorted(r.status_code for r in responses)
    assert codes.count(200) == 3 and codes.count(409) == 7, codes
    state = await budget(stack, m, 2026)
    assert state["committed"] == "90000.00" and state["remaining"] == "0.00"


async def test_payment_is_paid_once_and_budget_stays_consistent(stack: Stack) -> None:
    m = new_municipality()
    await set_budget(stack, m, 2026, "100000.00")
    app = await apply(stack, m)
    payments = (await decide(stack, m, app["id"], approval("2026-01", 3, "12000.00"))).json()["payments"]
    paid = await stack.shelter.post(f"/v1/rent-bonus/payments/{payments[0]['id']}/pay", headers=officer(stack, m))
    assert paid.status_code == 200 and paid.json()["status"] == "paid"
    again = await stack.shelter.post(f"/v1/rent-bonus/payments/{payments[0]['id']}/pay", headers=officer(stack, m))
    assert again.status_code == 409
    racing = await asyncio.gather(
        *(
            stack.shelter.post(f"/v1/rent-bonus/payments/{payments[1]['id']}/pay", headers=officer(stack, m))
            for _ in range(5)
        )
    )
    assert sorted(r.status_code for r in racing) == [200, 409, 409, 409, 409]
    state = await budget(stack, m, 2026)
    fetched = (await stack.shelter.get(f"/v1/rent-bonus/applications/{app['id']}", headers=officer(stack, m))).json()
    paid_sum = sum(Decimal(p["amount"]) for p in fetched["payments"] if p["status"] == "paid")
    committed_sum = sum(Decimal(p["amount"]) for p in fetched["payments"])
    assert Decimal(state["paid"]) == paid_sum == Decimal("24000.00")
    assert Decimal(state["committed"]) == committed_sum == Decimal("36000.00")
    assert Decimal(state["remaining"]) == Decimal(state["amount"]) - committed_sum
    assert await outbox_events(stack, "rent_bonus.payment_paid", payment_id=payments[0]["id"])


async def test_budget_cannot_drop_below_what_is_committed(stack: Stack) -> None:
    m = new_municipality()
    await set_budget(stack, m, 2026, "50000.00")
    app = await apply(stack, m)
    assert (await decide(stack, m, app["id"], approval("2026-01", 2, "20000.00"))).status_code == 200
    response = await stack.shelter.put(
        f"/v1/rent-bonus/budgets/{m}/2026", json={"amount": "39999.99"}, headers=officer(stack, m)
    )
    assert response.status_code == 409
    assert (await set_budget(stack, m, 2026, "40000.00"))["remaining"] == "0.00"


async def test_budget_readers_and_writers(stack: Stack) -> None:
    m = new_municipality()
    await set_budget(stack, m, 2026, "1000.00")
    assert (await budget(stack, m, 2026, "coordinator"))["amount"] == "1000.00"
    assert (await budget(stack, m, 2026, "auditor"))["amount"] == "1000.00"
    for role in ("coordinator", "auditor", "social_services"):
        response = await stack.shelter.put(
            f"/v1/rent-bonus/budgets/{m}/2026", json={"amount": "5.00"}, headers=stack.auth(role, m)
        )
        assert response.status_code == 403, role
    for role in ("social_services", "shelter_staff", "admin"):
        response = await stack.shelter.get(f"/v1/rent-bonus/budgets/{m}/2026", headers=stack.auth(role, m))
        assert response.status_code == 403, role
    foreign = officer(stack, new_municipality())
    assert (await stack.shelter.get(f"/v1/rent-bonus/budgets/{m}/2026", headers=foreign)).status_code == 404
    put = await stack.shelter.put(f"/v1/rent-bonus/budgets/{m}/2026", json={"amount": "1.00"}, headers=foreign)
    assert put.status_code == 404
    unset = await stack.shelter.get(f"/v1/rent-bonus/budgets/{m}/2030", headers=officer(stack, m))
    assert unset.status_code == 404


async def test_negative_zero_and_float_like_money_is_checked(stack: Stack) -> None:
    m = new_municipality()
    headers = stack.auth("coordinator", m)
    for rent in ("0", "-1.00", "0.001", "1e20", "abc"):
        response = await stack.shelter.post(
            "/v1/rent-bonus/applications", json=application_body(m, monthly_rent=rent), headers=headers
        )
        assert response.status_code == 422, rent
    for amount in ("0.00", "-5"):
        response = await stack.shelter.put(
            f"/v1/rent-bonus/budgets/{m}/2026", json={"amount": amount}, headers=officer(stack, m)
        )
        assert response.status_code == 422, amount
    app = await apply(stack, m)
    for bad in (
        approval(amount="0"),
        approval(amount="-10.00"),
        approval(start="2026-13"),
        approval(start="26-01"),
        {**approval(), "months": 0},
        {"approved": True, "reason": "x"},
    ):
        assert (await decide(stack, m, app["id"], bad)).status_code == 422, bad
    assert (
        await stack.shelter.put(f"/v1/rent-bonus/budgets/{m}/99999", json={"amount": "1"}, headers=officer(stack, m))
    ).status_code == 422


async def test_another_municipality_is_404_for_rent_bonus(stack: Stack) -> None:
    m = new_municipality()
    await set_budget(stack, m, 2026, "100000.00")
    app = await apply(stack, m)
    payments = (await decide(stack, m, app["id"], approval())).json()["payments"]
    foreign = officer(stack, new_municipality())
    assert (await stack.shelter.get(f"/v1/rent-bonus/applications/{app['id']}", headers=foreign)).status_code == 404
    assert (
        await stack.shelter.post(f"/v1/rent-bonus/applications/{app['id']}/decision", json=approval(), headers=foreign)
    ).status_code == 404
    assert (
        await stack.shelter.post(f"/v1/rent-bonus/payments/{payments[0]['id']}/pay", headers=foreign)
    ).status_code == 404
    body = application_body(m)
    response = await stack.shelter.post("/v1/rent-bonus/applications", json=body, headers=foreign)
    assert response.status_code == 403  # acting for another municipality


async def test_rent_bonus_roles(stack: Stack) -> None:
    m = new_municipality()
    app = await apply(stack, m)
    for role in ("police", "shelter_staff", "admin", "auditor"):
        headers = stack.auth(role, m)
        assert (
            await stack.shelter.post("/v1/rent-bonus/applications", json=application_body(m), headers=headers)
        ).status_code == 403, role
        assert (await stack.shelter.get(f"/v1/rent-bonus/applications/{app['id']}", headers=headers)).status_code == 403
    for role in ("coordinator", "social_services"):
        response = await stack.shelter.post(
            f"/v1/rent-bonus/applications/{app['id']}/decision", json=approval(), headers=stack.auth(role, m)
        )
        assert response.status_code == 403, role


async def test_social_services_read_only_their_institutions_applications(stack: Stack) -> None:
    m = new_municipality()
    ours = await stack.shelter.post(
        "/v1/rent-bonus/applications",
        json=application_body(m),
        headers=stack.auth("social_services", m, member_id="ss-1"),
    )
    theirs = await apply(stack, m, role="coordinator")
    mine = stack.auth("social_services", m, member_id="ss-1")
    other = stack.auth("social_services", m, member_id="ss-2")
    assert (
        await stack.shelter.get(f"/v1/rent-bonus/applications/{ours.json()['id']}", headers=mine)
    ).status_code == 200
    assert (
        await stack.shelter.get(f"/v1/rent-bonus/applications/{ours.json()['id']}", headers=other)
    ).status_code == 404
    assert (await stack.shelter.get(f"/v1/rent-bonus/applications/{theirs['id']}", headers=mine)).status_code == 404
    coordinator = stack.auth("coordinator", m)
    assert (
        await stack.shelter.get(f"/v1/rent-bonus/applications/{ours.json()['id']}", headers=coordinator)
    ).status_code == 200


async def test_a_retried_application_with_its_key_is_one_application(stack: Stack) -> None:
    m = new_municipality()
    headers = {**stack.auth("coordinator", m, member_id="x"), "Idempotency-Key": str(uuid.uuid4())}
    body = application_body(m)
    answers = await asyncio.gather(
        *(stack.shelter.post("/v1/rent-bonus/applications", json=body, headers=headers) for _ in range(5))
    )
    assert {a.status_code for a in answers} == {201}, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    again = await stack.shelter.post("/v1/rent-bonus/applications", json=body, headers=headers)
    assert again.status_code == 201 and again.json() == answers[0].json()
    other = await stack.shelter.post(
        "/v1/rent-bonus/applications", json=application_body(m, household_size=4), headers=headers
    )
    assert other.status_code == 409
    assert other.headers["content-type"].startswith("application/problem+json")
    listed = await stack.shelter.get(
        "/v1/rent-bonus/applications", params={"case_id": body["case_id"]}, headers=officer(stack, m)
    )
    assert [a["id"] for a in listed.json()["items"]] == [answers[0].json()["id"]]

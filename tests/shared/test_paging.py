"""One list shape (CONTRACT §3, shared/paging.py): every list endpoint pages as `GET /v1/cases` does.

For each list: more than one page (limit 2 over 3 items) returns each item once and ends with a null
`next_cursor`; limit 0 and 201 are 422; a garbled, forged or other list's cursor is a 422 problem."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from shared.errors import Problem
from shared.paging import Keyset
from tests.referral.helpers import add_member, routing_of
from tests.shelter.helpers import placement_body, register
from tests.support import Stack, contract_report, new_municipality, wait_for

Item = dict[str, Any]
_table = sa.table(
    "t", sa.column("at", sa.DateTime(timezone=True)), sa.column("id", sa.Uuid), sa.column("n", sa.BigInteger)
)
SECRET = "paging-secret-for-tests-0123456789"
KEYSET = Keyset("things", (_table.c.at, _table.c.id))


def _forge(payload: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")


def test_a_cursor_round_trips_and_names_its_list() -> None:
    at, id_ = datetime(2026, 12, 2, 9, 30, tzinfo=UTC), uuid.uuid4()
    cursor = KEYSET.encode((at, id_))
    assert KEYSET.decode(cursor) == (at, id_)
    assert "things" not in cursor and str(id_) not in cursor  # opaque: base64, not the raw values
    with pytest.raises(Problem) as other:
        Keyset("others", KEYSET.columns).decode(cursor)
    assert other.value.status == 422


@pytest.mark.parametrize(
    "cursor",
    [
        "!!nope",
        "",
        "x" * 511,
        _forge(["2026-12-02T09:30:00+00:00", str(uuid.uuid4())]),  # the first release's intake shape
        _forge({"l": "things", "k": ["2026-12-02T09:30:00", str(uuid.uuid4())]}),  # no offset
        _forge({"l": "things", "k": ["2026-12-02T09:30:00+00:00", "not-a-uuid"]}),
        _forge({"l": "things", "k": ["2026-12-02T09:30:00+00:00"]}),  # too few keys
        _forge({"l": "things", "k": [12, str(uuid.uuid4())]}),
        _forge({"l": "things", "k": ["2026-12-02T09:30:00\x00+00:00", str(uuid.uuid4())]}),
        _forge({"l": "things", "k": None}),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
    ],
)
def test_a_garbled_or_forged_cursor_is_a_422_problem(cursor: str) -> None:
    with pytest.raises(Problem) as refused:
        KEYSET.decode(cursor)
    assert refused.value.status == 422
    assert refused.value.extra["errors"] == [{"loc": ["query", "cursor"], "msg": "not a cursor of this list"}]


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, True, "7", 1.5])
def test_an_integer_key_beyond_int64_or_of_another_type_is_refused(value: Any) -> None:
    keyset = Keyset("seq", (_table.c.n,))
    assert keyset.decode(keyset.encode((2**63 - 1,))) == (2**63 - 1,)
    with pytest.raises(Problem):
        keyset.decode(_forge({"l": "seq", "k": [value]}))


# --- every list endpoint, against the real stack ---------------------------------------------------


async def page_through(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], **params: Any
) -> list[list[Item]]:
    """The pages of a list at limit 2, following next_cursor to the end."""
    pages: list[list[Item]] = []
    cursor: str | None = None
    while True:
        query = {**params, "limit": 2, **({"cursor": cursor} if cursor else {})}
        response = await client.get(path, params=query, headers=headers)
        assert response.status_code == 200, (path, response.text)
        body = response.json()
        assert set(body) == {"items", "next_cursor"}, (path, body)
        assert len(body["items"]) <= 2
        pages.append(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return pages
        assert len(pages) < 10, f"{path} never ends"


async def assert_pages_once(
    client: httpx.AsyncClient, path: str, headers: dict[str, str], expected: set[str], key: str = "id", **params: Any
) -> list[Item]:
    pages = await page_through(client, path, headers, **params)
    items = [item for page in pages for item in page]
    assert len(pages) == 2 and [len(p) for p in pages] == [2, 1], (path, [len(p) for p in pages])
    assert [item[key] for item in items if item[key] in expected] == [item[key] for item in items]
    assert len({item[key] for item in items}) == len(items) == len(expected), (path, items)
    assert {item[key] for item in items} == expected
    return items


async def assert_bounds(client: httpx.AsyncClient, path: str, headers: dict[str, str], **params: Any) -> None:
    """limit outside 1..200 and a bad cursor are 422 problems, never a 5xx; another list's cursor too."""
    foreign = Keyset("some-other-list", KEYSET.columns).encode((datetime.now(UTC), uuid.uuid4()))
    for bad in ({"limit": 201}, {"limit": 0}, {"cursor": "!!garbled"}, {"cursor": foreign}, {"cursor": "x" * 513}):
        response = await client.get(path, params={**params, **bad}, headers=headers)
        assert response.status_code == 422, (path, bad, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")


async def test_intake_cases_and_audit_page(stack: Stack) -> None:
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    ids = set()
    for _ in range(3):
        created = await stack.intake.post("/v1/cases", json=contract_report(m), headers=coordinator)
        assert created.status_code == 201, created.text
        ids.add(created.json()["id"])
    items = await assert_pages_once(stack.intake, "/v1/cases", coordinator, ids)
    assert [i["reported_at"] for i in items] == sorted((i["reported_at"] for i in items), reverse=True)
    await assert_bounds(stack.intake, "/v1/cases", coordinator)
    case_id = sorted(ids)[0]
    for _ in range(2):
        assert (await stack.intake.get(f"/v1/cases/{case_id}", headers=coordinator)).status_code == 200
    whole = await stack.intake.get("/v1/audit", params={"case_id": case_id, "limit": 200}, headers=coordinator)
    trail = await page_through(stack.intake, "/v1/audit", coordinator, case_id=case_id)
    assert [len(p) for p in trail] == [2, 2] and [e for p in trail for e in p] == whole.json()["items"]
    assert [e["action"] for p in trail for e in p] == ["case.reported", "case.listed", "case.read", "case.read"]
    await assert_bounds(stack.intake, "/v1/audit", coordinator, case_id=case_id)


async def test_referral_members_referrals_and_meetings_page(stack: Stack) -> None:
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    case = (await stack.intake.post("/v1/cases", json=contract_report(m), headers=coordinator)).json()
    await routing_of(stack, m, case["id"], timeout=30)  # routed before the members exist: no automatic referrals
    members = [await add_member(stack, m, kind) for kind in ("police", "social_services", "shelter")]
    await assert_pages_once(stack.referral, "/v1/members", coordinator, {x["id"] for x in members})
    await assert_bounds(stack.referral, "/v1/members", coordinator)
    referred = set()
    for member in members:
        body = {"case_id": case["id"], "to_member_id": member["id"], "urgency": "normal", "service": member["kind"]}
        created = await stack.referral.post("/v1/referrals", json=body, headers=coordinator)
        assert created.status_code == 201, created.text
        referred.add(created.json()["id"])
    await assert_pages_once(stack.referral, "/v1/referrals", coordinator, referred, case_id=case["id"])
    await assert_bounds(stack.referral, "/v1/referrals", coordinator)
    meetings = set()
    for days in (3, 1, 2):
        at = (datetime.now(UTC) + timedelta(days=days)).isoformat()
        created = await stack.referral.post(
            "/v1/etn-meetings", json={"municipality": m, "scheduled_for": at}, headers=coordinator
        )
        assert created.status_code == 201, created.text
        meetings.add(created.json()["id"])
    items = await assert_pages_once(stack.referral, "/v1/etn-meetings", coordinator, meetings)
    assert [i["scheduled_for"] for i in items] == sorted(i["scheduled_for"] for i in items)
    await assert_bounds(stack.referral, "/v1/etn-meetings", coordinator)


async def test_shelter_shelters_placements_and_applications_page(stack: Stack) -> None:
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    shelters = [await register(stack, m, name=name) for name in ("Beta", "Alfa", "Gama")]
    items = await assert_pages_once(stack.shelter, "/v1/shelters", coordinator, {s["id"] for s in shelters})
    assert [s["name"] for s in items] == ["Alfa", "Beta", "Gama"]
    await assert_bounds(stack.shelter, "/v1/shelters", coordinator)
    placed = set()
    for _ in range(3):
        created = await stack.shelter.post(
            "/v1/placements", json=placement_body(shelters[0]["id"]), headers=coordinator
        )
        assert created.status_code == 201, created.text
        placed.add(created.json()["id"])
    await assert_pages_once(stack.shelter, "/v1/placements", coordinator, placed)
    await assert_bounds(stack.shelter, "/v1/placements", coordinator)
    applied = set()
    for _ in range(3):
        body = {"case_id": str(uuid.uuid4()), "municipality": m, "monthly_rent": "20000.00", "household_size": 2,
                "requested_months": 3}  # fmt: skip
        created = await stack.shelter.post("/v1/rent-bonus/applications", json=body, headers=coordinator)
        assert created.status_code == 201, created.text
        applied.add(created.json()["id"])
    await assert_pages_once(stack.shelter, "/v1/rent-bonus/applications", coordinator, applied)
    await assert_bounds(stack.shelter, "/v1/rent-bonus/applications", coordinator)


async def test_notifications_inbox_subscriptions_and_deliveries_page(stack: Stack) -> None:
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    subscribed = set()
    for n in range(3):
        body = {"url": f"http://127.0.0.1:9/paging/{n}", "event_types": ["case.reported"], "secret": SECRET}
        created = await stack.notifications.post("/v1/subscriptions", json=body, headers=coordinator)
        assert created.status_code == 201, created.text
        subscribed.add(created.json()["id"])
    await assert_pages_once(stack.notifications, "/v1/subscriptions", coordinator, subscribed)
    await assert_bounds(stack.notifications, "/v1/subscriptions", coordinator)
    first = sorted(subscribed)[0]
    cases = set()
    for _ in range(3):
        report = contract_report(m, risk_answers={"threats_to_kill": True})
        created = await stack.intake.post("/v1/cases", json=report, headers=coordinator)
        cases.add(created.json()["id"])

    async def alerted() -> list[Item]:
        response = await stack.notifications.get("/v1/inbox", params={"limit": 200}, headers=coordinator)
        return [a for a in response.json()["items"] if a["type"] == "case.high_risk"]

    async def settled() -> list[Item]:
        """The whole inbox once three high-risk alerts are in and nothing new came for a second (the
        mechanism-gap alerts of the routing arrive too)."""
        if len(await alerted()) < 3:
            return []
        before = (await stack.notifications.get("/v1/inbox", params={"limit": 200}, headers=coordinator)).json()
        await asyncio.sleep(1)
        after = (await stack.notifications.get("/v1/inbox", params={"limit": 200}, headers=coordinator)).json()
        return list(after["items"]) if before == after else []

    async def delivered() -> list[Item]:
        response = await stack.notifications.get(
            "/v1/deliveries", params={"subscription_id": first, "limit": 200}, headers=coordinator
        )
        return list(response.json()["items"]) if len(response.json()["items"]) >= 3 else []

    inbox = await wait_for(settled, timeout=40, what="three high-risk alerts, and a settled inbox")
    pages = await page_through(stack.notifications, "/v1/inbox", coordinator)
    items = [a for page in pages for a in page]
    assert len(pages) == (len(inbox) + 1) // 2 and [a["id"] for a in items] == [a["id"] for a in inbox]
    assert {a["case_id"] for a in items if a["type"] == "case.high_risk"} == cases
    assert [a["seq"] for a in items] == sorted((a["seq"] for a in items), reverse=True)
    await assert_bounds(stack.notifications, "/v1/inbox", coordinator)
    rows = await wait_for(delivered, timeout=30, what="three deliveries to one subscription")
    await assert_pages_once(
        stack.notifications, "/v1/deliveries", coordinator, {d["id"] for d in rows}, subscription_id=first
    )
    await assert_bounds(stack.notifications, "/v1/deliveries", coordinator)


@pytest.mark.parametrize("service", ["intake", "referral", "shelter", "notifications"])
async def test_no_route_answers_a_bare_array_and_every_page_takes_limit_and_cursor(stack: Stack, service: str) -> None:
    spec = (await stack.clients[service].get("/openapi.json")).json()
    pages = 0
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            content = operation.get("responses", {}).get("200", {}).get("content", {}).get("application/json", {})
            schema = content.get("schema", {})
            assert schema.get("type") != "array", f"{method.upper()} {path} answers a bare array"
            if schema.get("$ref", "").startswith("#/components/schemas/Page_"):
                pages += 1
                names = {p["name"] for p in operation.get("parameters", [])}
                assert {"limit", "cursor"} <= names, f"{method.upper()} {path}"
    assert pages >= 2


async def test_the_projection_409_and_its_retry_after_are_documented(stack: Stack) -> None:
    referral = (await stack.referral.get("/openapi.json")).json()
    shelter = (await stack.shelter.get("/openapi.json")).json()
    for spec, path in (
        (referral, "/v1/referrals"),
        (shelter, "/v1/placements"),
        (shelter, "/v1/rent-bonus/applications"),
    ):
        conflict = spec["paths"][path]["post"]["responses"]["409"]
        assert "Retry-After" in conflict["headers"] and "projection-behind" in conflict["description"]

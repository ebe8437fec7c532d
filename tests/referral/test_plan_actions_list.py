"""GET /v1/plan-actions: an institution finds its ETN tasks across cases (only its own), the coordinator all
of the municipality's, by due date and page by page; bad input is a 422, other roles a 403."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer

from tests.referral.helpers import add_member, produce, reported, routing_of
from tests.support import Stack, new_municipality


async def test_plan_actions_are_listed_per_responsible_institution_by_due_date_in_pages(
    stack: Stack, producer: AIOKafkaProducer
) -> None:
    m = new_municipality()
    ss = await add_member(stack, m, "social_services")
    employment = await add_member(stack, m, "employment")
    cases = [reported(m) for _ in range(2)]
    for data in cases:
        await produce(producer, stack.settings, "case.reported", m, data)
        await routing_of(stack, m, data["case_id"])
    coordinator = stack.auth("coordinator", m)
    meeting = await stack.referral.post("/v1/etn-meetings", headers=coordinator, json={
        "municipality": m, "scheduled_for": (datetime.now(UTC) - timedelta(days=1)).isoformat(),
        "case_ids": [c["case_id"] for c in cases], "member_ids": [ss["id"], employment["id"]]})
    assert meeting.status_code == 201, meeting.text
    today = datetime.now(UTC).date()
    decisions = [
        {"case_id": cases[0]["case_id"], "action": "visit", "responsible_member_id": ss["id"],
         "due_date": (today + timedelta(days=9)).isoformat()},
        {"case_id": cases[1]["case_id"], "action": "visit", "responsible_member_id": ss["id"],
         "due_date": (today + timedelta(days=3)).isoformat()},
        {"case_id": cases[1]["case_id"], "action": "job", "responsible_member_id": employment["id"],
         "due_date": (today + timedelta(days=5)).isoformat()},
    ]
    minutes = await stack.referral.post(f"/v1/etn-meetings/{meeting.json()['id']}/minutes", headers=coordinator,
                                        json={"attended_member_ids": [ss["id"]], "decisions": decisions})
    assert minutes.status_code == 201, minutes.text

    social = stack.auth("social_services", m, member_id=ss["id"])
    mine = await stack.referral.get("/v1/plan-actions", headers=social)
    assert mine.status_code == 200, mine.text
    items = mine.json()["items"]
    assert [(a["case_id"], a["due_date"]) for a in items] == [
        (cases[1]["case_id"], decisions[1]["due_date"]), (cases[0]["case_id"], decisions[0]["due_date"])]
    assert {a["responsible_member_id"] for a in items} == {ss["id"]} and mine.json()["next_cursor"] is None

    everything = await stack.referral.get("/v1/plan-actions", params={"limit": 2}, headers=coordinator)
    first = everything.json()
    assert [a["action"] for a in first["items"]] == ["visit", "job"] and first["next_cursor"]
    rest = await stack.referral.get("/v1/plan-actions", params={"limit": 2, "cursor": first["next_cursor"]},
                                    headers=coordinator)
    assert [a["due_date"] for a in rest.json()["items"]] == [decisions[0]["due_date"]]
    assert rest.json()["next_cursor"] is None

    done = await stack.referral.post(f"/v1/plan-actions/{items[0]['id']}/complete", headers=social)
    assert done.status_code == 200, done.text
    still_open = await stack.referral.get("/v1/plan-actions", params={"status": "open"}, headers=social)
    assert [a["id"] for a in still_open.json()["items"]] == [items[1]["id"]]
    completed = await stack.referral.get("/v1/plan-actions", params={"status": "completed"}, headers=social)
    assert [a["id"] for a in completed.json()["items"]] == [items[0]["id"]]

    # Another municipality's coordinator and an institution without actions see nothing.
    other = await stack.referral.get("/v1/plan-actions", headers=stack.auth("coordinator", new_municipality()))
    assert other.status_code == 200 and other.json()["items"] == []
    police = await stack.referral.get("/v1/plan-actions", headers=stack.auth("police", m, member_id=ss["id"][::-1]))
    assert police.status_code == 200 and police.json()["items"] == []


async def test_plan_actions_list_refuses_bad_input_and_other_roles(stack: Stack) -> None:
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    for params in ({"cursor": "not-a-cursor"}, {"cursor": "x" * 513}, {"limit": 0}, {"limit": 201},
                   {"status": "overdue"}):
        refused = await stack.referral.get("/v1/plan-actions", params=params, headers=coordinator)
        assert refused.status_code == 422, (params, refused.text)
        assert refused.headers["content-type"].startswith("application/problem+json")
    for role in ("auditor", "admin", "housing_officer"):
        assert (await stack.referral.get("/v1/plan-actions", headers=stack.auth(role, m))).status_code == 403
    assert (await stack.referral.get("/v1/plan-actions")).status_code == 401

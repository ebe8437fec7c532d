"""ETN and Steering Committee meetings, minutes → case-plan actions, who sees and completes them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer

from tests.referral.helpers import add_member, produce, published, reported, routing_of
from tests.support import Stack, new_municipality


async def test_minutes_become_case_plan_actions_seen_by_coordinator_and_responsible_institution(
    stack: Stack, producer: AIOKafkaProducer
) -> None:
    m = new_municipality()
    ss = await add_member(stack, m, "social_services")
    employment = await add_member(stack, m, "employment")
    data = reported(m)
    await produce(producer, stack.settings, "case.reported", m, data)
    await routing_of(stack, m, data["case_id"])
    coordinator = stack.auth("coordinator", m)
    when = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    meeting = await stack.referral.post(
        "/v1/etn-meetings",
        json={
            "municipality": m,
            "scheduled_for": when,
            "case_ids": [data["case_id"]],
            "member_ids": [ss["id"], employment["id"]],
        },
        headers=coordinator,
    )
    assert meeting.status_code == 201, meeting.text
    assert meeting.json()["kind"] == "etn" and meeting.json()["held"] is False
    due = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    minutes = await stack.referral.post(
        f"/v1/etn-meetings/{meeting.json()['id']}/minutes",
        json={
            "attended_member_ids": [ss["id"], employment["id"]],
            "decisions": [
                {
                    "case_id": data["case_id"],
                    "action": "job programme",
                    "responsible_member_id": employment["id"],
                    "due_date": due,
                },
                {
                    "case_id": data["case_id"],
                    "action": "monthly visit",
                    "responsible_member_id": ss["id"],
                    "due_date": due,
                },
            ],
        },
        headers=coordinator,
    )
    assert minutes.status_code == 201, minutes.text
    assert minutes.json()["meeting"]["held"] is True
    again = await stack.referral.post(
        f"/v1/etn-meetings/{meeting.json()['id']}/minutes", json={"decisions": []}, headers=coordinator
    )
    assert again.status_code == 409
    plan = await stack.referral.get(f"/v1/cases/{data['case_id']}/plan", headers=coordinator)
    assert plan.status_code == 200
    assert sorted(a["action"] for a in plan.json()["actions"]) == ["job programme", "monthly visit"]
    institution = stack.auth("employment", m, member_id=employment["id"])
    own = await stack.referral.get(f"/v1/cases/{data['case_id']}/plan", headers=institution)
    assert [a["action"] for a in own.json()["actions"]] == ["job programme"]
    stranger = stack.auth("health", m, member_id=str(uuid.uuid4()))
    assert (await stack.referral.get(f"/v1/cases/{data['case_id']}/plan", headers=stranger)).status_code == 404
    mine = own.json()["actions"][0]["id"]
    theirs = next(a["id"] for a in plan.json()["actions"] if a["id"] != mine)
    assert (await stack.referral.post(f"/v1/plan-actions/{theirs}/complete", headers=institution)).status_code == 404
    done = await stack.referral.post(f"/v1/plan-actions/{mine}/complete", headers=institution)
    assert done.status_code == 200 and done.json()["status"] == "completed"
    assert (await stack.referral.post(f"/v1/plan-actions/{mine}/complete", headers=coordinator)).status_code == 409
    recorded = await published(stack, "etn.minutes_recorded", meeting_id=meeting.json()["id"])
    assert len(recorded[0]["data"]["actions"]) == 2
    assert "job programme" not in str(recorded)  # the action text stays in referral


async def test_past_meeting_is_recorded_as_held_and_listed_by_date_and_kind(stack: Stack) -> None:
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    for kind, days in (("steering_committee", -40), ("etn", -10), ("etn", 5)):
        at = (datetime.now(UTC) + timedelta(days=days)).isoformat()
        created = await stack.referral.post(
            "/v1/etn-meetings", json={"municipality": m, "kind": kind, "scheduled_for": at}, headers=coordinator
        )
        assert created.status_code == 201
        assert created.json()["held"] is (days < 0)
    since = (datetime.now(UTC) - timedelta(days=20)).date().isoformat()
    listed = await stack.referral.get("/v1/etn-meetings", params={"from": since}, headers=coordinator)
    assert [x["kind"] for x in listed.json()["items"]] == ["etn", "etn"]
    steering = await stack.referral.get("/v1/etn-meetings", params={"kind": "steering_committee"}, headers=coordinator)
    assert len(steering.json()["items"]) == 1
    other = await stack.referral.get("/v1/etn-meetings", headers=stack.auth("coordinator", new_municipality()))
    assert other.json() == {"items": [], "next_cursor": None}


async def test_meeting_validation_and_roles(stack: Stack, producer: AIOKafkaProducer) -> None:
    m, elsewhere = new_municipality(), new_municipality()
    coordinator = stack.auth("coordinator", m)
    unknown_case = {"municipality": m, "scheduled_for": datetime.now(UTC).isoformat(), "case_ids": [str(uuid.uuid4())]}
    # A case the projection does not know (after the bounded wait) may yet exist: 409 + Retry-After.
    response = await stack.referral.post("/v1/etn-meetings", json=unknown_case, headers=coordinator)
    assert response.status_code == 409 and response.headers["retry-after"] == "2"
    assert response.json()["type"] == "https://mkr.al/problems/projection-behind"
    # A case known to be of another municipality is a field error, as before.
    theirs = reported(elsewhere)
    await produce(producer, stack.settings, "case.reported", elsewhere, theirs)
    await routing_of(stack, elsewhere, theirs["case_id"])
    response = await stack.referral.post(
        "/v1/etn-meetings", json={**unknown_case, "case_ids": [theirs["case_id"]]}, headers=coordinator
    )
    assert response.status_code == 422 and response.json()["errors"][0]["loc"] == ["body", "case_ids", 0]
    naive = {"municipality": m, "scheduled_for": "2026-11-20T10:00:00"}
    assert (await stack.referral.post("/v1/etn-meetings", json=naive, headers=coordinator)).status_code == 422
    ok = {"municipality": m, "scheduled_for": datetime.now(UTC).isoformat()}
    assert (await stack.referral.post("/v1/etn-meetings", json=ok, headers=stack.auth("police", m))).status_code == 403
    foreign = {**ok, "municipality": new_municipality()}
    assert (await stack.referral.post("/v1/etn-meetings", json=foreign, headers=coordinator)).status_code == 403
    missing = await stack.referral.post(f"/v1/etn-meetings/{uuid.uuid4()}/minutes", json={}, headers=coordinator)
    assert missing.status_code == 404

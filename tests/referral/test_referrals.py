"""Manual referrals, the life cycle, visibility by role and member, concurrency."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiokafka import AIOKafkaProducer

from tests.referral.helpers import SHELTER_TOPIC, add_member, produce, published, referrals_of, reported, routing_of
from tests.support import Stack, new_municipality, wait_for


async def routed_case(stack: Stack, producer: AIOKafkaProducer, m: str, **facts: Any) -> dict[str, Any]:
    data = reported(m, **facts)
    await produce(producer, stack.settings, "case.reported", m, data)
    await routing_of(stack, m, data["case_id"])
    return data


async def test_referral_outside_consent_needs_override_reason(stack: Stack, producer: AIOKafkaProducer) -> None:
    m = new_municipality()
    legal = await add_member(stack, m, "legal_aid")
    case = await routed_case(stack, producer, m, consent_share_with=["social_services"])
    coordinator = stack.auth("coordinator", m)
    body = {"case_id": case["case_id"], "to_member_id": legal["id"], "urgency": "high", "service": "legal_aid",
            "note": "court date next week"}  # fmt: skip
    refused = await stack.referral.post("/v1/referrals", json=body, headers=coordinator)
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("consent-required")
    body["consent_override_reason"] = "survivor consented orally at the hearing"
    created = await stack.referral.post("/v1/referrals", json=body, headers=coordinator)
    assert created.status_code == 201, created.text
    referral = created.json()
    assert referral["reason"] == "manual" and referral["consent_override"] is True
    assert referral["note"] == "court date next week"
    assert referral["to_member_kind"] == "legal_aid" and referral["service"] == "legal_aid"
    event = (await published(stack, "referral.created", referral_id=referral["id"]))[0]
    assert event["data"]["consent_override"] is True
    assert "note" not in event["data"] and "court date" not in str(event)


async def test_manual_referral_under_legal_exception_needs_no_override(
    stack: Stack, producer: AIOKafkaProducer
) -> None:
    m = new_municipality()
    case = await routed_case(stack, producer, m, consent_share_with=[], children_count=1)
    child = await add_member(stack, m, "child_protection")
    body = {"case_id": case["case_id"], "to_member_id": child["id"], "urgency": "high", "service": "child_protection"}
    created = await stack.referral.post("/v1/referrals", json=body, headers=stack.auth("coordinator", m))
    assert created.status_code == 201, created.text
    assert created.json()["legal_exception"] == "child_at_risk"


async def test_unknown_case_is_409_projection_behind_and_other_municipality_is_404(
    stack: Stack, producer: AIOKafkaProducer
) -> None:
    m = new_municipality()
    ss = await add_member(stack, m, "social_services")
    body = {"case_id": str(uuid.uuid4()), "to_member_id": ss["id"], "urgency": "normal"}
    # A case the projection does not know (after the bounded wait) may yet exist: 409 + Retry-After, not 404.
    unknown = await stack.referral.post("/v1/referrals", json=body, headers=stack.auth("coordinator", m))
    assert unknown.status_code == 409 and unknown.headers["retry-after"] == "2"
    assert unknown.json()["type"] == "https://mkr.al/problems/projection-behind"
    case = await routed_case(stack, producer, m)
    other = stack.auth("coordinator", new_municipality())
    body["case_id"] = case["case_id"]
    assert (await stack.referral.post("/v1/referrals", json=body, headers=other)).status_code == 404
    # An institution that neither reported the case nor received a referral for it does not know it.
    stranger = stack.auth("health", m, member_id=str(uuid.uuid4()))
    assert (await stack.referral.post("/v1/referrals", json=body, headers=stranger)).status_code == 404


async def test_life_cycle_by_the_receiving_institution_with_history(stack: Stack, producer: AIOKafkaProducer) -> None:
    m = new_municipality()
    ss = await add_member(stack, m, "social_services")
    case = await routed_case(stack, producer, m)
    referral = (await referrals_of(stack, m, case["case_id"], 1))[0]
    receiver = stack.auth("social_services", m, member_id=ss["id"], sub="worker-1")
    other_institution = stack.auth("social_services", m, member_id=str(uuid.uuid4()))
    url = f"/v1/referrals/{referral['id']}"
    # Someone else's referral is invisible to another institution.
    assert (await stack.referral.post(f"{url}/acknowledge", headers=other_institution)).status_code == 404
    # The coordinator sees it but only the receiver acts on it.
    assert (await stack.referral.post(f"{url}/acknowledge", headers=stack.auth("coordinator", m))).status_code == 403
    assert (await stack.referral.post(f"{url}/accept", headers=receiver)).status_code == 409
    assert (await stack.referral.post(f"{url}/acknowledge", headers=receiver)).status_code == 200
    assert (await stack.referral.post(f"{url}/decline", json={}, headers=receiver)).status_code == 422
    assert (await stack.referral.post(f"{url}/accept", headers=receiver)).status_code == 200
    assert (await stack.referral.post(f"{url}/complete", json={}, headers=receiver)).status_code == 422
    done = await stack.referral.post(f"{url}/complete", json={"outcome": "support plan agreed"}, headers=receiver)
    assert done.status_code == 200
    assert [h["status"] for h in done.json()["history"]] == ["pending", "acknowledged", "accepted", "completed"]
    assert done.json()["history"][-1]["by"] == "worker-1"
    assert (await stack.referral.post(f"{url}/cancel", headers=stack.auth("coordinator", m))).status_code == 409
    assert (await stack.referral.post(f"{url}/reopen", headers=receiver)).status_code == 422
    changes = await published(stack, "referral.status_changed", referral_id=referral["id"])
    assert [(e["data"]["previous_status"], e["data"]["status"]) for e in changes] == [
        ("pending", "acknowledged"), ("acknowledged", "accepted"), ("accepted", "completed"),
    ]  # fmt: skip
    assert changes[0]["data"]["by_role"] == "social_services"


async def test_decline_needs_reason_and_sender_may_cancel(stack: Stack, producer: AIOKafkaProducer) -> None:
    m = new_municipality()
    ngo = await add_member(stack, m, "ngo")
    police_member = await add_member(stack, m, "police")
    case = await routed_case(stack, producer, m, consent_share_with=["social_services", "ngo"],
                             reported_by_member_id=police_member["id"])  # fmt: skip
    police = stack.auth("police", m, member_id=police_member["id"])
    body = {"case_id": case["case_id"], "to_member_id": ngo["id"], "urgency": "normal", "service": "psychological"}
    created = await stack.referral.post("/v1/referrals", json=body, headers=police)
    assert created.status_code == 201, created.text
    again = await stack.referral.post("/v1/referrals", json=body, headers=police)
    assert again.status_code == 409  # one active referral per member and case
    url = f"/v1/referrals/{created.json()['id']}"
    receiver = stack.auth("ngo", m, member_id=ngo["id"])
    assert (await stack.referral.post(f"{url}/cancel", headers=receiver)).status_code == 403
    assert (await stack.referral.post(f"{url}/acknowledge", headers=receiver)).status_code == 200
    declined = await stack.referral.post(f"{url}/decline", json={"reason": "no capacity"}, headers=receiver)
    assert declined.status_code == 200 and declined.json()["status"] == "declined"
    assert declined.json()["decline_reason"] == "no capacity" and declined.json()["acknowledged_at"] is not None
    second = await stack.referral.post("/v1/referrals", json=body, headers=police)
    assert second.status_code == 201
    cancelled = await stack.referral.post(f"/v1/referrals/{second.json()['id']}/cancel", headers=police)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    # The sender sees what it sent; the receiver what it received.
    sent = await stack.referral.get("/v1/referrals", params={"case_id": case["case_id"]}, headers=police)
    assert {r["to_member_kind"] for r in sent.json()["items"]} == {"ngo"}
    received = await stack.referral.get("/v1/referrals", params={"status": "declined"}, headers=receiver)
    assert [r["id"] for r in received.json()["items"]] == [created.json()["id"]]


async def test_listing_is_filtered_by_role_and_member(stack: Stack, producer: AIOKafkaProducer) -> None:
    m = new_municipality()
    ss = await add_member(stack, m, "social_services")
    shelter_member = await add_member(stack, m, "shelter")
    case = await routed_case(stack, producer, m, needs=["shelter"], consent_share_with=["social_services", "shelter"])
    found = await referrals_of(stack, m, case["case_id"], 2)
    to_shelter = next(r for r in found if r["to_member_kind"] == "shelter")
    ss_view = await stack.referral.get("/v1/referrals", headers=stack.auth("social_services", m, member_id=ss["id"]))
    assert {r["to_member_kind"] for r in ss_view.json()["items"]} == {"social_services"}
    no_member = await stack.referral.get("/v1/referrals", headers=stack.auth("health", m))
    assert no_member.json() == {"items": [], "next_cursor": None}
    # shelter_staff: by a member_id claim, or by the shelter → member projection of shelter's events.
    by_claim = await stack.referral.get(
        "/v1/referrals", headers=stack.auth("shelter_staff", m, member_id=shelter_member["id"])
    )
    assert [r["id"] for r in by_claim.json()["items"]] == [to_shelter["id"]]
    shelter_id = str(uuid.uuid4())
    staff = stack.auth("shelter_staff", m, shelter_id=shelter_id)
    assert (await stack.referral.get("/v1/referrals", headers=staff)).json() == {"items": [], "next_cursor": None}
    availability = {"shelter_id": shelter_id, "member_id": shelter_member["id"], "kind": "emergency", "capacity": 5,
                    "free_beds": 3, "accepts_children": True}  # fmt: skip
    await produce(producer, stack.settings, "shelter.availability_changed", m, availability, topic=SHELTER_TOPIC)

    async def staff_sees() -> list[Any]:
        return list((await stack.referral.get("/v1/referrals", headers=staff)).json()["items"])

    seen = await wait_for(staff_sees, what="shelter staff seeing their shelter's referral")
    assert [r["id"] for r in seen] == [to_shelter["id"]]
    acked = await stack.referral.post(f"/v1/referrals/{to_shelter['id']}/acknowledge", headers=staff)
    assert acked.status_code == 200
    for role in ("auditor", "admin", "housing_officer"):
        assert (await stack.referral.get("/v1/referrals", headers=stack.auth(role, m))).status_code == 403
    other = await stack.referral.get(
        "/v1/referrals", params={"case_id": case["case_id"]}, headers=stack.auth("coordinator", new_municipality())
    )
    assert other.json() == {"items": [], "next_cursor": None}
    one = await stack.referral.get(
        f"/v1/referrals/{to_shelter['id']}", headers=stack.auth("coordinator", new_municipality())
    )
    assert one.status_code == 404


async def test_concurrent_acknowledgements_succeed_exactly_once(stack: Stack, producer: AIOKafkaProducer) -> None:
    m = new_municipality()
    ss = await add_member(stack, m, "social_services")
    case = await routed_case(stack, producer, m)
    referral = (await referrals_of(stack, m, case["case_id"], 1))[0]
    receiver = stack.auth("social_services", m, member_id=ss["id"])
    responses = await asyncio.gather(
        *[stack.referral.post(f"/v1/referrals/{referral['id']}/acknowledge", headers=receiver) for _ in range(12)]
    )
    assert sorted(r.status_code for r in responses) == [200] + [409] * 11
    changes = await published(stack, "referral.status_changed", referral_id=referral["id"])
    assert len(changes) == 1


async def test_concurrent_manual_referrals_to_one_member_make_one(stack: Stack, producer: AIOKafkaProducer) -> None:
    m = new_municipality()
    ngo = await add_member(stack, m, "ngo")
    case = await routed_case(stack, producer, m, consent_share_with=["ngo"])
    body = {"case_id": case["case_id"], "to_member_id": ngo["id"], "urgency": "normal"}
    coordinator = stack.auth("coordinator", m)
    responses = await asyncio.gather(
        *[stack.referral.post("/v1/referrals", json=body, headers=coordinator) for _ in range(8)]
    )
    assert sorted(r.status_code for r in responses) == [201] + [409] * 7


async def test_projection_follows_consent_changes_closure_and_reopening(
    stack: Stack, producer: AIOKafkaProducer
) -> None:
    m = new_municipality()
    legal = await add_member(stack, m, "legal_aid")
    case = await routed_case(stack, producer, m, consent_share_with=["social_services"], risk_level="medium")
    ids = {"case_id": case["case_id"], "case_number": case["case_number"]}
    await produce(producer, stack.settings, "case.consent_changed", m,
                  {**ids, "share_with": ["social_services", "legal_aid"], "withdrawn": []})  # fmt: skip
    coordinator = stack.auth("coordinator", m)
    body = {"case_id": case["case_id"], "to_member_id": legal["id"], "urgency": "high"}

    async def accepted_without_override() -> bool:
        response = await stack.referral.post("/v1/referrals", json=body, headers=coordinator)
        return response.status_code == 201

    await wait_for(accepted_without_override, what="consent change to reach referral")

    async def open_medium() -> int:
        board = (await stack.referral.get("/v1/dashboard", headers=coordinator)).json()
        return int(board["open_cases_by_risk_level"]["medium"])

    assert await open_medium() == 1
    await produce(producer, stack.settings, "case.closed", m, {**ids, "closed_at": "2026-11-21T10:00:00+00:00"})

    async def closed() -> bool:
        return await open_medium() == 0

    await wait_for(closed, what="case.closed in the dashboard")
    await produce(producer, stack.settings, "case.reopened", m, ids)
    assert await wait_for(open_medium, what="case.reopened in the dashboard") == 1

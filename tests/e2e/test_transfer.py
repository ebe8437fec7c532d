"""A survivor moves from Elbasan to Korçë: the case follows her through every service (CONTRACT §10).

A private stack (own databases and topics, so the real slugs `elbasan` and `korce` are this test's
alone). Referral's consumer is stopped in the middle of applying the move (its handler done, the
transaction not committed) and started again: nothing is lost or doubled.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Any

import pytest

from mkr.registry import SERVICES
from services.notifications.config import NotificationsConfig
from shared import db
from shared.events import REFERRAL_TOPIC
from shared.settings import Settings
from tests.support import Stack, contract_report, read_envelopes, running_stack, wait_for

ELBASAN, KORCE = "elbasan", "korce"


@pytest.fixture
async def private(settings: Settings) -> AsyncIterator[Settings]:
    run = uuid.uuid4().hex[:6]
    own = settings.model_copy(
        update={"database_prefix": f"{settings.database_prefix}tf{run}_", "kafka_topic_prefix": f"tf{run}."}
    )
    try:
        yield own
    finally:
        for service in SERVICES:
            await db.drop_database(own, service)


async def _member(stack: Stack, municipality: str, kind: str) -> str:
    response = await stack.referral.post(
        "/v1/members",
        json={"name": f"{kind} office", "kind": kind, "municipality": municipality},
        headers=stack.auth("admin", municipality),
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _referrals(stack: Stack, municipality: str, case_id: str) -> list[dict[str, Any]]:
    response = await stack.referral.get(
        "/v1/referrals", params={"case_id": case_id}, headers=stack.auth("coordinator", municipality)
    )
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def _alerts(stack: Stack, municipality: str, case_id: str) -> list[str]:
    response = await stack.notifications.get(
        "/v1/inbox", headers={**stack.auth("coordinator", municipality), "Accept-Language": "en"}
    )
    assert response.status_code == 200, response.text
    items = response.json()["items"]
    return sorted(a["type"] for a in items if a["case_id"] == case_id and a["type"].startswith("transfer."))


async def _summary(stack: Stack, municipality: str) -> dict[str, Any]:
    today = datetime.now(UTC).date().isoformat()
    response = await stack.referral.get(
        "/v1/reports/summary",
        params={"municipality": municipality, "from": today, "to": today},
        headers=stack.auth("coordinator", municipality),
    )
    assert response.status_code == 200, response.text
    return dict(response.json()["cases"])


async def _placed(stack: Stack, case_id: str) -> tuple[str, str]:
    """A shelter in Elbasan, the survivor and her child placed there; returns (shelter id, placement id)."""
    coordinator = stack.auth("coordinator", ELBASAN)
    shelter = await stack.shelter.post(
        "/v1/shelters",
        json={"name": "Strehëza", "operator": "Bashkia", "kind": "emergency", "municipality": ELBASAN,
              "capacity": 5, "accepts_children": True, "address": "Rruga e Testit 9", "phone": "+355000"},
        headers=coordinator,
    )
    assert shelter.status_code == 201, shelter.text
    body = {"case_id": case_id, "shelter_id": shelter.json()["id"], "adults": 1, "children": 1,
            "planned_until": date(2027, 6, 30).isoformat()}
    placement = await stack.shelter.post("/v1/placements", json=body, headers=coordinator)
    assert placement.status_code == 201, placement.text
    return str(shelter.json()["id"]), str(placement.json()["id"])


async def _rent_bonus(stack: Stack, case_id: str) -> str:
    housing = stack.auth("housing_officer", ELBASAN)
    year = datetime.now(UTC).year + 1  # the bonus starts next January, against next year's budget
    budget = await stack.shelter.put(
        f"/v1/rent-bonus/budgets/{ELBASAN}/{year}", json={"amount": "600000"}, headers=housing
    )
    assert budget.status_code == 200, budget.text
    body = {"case_id": case_id, "municipality": ELBASAN, "monthly_rent": "20000", "household_size": 2,
            "requested_months": 6}
    application = await stack.shelter.post("/v1/rent-bonus/applications", json=body, headers=housing)
    assert application.status_code == 201, application.text
    decision = {"approved": True, "monthly_amount": "15000", "start_month": f"{year}-01", "months": 6,
                "reason": "Lease notarised"}
    decided = await stack.shelter.post(
        f"/v1/rent-bonus/applications/{application.json()['id']}/decision", json=decision, headers=housing
    )
    assert decided.status_code == 200, decided.text
    return str(application.json()["id"])


async def test_a_case_moves_from_elbasan_to_korce_through_every_service(private: Settings) -> None:
    others = ("intake", "shelter", "notifications")
    options = {"notifications": {"config": NotificationsConfig(scan_seconds=0.5)}}
    async with running_stack(private, others, options) as stack, running_stack(private, ("referral",)) as ref:
        stack.apps["referral"], stack.clients["referral"] = ref.apps["referral"], ref.clients["referral"]
        for municipality in (ELBASAN, KORCE):
            await _member(stack, municipality, "social_services")
            await _member(stack, municipality, "legal_aid")
        korce_social = await _member(stack, KORCE, "social_services")  # a second: routing takes the first

        body = contract_report(ELBASAN, needs=["legal_aid"])
        body["consent"]["share_with"] = ["police", "social_services", "legal_aid"]
        police = stack.auth("police", ELBASAN, member_id="m-police-elbasan")
        created = await stack.intake.post("/v1/cases", json=body, headers=police)
        assert created.status_code == 201, created.text
        case = created.json()

        async def two_open_in_elbasan() -> list[dict[str, Any]]:
            found = await _referrals(stack, ELBASAN, case["id"])
            return found if len(found) == 2 else []

        sent = await wait_for(two_open_in_elbasan, timeout=30, what="Elbasan's automatic referrals")
        assert {r["to_member_kind"] for r in sent} == {"social_services", "legal_aid"}

        async def placed() -> tuple[str, str] | None:
            try:
                return await _placed(stack, case["id"])
            except AssertionError:
                return None

        shelter_id, placement_id = await wait_for(placed, timeout=20, what="a placement in Elbasan")
        application_id = await _rent_bonus(stack, case["id"])

        # The request: both coordinators hear of it; Korçë sees coded facts only.
        elbasan, korce = stack.auth("coordinator", ELBASAN), stack.auth("coordinator", KORCE)
        requested = await stack.intake.post(
            f"/v1/cases/{case['id']}/transfers",
            json={"to_municipality": KORCE, "reason": "She went to her sister",
                  "consent_given_at": case["reported_at"]},
            headers=elbasan,
        )
        assert requested.status_code == 201, requested.text
        transfer = requested.json()

        async def requested_alerts() -> bool:
            return await _alerts(stack, ELBASAN, case["id"]) == ["transfer.requested"] and await _alerts(
                stack, KORCE, case["id"]
            ) == ["transfer.incoming"]

        await wait_for(requested_alerts, timeout=20, what="the request's alerts on both sides")

        # Referral's consumer is stopped in the middle of applying the move: its handler has cancelled,
        # routed and published, the transaction is not committed yet. Then it is started again.
        consumer = ref.apps["referral"].state.runtime.consumers[0]
        applying, handler = asyncio.Event(), consumer.handler

        async def stalls_once(session: Any, event: Any) -> None:
            await handler(session, event)
            if event.type == "case.transferred" and not applying.is_set():
                applying.set()
                await asyncio.sleep(60)  # stopped here, before the commit

        consumer.handler = stalls_once
        accepted = await stack.intake.post(f"/v1/transfers/{transfer['id']}/accept", headers=korce)
        assert accepted.status_code == 200, accepted.text
        new_number = accepted.json()["new_case_number"]
        assert new_number.startswith("KOR-")
        await asyncio.wait_for(applying.wait(), timeout=30)
        await consumer.stop()
        assert [r["status"] for r in await _referrals(stack, ELBASAN, case["id"])] == ["pending", "pending"]
        assert await _referrals(stack, KORCE, case["id"]) == []  # nothing of the half-applied move is visible
        consumer.handler = handler
        await consumer.start()

        async def moved_in_referral() -> list[dict[str, Any]]:
            cancelled = [r for r in sent if r["status"] == "pending"]
            now = {r["id"]: r for r in await _referrals(stack, ELBASAN, case["id"])}
            if not all(now[r["id"]]["status"] == "cancelled" for r in cancelled):
                return []
            received = await _referrals(stack, KORCE, case["id"])
            return received if len(received) == 2 else []

        received = await wait_for(moved_in_referral, timeout=60, what="referrals cancelled in Elbasan, made in Korçë")
        assert {r["to_member_kind"] for r in received} == {"social_services", "legal_aid"}
        assert all(r["case_number"] == new_number and r["municipality"] == KORCE for r in received)
        assert korce_social not in {r["to_member_id"] for r in received}  # the first of the kind, by Korçë's rules
        for referral in await _referrals(stack, ELBASAN, case["id"]):
            reasons = [h.get("reason") for h in referral["history"] if h["status"] == "cancelled"]
            assert reasons == ["transferred"], referral["history"]

        # Nothing doubled by the restarts: one cancellation event per Elbasan referral, one set of new ones.
        await asyncio.sleep(2)
        events = await read_envelopes(private, REFERRAL_TOPIC, want=8, timeout=15)
        cancellations = [
            e for e in events if e.type == "referral.status_changed" and e.data.get("reason") == "transferred"
        ]
        assert sorted(e.data["referral_id"] for e in cancellations) == sorted(r["id"] for r in sent)
        created_in_korce = [e for e in events if e.type == "referral.created" and e.municipality == KORCE]
        assert len(created_in_korce) == 2
        assert len(await _referrals(stack, KORCE, case["id"])) == 2

        # Intake: Korçë's case now; Elbasan and its institutions get 404; Korçë's referred institution reads it.
        assert (await stack.intake.get(f"/v1/cases/{case['id']}", headers=elbasan)).status_code == 404
        assert (await stack.intake.get(f"/v1/cases/{case['id']}", headers=police)).status_code == 404
        read = await stack.intake.get(f"/v1/cases/{case['id']}", headers=korce)
        assert read.status_code == 200 and read.json()["previous_case_numbers"] == [case["case_number"]]
        social = next(r for r in received if r["to_member_kind"] == "social_services")
        institution = stack.auth("social_services", KORCE, member_id=social["to_member_id"])

        async def institution_reads() -> bool:
            return (await stack.intake.get(f"/v1/cases/{case['id']}", headers=institution)).status_code == 200

        await wait_for(institution_reads, timeout=20, what="Korçë's social services reading the case")

        # Shelter: the placement and the rent bonus continue, now Korçë's to see.
        async def korce_sees_placement() -> bool:
            found = await stack.shelter.get("/v1/placements", params={"case_id": case["id"]}, headers=korce)
            return [p["id"] for p in found.json()["items"]] == [placement_id]

        await wait_for(korce_sees_placement, timeout=20, what="Korçë's coordinator seeing the placement")
        sender_view = await stack.shelter.get("/v1/placements", params={"case_id": case["id"]}, headers=elbasan)
        assert sender_view.json()["items"] == []
        staff = stack.auth("shelter_staff", ELBASAN, shelter_id=shelter_id)
        staff_view = await stack.shelter.get("/v1/placements", headers=staff)
        assert [p["id"] for p in staff_view.json()["items"]] == [placement_id]
        url = f"/v1/rent-bonus/applications/{application_id}"
        bonus = await stack.shelter.get(url, headers=stack.auth("housing_officer", KORCE))
        assert bonus.status_code == 200 and len(bonus.json()["payments"]) == 6
        assert (await stack.shelter.get(url, headers=stack.auth("housing_officer", ELBASAN))).status_code == 404

        # Reports: Elbasan keeps counting it where it was reported, as transferred out; Korçë counts it in.
        sender_cases, receiver_cases = await _summary(stack, ELBASAN), await _summary(stack, KORCE)
        assert sender_cases["total"] == 1 and sender_cases["transferred_out"] == 1
        assert sender_cases["by_ethnicity"].get("roma") == 1
        assert receiver_cases["total"] == 0 and receiver_cases["transferred_in"] == 1
        dashboard = await stack.referral.get("/v1/dashboard", headers=korce)
        assert sum(dashboard.json()["open_cases_by_risk_level"].values()) == 1
        dashboard = await stack.referral.get("/v1/dashboard", headers=elbasan)
        assert sum(dashboard.json()["open_cases_by_risk_level"].values()) == 0

        # Notifications: one "transferred" alert to each coordinator.
        async def accepted_alerts() -> bool:
            return "transfer.accepted" in await _alerts(stack, ELBASAN, case["id"]) and "transfer.accepted" in (
                await _alerts(stack, KORCE, case["id"])
            )

        await wait_for(accepted_alerts, timeout=20, what="the accept's alerts on both sides")
        assert await _alerts(stack, ELBASAN, case["id"]) == ["transfer.accepted", "transfer.requested"]
        assert await _alerts(stack, KORCE, case["id"]) == ["transfer.accepted", "transfer.incoming"]
        inbox = await stack.notifications.get("/v1/inbox", headers={**korce, "Accept-Language": "en"})
        text = next(a["body"] for a in inbox.json()["items"] if a["type"] == "transfer.accepted")
        assert case["case_number"] in text and new_number in text
        for identity in ("Ermira", "Hoxha", "sister"):
            assert identity not in inbox.text

"""Events from the other services become alerts in the right inboxes, once, live, in two languages."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.notifications.conftest import Produce, serve
from tests.support import Stack, new_municipality, wait_for


def case_reported(risk_level: str = "high", **extra: Any) -> dict[str, Any]:
    case_id = str(uuid.uuid4())
    return {
        "case_id": case_id,
        "case_number": f"ELB-2026-{uuid.uuid4().int % 100000:05d}",
        "source": "police",
        "reported_at": datetime.now(UTC).isoformat(),
        "risk_level": risk_level,
        "sex": "female",
        "age_group": "25-39",
        "ethnicity": None,
        "disability": False,
        "violence_types": ["physical"],
        "perpetrator_relationship": "spouse",
        "needs": ["shelter"],
        "children_count": 0,
        "children_ages": [],
        "consent_share_with": ["police"],
        "reported_by_role": "police",
        "reported_by_member_id": str(uuid.uuid4()),
        **extra,
    }


async def inbox_of(stack: Stack, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = await stack.notifications.get("/v1/inbox", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


async def alerts_for_case(
    stack: Stack, headers: dict[str, str], case_id: str, *, expect: int = 1, timeout: float = 10
) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]]:
        found = [a for a in await inbox_of(stack, headers) if a["case_id"] == case_id]
        return found if len(found) >= expect else []

    return await wait_for(probe, timeout=timeout, what=f"{expect} alert(s) for case {case_id}")


async def read_sse(response: httpx.Response, frames: asyncio.Queue[dict[str, str]]) -> None:
    frame: dict[str, str] = {}
    async for line in response.aiter_lines():
        if line == "":
            if frame:
                await frames.put(frame)
            frame = {}
        elif line.startswith(":"):
            frame.setdefault("comment", line[1:].strip())
        else:
            name, _, value = line.partition(":")
            frame[name] = value.removeprefix(" ")


async def next_alert(frames: asyncio.Queue[dict[str, str]], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        frame = await asyncio.wait_for(frames.get(), timeout=max(0.01, deadline - time.monotonic()))
        if frame.get("event") == "alert":
            return frame


async def test_high_risk_case_reaches_coordinator_inbox_and_open_stream_within_two_seconds(
    ready: Stack, produce: Produce
) -> None:
    stack = ready
    town = new_municipality()
    coordinator = stack.auth("coordinator", town)
    data = case_reported("high")
    async with serve(stack.apps["notifications"]) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        async with client.stream("GET", "/v1/inbox/stream", headers=coordinator) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            frames: asyncio.Queue[dict[str, str]] = asyncio.Queue()
            reader = asyncio.create_task(read_sse(response, frames))
            try:
                first = await asyncio.wait_for(frames.get(), timeout=5)
                assert first.get("comment") == "connected"
                started = time.monotonic()
                await produce("intake", "case.reported", town, data)
                frame = await next_alert(frames, timeout=2.0)
                elapsed = time.monotonic() - started
            finally:
                reader.cancel()
    alert = json.loads(frame["data"])
    assert elapsed < 2.0
    assert alert["case_id"] == data["case_id"]
    assert alert["type"] == "case.high_risk" and alert["severity"] == "critical"
    assert data["case_number"] in alert["body"]
    assert int(frame["id"]) == alert["seq"]
    inbox = await alerts_for_case(stack, coordinator, data["case_id"], timeout=2)
    assert inbox[0]["id"] == alert["id"]
    assert set(inbox[0]) >= {"id", "type", "severity", "title", "body", "case_id", "created_at", "read_at"}


async def test_same_event_delivered_twice_makes_one_alert(ready: Stack, produce: Produce) -> None:
    stack, town = ready, new_municipality()
    coordinator = stack.auth("coordinator", town)
    data = case_reported("high")
    event_id = str(uuid.uuid4())
    await produce("intake", "case.reported", town, data, event_id=event_id)
    await produce("intake", "case.reported", town, data, event_id=event_id)
    # A later event of the same case (same partition) proves the repeat has been consumed.
    gap = {"case_id": data["case_id"], "case_number": data["case_number"], "missing_kind": "shelter", "rule": "r"}
    await produce("referral", "mechanism.gap", town, gap)
    alerts = await alerts_for_case(stack, coordinator, data["case_id"], expect=2)
    assert sorted(a["type"] for a in alerts) == ["case.high_risk", "mechanism.gap"]


async def test_english_and_albanian_texts_differ_and_name_only_the_case_number(ready: Stack, produce: Produce) -> None:
    stack, town = ready, new_municipality()
    coordinator = stack.auth("coordinator", town)
    data = case_reported("high")
    await produce("intake", "case.reported", town, data)
    [albanian] = await alerts_for_case(stack, coordinator, data["case_id"])
    response = await stack.notifications.get("/v1/inbox", headers={**coordinator, "Accept-Language": "en-GB,en;q=0.9"})
    [english] = [a for a in response.json()["items"] if a["case_id"] == data["case_id"]]
    assert response.headers["content-language"] == "en"
    assert albanian["id"] == english["id"]
    assert (albanian["title"], albanian["body"]) != (english["title"], english["body"])
    assert english["title"] == f"High-risk case {data['case_number']}"
    assert "rrezik të lartë" in albanian["title"]
    for alert in (albanian, english):
        assert data["case_number"] in alert["body"]


async def test_new_referral_alerts_the_receiving_member_and_only_the_addressee_may_mark_it_read(
    ready: Stack, produce: Produce
) -> None:
    stack, town = ready, new_municipality()
    member, other = str(uuid.uuid4()), str(uuid.uuid4())
    receiver = stack.auth("social_services", town, member_id=member)
    colleague = stack.auth("social_services", town, member_id=other)
    case_id = str(uuid.uuid4())
    await produce(
        "referral",
        "referral.created",
        town,
        {
            "referral_id": str(uuid.uuid4()),
            "case_id": case_id,
            "case_number": "ELB-2026-00042",
            "to_member_id": member,
            "to_member_kind": "social_services",
            "service": "psychological",
            "urgency": "emergency",
            "reason": "routing",
            "status": "pending",
            "ack_due_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
            "consent_override": False,
            "legal_exception": None,
        },
    )
    [alert] = await alerts_for_case(stack, receiver, case_id)
    assert alert["type"] == "referral.new" and alert["severity"] == "critical"
    assert "ELB-2026-00042" in alert["body"]
    assert [a for a in await inbox_of(stack, colleague) if a["case_id"] == case_id] == []
    assert [a for a in await inbox_of(stack, stack.auth("coordinator", town)) if a["case_id"] == case_id] == []

    refused = await stack.notifications.post(f"/v1/inbox/{alert['id']}/read", headers=colleague)
    assert refused.status_code == 404
    elsewhere = stack.auth("social_services", new_municipality(), member_id=member)
    assert (await stack.notifications.post(f"/v1/inbox/{alert['id']}/read", headers=elsewhere)).status_code == 404
    # Many concurrent reads by the addressee: all succeed, one read_at.
    results = await asyncio.gather(
        *(stack.notifications.post(f"/v1/inbox/{alert['id']}/read", headers=receiver) for _ in range(12))
    )
    assert {r.status_code for r in results} == {200}
    assert len({r.json()["read_at"] for r in results}) == 1
    assert [a for a in await inbox_of(stack, receiver, unread="true") if a["case_id"] == case_id] == []
    assert (await stack.notifications.post("/v1/inbox/not-a-uuid/read", headers=receiver)).status_code == 422


async def test_missed_acknowledgement_alerts_coordinator_and_institution(ready: Stack, produce: Produce) -> None:
    stack, town = ready, new_municipality()
    member = str(uuid.uuid4())
    case_id = str(uuid.uuid4())
    await produce(
        "referral",
        "referral.sla_breached",
        town,
        {
            "referral_id": str(uuid.uuid4()),
            "case_id": case_id,
            "case_number": "ELB-2026-00043",
            "to_member_id": member,
            "to_member_kind": "police",
            "urgency": "emergency",
            "ack_due_at": datetime.now(UTC).isoformat(),
        },
    )
    for headers in (stack.auth("coordinator", town), stack.auth("police", town, member_id=member)):
        [alert] = await alerts_for_case(stack, headers, case_id)
        assert alert["type"] == "referral.sla_breached" and alert["severity"] == "critical"


async def test_overdue_plan_action_alerts_coordinator_and_responsible_member(ready: Stack, produce: Produce) -> None:
    stack, town = ready, new_municipality()
    member = str(uuid.uuid4())
    case_id = str(uuid.uuid4())
    await produce(
        "referral",
        "plan.action_overdue",
        town,
        {
            "action_id": str(uuid.uuid4()),
            "case_id": case_id,
            "case_number": "ELB-2026-00044",
            "responsible_member_id": member,
            "due_date": "2026-11-01",
        },
    )
    for headers in (stack.auth("coordinator", town), stack.auth("health", town, member_id=member)):
        [alert] = await alerts_for_case(stack, headers, case_id)
        assert alert["type"] == "plan.action_overdue"
        assert "2026-11-01" in alert["body"]


async def test_rent_bonus_ending_and_payment_due_alert_housing_office_and_coordinator(
    ready: Stack, produce: Produce
) -> None:
    stack, town = ready, new_municipality()
    case_id, application = str(uuid.uuid4()), str(uuid.uuid4())
    common = {"application_id": application, "case_id": case_id, "case_number": "ELB-2026-00045"}
    await produce("shelter", "rent_bonus.ending", town, {**common, "last_month": "2026-12"})
    await produce(
        "shelter",
        "rent_bonus.payment_due",
        town,
        {**common, "payment_id": str(uuid.uuid4()), "month": "2026-11", "amount": "15000.00"},
    )
    for headers in (stack.auth("housing_officer", town), stack.auth("coordinator", town)):
        alerts = await alerts_for_case(stack, headers, case_id, expect=2)
        assert sorted(a["type"] for a in alerts) == ["rent_bonus.ending", "rent_bonus.payment_due"]
        assert any("15000.00" in a["body"] for a in alerts)


async def test_shelter_full_and_no_free_bed_alert_the_coordinator_once_until_a_bed_frees(
    ready: Stack, produce: Produce
) -> None:
    stack, town = ready, new_municipality()
    coordinator = stack.auth("coordinator", town)
    first, second = str(uuid.uuid4()), str(uuid.uuid4())

    def beds(shelter_id: str, free: int) -> dict[str, Any]:
        return {
            "shelter_id": shelter_id,
            "member_id": str(uuid.uuid5(uuid.NAMESPACE_URL, shelter_id)),
            "kind": "shelter",
            "capacity": 4,
            "free_beds": free,
            "accepts_children": True,
        }

    async def count(alert_type: str, n: int) -> list[dict[str, Any]]:
        async def probe() -> list[dict[str, Any]]:
            found = [a for a in await inbox_of(stack, coordinator) if a["type"] == alert_type]
            return found if len(found) >= n else []

        return await wait_for(probe, timeout=10, what=f"{n} {alert_type} alert(s)")

    # One partition for the test, so the shelters' events are consumed in the order sent.
    await produce("shelter", "shelter.availability_changed", town, beds(first, 2), key=town)
    await produce("shelter", "shelter.full", town, beds(second, 0), key=town)
    await count("shelter.full", 1)
    await produce("shelter", "shelter.full", town, beds(first, 0), key=town)
    await count("shelter.full", 2)
    [none_free] = await count("shelter.none_available", 1)
    assert none_free["severity"] == "critical"
    await produce("shelter", "shelter.full", town, beds(first, 0), key=town)  # still none: no second alert
    await count("shelter.full", 3)
    await produce("shelter", "shelter.availability_changed", town, beds(first, 1), key=town)
    await produce("shelter", "shelter.full", town, beds(first, 0), key=town)
    await count("shelter.full", 4)
    await count("shelter.none_available", 2)
    await asyncio.sleep(1)
    assert len([a for a in await inbox_of(stack, coordinator) if a["type"] == "shelter.none_available"]) == 2


async def test_inbox_pages_newest_first_with_an_opaque_cursor(ready: Stack, produce: Produce) -> None:
    stack, town = ready, new_municipality()
    coordinator = stack.auth("coordinator", town)
    case_ids = []
    for _ in range(5):
        data = case_reported("medium")
        case_ids.append(data["case_id"])
        await produce("intake", "case.reported", town, data)
    await wait_for(lambda: _count(stack, coordinator, 5), timeout=10, what="five alerts")
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        response = await stack.notifications.get("/v1/inbox", headers=coordinator, params=params)
        assert response.status_code == 200
        seen.extend(response.json()["items"])
        cursor = response.json()["next_cursor"]
        assert response.headers.get("x-next-cursor") == cursor  # the first release's header, kept
        if not cursor:
            break
    assert len(seen) == 5 and len({a["id"] for a in seen}) == 5
    assert [a["seq"] for a in seen] == sorted((a["seq"] for a in seen), reverse=True)
    assert {a["case_id"] for a in seen} == set(case_ids)
    bad = await stack.notifications.get("/v1/inbox", headers=coordinator, params={"cursor": "!!nope"})
    assert bad.status_code == 422
    assert bad.headers["content-type"].startswith("application/problem+json")
    too_many = await stack.notifications.get("/v1/inbox", headers=coordinator, params={"limit": 10**12})
    assert too_many.status_code == 422


async def _count(stack: Stack, headers: dict[str, str], n: int) -> bool:
    return len(await inbox_of(stack, headers)) >= n


async def test_stream_replays_alerts_after_last_event_id_then_goes_live(ready: Stack, produce: Produce) -> None:
    stack, town = ready, new_municipality()
    coordinator = stack.auth("coordinator", town)
    first, second, third = case_reported("high"), case_reported("high"), case_reported("high")
    await produce("intake", "case.reported", town, first)
    [alert_one] = await alerts_for_case(stack, coordinator, first["case_id"])
    await produce("intake", "case.reported", town, second)
    [alert_two] = await alerts_for_case(stack, coordinator, second["case_id"])
    headers = {**coordinator, "Last-Event-ID": str(alert_one["seq"]), "Accept-Language": "en"}
    async with serve(stack.apps["notifications"]) as base, httpx.AsyncClient(base_url=base, timeout=10) as client:
        async with client.stream("GET", "/v1/inbox/stream", headers=headers) as response:
            frames: asyncio.Queue[dict[str, str]] = asyncio.Queue()
            reader = asyncio.create_task(read_sse(response, frames))
            try:
                replayed = await next_alert(frames, timeout=5)
                await produce("intake", "case.reported", town, third)
                live = await next_alert(frames, timeout=5)
            finally:
                reader.cancel()
    assert json.loads(replayed["data"])["id"] == alert_two["id"]
    assert replayed["id"] == str(alert_two["seq"])
    assert json.loads(replayed["data"])["title"].startswith("High-risk case")
    assert json.loads(live["data"])["case_id"] == third["case_id"]
    assert int(live["id"]) > int(replayed["id"])


async def test_stream_refuses_a_malformed_last_event_id(ready: Stack) -> None:
    headers = {**ready.auth("coordinator", new_municipality()), "Last-Event-ID": "abc"}
    response = await ready.notifications.get("/v1/inbox/stream", headers=headers)
    assert response.status_code == 422
    assert (await ready.notifications.get("/v1/inbox")).status_code == 401

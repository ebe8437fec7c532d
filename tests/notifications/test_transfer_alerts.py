"""Transfer alerts (CONTRACT §10): both coordinators hear of a decline, and of a transfer left pending
longer than `transfer_pending_hours` — once (a private stack whose hours are a few seconds)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.notifications.config import NotificationsConfig
from shared import db
from shared.settings import Settings
from tests.notifications.conftest import FastStack, WebhookReceiver
from tests.support import Stack, contract_report, new_municipality, running_stack, wait_for

HOURS = 0.002  # 7.2 seconds


@pytest.fixture
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    run = uuid.uuid4().hex[:6]
    own = settings.model_copy(
        update={"database_prefix": f"{settings.database_prefix}ta{run}_", "kafka_topic_prefix": f"ta{run}."}
    )
    options = {"notifications": {"config": NotificationsConfig(scan_seconds=0.3, transfer_pending_hours=HOURS)}}
    try:
        async with running_stack(own, ("intake", "notifications"), options) as running:
            yield running
    finally:
        for service in ("intake", "notifications"):
            await db.drop_database(own, service)


async def _transfer(stack: Stack, to: str) -> tuple[dict[str, Any], dict[str, Any]]:
    coordinator = stack.auth("coordinator", "elbasan")
    case = (await stack.intake.post("/v1/cases", json=contract_report("elbasan"), headers=coordinator)).json()
    body = {"to_municipality": to, "reason": "moved", "consent_given_at": case["reported_at"]}
    response = await stack.intake.post(f"/v1/cases/{case['id']}/transfers", json=body, headers=coordinator)
    assert response.status_code == 201, response.text
    return case, response.json()


async def _alerts(stack: Stack, municipality: str, case_id: str, language: str = "en") -> list[dict[str, Any]]:
    headers = {**stack.auth("coordinator", municipality), "Accept-Language": language}
    response = await stack.notifications.get("/v1/inbox", headers=headers)
    assert response.status_code == 200, response.text
    return [a for a in response.json()["items"] if a["case_id"] == case_id and a["type"].startswith("transfer.")]


async def test_decline_and_a_long_pending_transfer_alert_both_coordinators_once(stack: Stack) -> None:
    declined_case, declined = await _transfer(stack, "tirane")
    answer = await stack.intake.post(
        f"/v1/transfers/{declined['id']}/decline",
        json={"reason": "No capacity"},
        headers=stack.auth("coordinator", "tirane"),
    )
    assert answer.status_code == 200, answer.text

    async def decline_alerts() -> bool:
        sender = {a["type"] for a in await _alerts(stack, "elbasan", declined_case["id"])}
        receiver = {a["type"] for a in await _alerts(stack, "tirane", declined_case["id"])}
        return sender == {"transfer.requested", "transfer.declined"} and receiver == {
            "transfer.incoming", "transfer.declined"
        }

    await wait_for(decline_alerts, timeout=20, what="the decline's alerts on both sides")

    case, _ = await _transfer(stack, "korce")

    async def overdue() -> bool:
        sender = [a for a in await _alerts(stack, "elbasan", case["id"]) if a["type"] == "transfer.overdue"]
        receiver = [a for a in await _alerts(stack, "korce", case["id"]) if a["type"] == "transfer.overdue"]
        return bool(sender and receiver)

    await wait_for(overdue, timeout=40, what="the pending transfer's alerts on both sides")
    await asyncio.sleep(2)  # several more scans: still once
    for municipality in ("elbasan", "korce"):
        alerts = [a for a in await _alerts(stack, municipality, case["id"]) if a["type"] == "transfer.overdue"]
        assert len(alerts) == 1, alerts
        assert "korce" in alerts[0]["body"] and case["case_number"] in alerts[0]["body"]
    albanian = await _alerts(stack, "korce", case["id"], language="sq")
    assert any(a["title"].startswith("Transferim në pritje") for a in albanian)
    # The declined transfer is not pending: it never raises the long-pending alert.
    assert "transfer.overdue" not in {a["type"] for a in await _alerts(stack, "elbasan", declined_case["id"])}
    assert (await stack.notifications.get("/readyz")).status_code == 200


async def test_both_municipalities_webhooks_receive_a_transfer_event_once(
    fast: FastStack, webhook_receiver: WebhookReceiver
) -> None:
    sender, receiver, other = new_municipality(), new_municipality(), new_municipality()
    paths = {town: f"/transfers/{town}" for town in (sender, receiver, other)}
    for town, path in paths.items():
        body = {"url": webhook_receiver.url(path), "event_types": ["case.transfer_requested"], "secret": "s" * 24}
        created = await fast.stack.notifications.post(
            "/v1/subscriptions", json=body, headers=fast.stack.auth("coordinator", town)
        )
        assert created.status_code == 201, created.text
    data = {
        "case_id": str(uuid.uuid4()), "case_number": "ELB-2026-00001", "transfer_id": str(uuid.uuid4()),
        "from_municipality": sender, "to_municipality": receiver, "risk_level": "high",
        "requested_at": "2026-12-02T10:00:00+00:00",
    }
    event = await fast.produce("intake", "case.transfer_requested", sender, data)
    for town in (sender, receiver):
        [got] = await wait_for(
            lambda town=town: _at(webhook_receiver, paths[town]), timeout=20, what=f"{town}'s delivery"
        )
        assert got.headers["x-mkr-event-id"] == event["id"]
    await asyncio.sleep(1)
    assert webhook_receiver.at(paths[other]) == []
    assert [len(webhook_receiver.at(paths[town])) for town in (sender, receiver)] == [1, 1]
    listed = await fast.stack.notifications.get("/v1/deliveries", headers=fast.stack.auth("coordinator", receiver))
    assert [d["event_type"] for d in listed.json()["items"]] == ["case.transfer_requested"]


async def _at(receiver: WebhookReceiver, path: str) -> list[Any]:
    return receiver.at(path)


async def test_a_transferred_cases_expiring_order_warns_the_receiving_coordinator_not_the_sender(
    fast: FastStack,
) -> None:
    sender, receiver = new_municipality(), new_municipality()
    police = f"police-{uuid.uuid4().hex[:8]}"
    case = {"case_id": str(uuid.uuid4()), "case_number": "ELB-2026-00009", "risk_level": "medium"}
    await fast.produce("intake", "case.reported", sender, {**case, "reported_by_role": "police",
                                                            "reported_by_member_id": police})
    order = {**case, "order_id": str(uuid.uuid4()), "kind": "protection", "status": "issued"}
    later = (datetime.now(UTC) + timedelta(days=40)).isoformat()
    await fast.produce("intake", "case.protection_order_recorded", sender, {**order, "expires_at": later})
    moved = {**case, "case_number": "KOR-2026-00001", "previous_case_number": case["case_number"],
             "transfer_id": str(uuid.uuid4()), "from_municipality": sender, "to_municipality": receiver,
             "accepted_at": datetime.now(UTC).isoformat()}
    await fast.produce("intake", "case.transferred", receiver, moved)
    soon = (datetime.now(UTC) + timedelta(days=5)).isoformat()  # renewed by the receiving court: warn now
    renewed = {**order, "case_number": "KOR-2026-00001", "expires_at": soon}
    await fast.produce("intake", "case.protection_order_recorded", receiver, renewed)

    async def expiring(municipality: str, **claims: Any) -> list[dict[str, Any]]:
        role = "police" if claims else "coordinator"
        inbox = await fast.stack.notifications.get("/v1/inbox", headers=fast.stack.auth(role, municipality, **claims))
        items = inbox.json()["items"]
        return [a for a in items if a["type"] == "protection_order.expiring" and a["case_id"] == case["case_id"]]

    [alert] = await wait_for(lambda: expiring(receiver), timeout=20, what="the receiver's expiring-order alert")
    assert "KOR-2026-00001" in alert["body"]
    await asyncio.sleep(1)
    assert await expiring(sender) == []
    assert await expiring(sender, member_id=police) == []

"""Webhooks and e-mail: signed, retried with back-off, dead-lettered, delivered once per success."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaConsumer
from cloudevents.core.formats.json import JSONFormat

from tests.notifications.conftest import MAX_ATTEMPTS, FastStack, Mailbox, WebhookReceiver
from tests.support import new_municipality, wait_for

SECRET = "s3cret-for-tests-0123456789"


async def subscribe(fast: FastStack, headers: dict[str, str], url: str, types: list[str]) -> dict[str, Any]:
    response = await fast.stack.notifications.post(
        "/v1/subscriptions", headers=headers, json={"url": url, "event_types": types, "secret": SECRET}
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


async def deliveries(fast: FastStack, headers: dict[str, str], **params: Any) -> list[dict[str, Any]]:
    response = await fast.stack.notifications.get("/v1/deliveries", headers=headers, params=params)
    assert response.status_code == 200, response.text
    return list(response.json()["items"])


def case_data(**extra: Any) -> dict[str, Any]:
    return {"case_id": str(uuid.uuid4()), "case_number": "ELB-2026-00077", "risk_level": "high", **extra}


async def test_subscription_secret_is_shown_once_and_bad_requests_are_refused(
    fast: FastStack, webhook_receiver: WebhookReceiver
) -> None:
    stack, town = fast.stack, new_municipality()
    member = str(uuid.uuid4())
    police = stack.auth("police", town, member_id=member)
    created = await subscribe(fast, police, webhook_receiver.url("/once"), ["referral.created"])
    assert created["secret"] == SECRET and created["owner_member_id"] == member
    listed = (await stack.notifications.get("/v1/subscriptions", headers=police)).json()["items"]
    assert [s["id"] for s in listed] == [created["id"]]
    assert "secret" not in listed[0]

    post = stack.notifications.post
    bad_scheme = await post(
        "/v1/subscriptions", headers=police, json={"url": "ftp://127.0.0.1/x", "event_types": ["case.reported"]}
    )
    assert bad_scheme.status_code == 422
    link_local = await post(
        "/v1/subscriptions",
        headers=police,
        json={"url": "http://169.254.169.254/latest", "event_types": ["case.reported"]},
    )
    assert link_local.status_code == 422
    unknown = await post(
        "/v1/subscriptions", headers=police, json={"url": webhook_receiver.url("/x"), "event_types": ["nope"]}
    )
    assert unknown.status_code == 422 and unknown.json()["errors"]
    body = {"url": webhook_receiver.url("/x"), "event_types": ["case.reported"]}
    assert (await post("/v1/subscriptions", headers=stack.auth("shelter_staff", town), json=body)).status_code == 403
    assert (await post("/v1/subscriptions", headers=stack.auth("police", town), json=body)).status_code == 403
    generated = await post("/v1/subscriptions", headers=stack.auth("coordinator", town), json=body)
    assert generated.status_code == 201 and len(generated.json()["secret"]) >= 32

    other_member = stack.auth("police", town, member_id=str(uuid.uuid4()))
    other_town = stack.auth("police", new_municipality(), member_id=member)
    for headers in (other_member, other_town, stack.auth("coordinator", town)):
        assert (
            await stack.notifications.delete(f"/v1/subscriptions/{created['id']}", headers=headers)
        ).status_code == 404
        response = await stack.notifications.get(
            "/v1/deliveries", headers=headers, params={"subscription_id": created["id"]}
        )
        assert response.status_code == 404
    assert (await stack.notifications.delete(f"/v1/subscriptions/{created['id']}", headers=police)).status_code == 204
    emptied = await stack.notifications.get("/v1/subscriptions", headers=police)
    assert emptied.json() == {"items": [], "next_cursor": None}


async def test_webhook_delivery_is_signed_with_the_subscription_secret(
    fast: FastStack, webhook_receiver: WebhookReceiver
) -> None:
    town = new_municipality()
    coordinator = fast.stack.auth("coordinator", town)
    await subscribe(fast, coordinator, webhook_receiver.url(f"/signed/{town}"), ["case.reported"])
    event = await fast.produce("intake", "case.reported", town, case_data())
    [received] = await wait_for(
        lambda: _at(webhook_receiver, f"/signed/{town}", 1), timeout=20, what="a signed webhook delivery"
    )
    expected = "sha256=" + hmac.new(SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    assert received.headers["x-mkr-signature"] == expected
    assert received.headers["x-mkr-event-id"] == event["id"]
    assert received.headers["content-type"] == "application/json"
    body = json.loads(received.body)
    assert body["id"] == event["id"] and body["type"] == "case.reported" and body["data"] == event["data"]
    # The envelope of §9, a strict CloudEvents 1.0 event (the producer's legacy `schema_version` is renamed).
    delivered = JSONFormat().read(None, received.body)
    assert delivered.get_id() == event["id"] and delivered.get_specversion() == "1.0"
    assert delivered.get_extension("schemaversion") == 1 and delivered.get_data() == event["data"]


async def _at(receiver: WebhookReceiver, path: str, n: int) -> list[Any]:
    found = receiver.at(path)
    return found if len(found) >= n else []


async def test_webhook_failing_three_times_then_recovering_gets_the_event_once_more_with_the_same_id(
    fast: FastStack, webhook_receiver: WebhookReceiver
) -> None:
    town = new_municipality()
    coordinator = fast.stack.auth("coordinator", town)
    path = f"/flaky/{town}"
    webhook_receiver.plans[path] = [500, 503, 502]
    subscription = await subscribe(fast, coordinator, webhook_receiver.url(path), ["case.reported"])
    event = await fast.produce("intake", "case.reported", town, case_data())
    received = await wait_for(lambda: _at(webhook_receiver, path, 4), timeout=20, what="four attempts")
    await asyncio.sleep(1.0)  # nothing more arrives after the success
    received = webhook_receiver.at(path)
    assert len(received) == 4
    assert {r.headers["x-mkr-event-id"] for r in received} == {event["id"]}
    assert len({r.body for r in received}) == 1
    [delivery] = await deliveries(fast, coordinator, subscription_id=subscription["id"])
    assert delivery["status"] == "succeeded" and delivery["attempts"] == 4
    assert [h["outcome"] for h in delivery["history"]] == ["failed", "failed", "failed", "succeeded"]
    assert [h["status_code"] for h in delivery["history"]] == [500, 503, 502, 200]
    # Back-off grows between attempts.
    times = [datetime.fromisoformat(h["at"]) for h in delivery["history"]]
    assert times[1] - times[0] >= timedelta(seconds=0.04)


async def test_dead_letter_after_max_attempts_is_listed_and_published_as_notification_failed(
    fast: FastStack, webhook_receiver: WebhookReceiver
) -> None:
    town = new_municipality()
    coordinator = fast.stack.auth("coordinator", town)
    path = f"/dead/{town}"
    webhook_receiver.always[path] = 500
    subscription = await subscribe(fast, coordinator, webhook_receiver.url(path), ["mechanism.gap"])
    data = {"case_id": str(uuid.uuid4()), "case_number": "ELB-2026-00078", "missing_kind": "shelter", "rule": "r"}
    event = await fast.produce("referral", "mechanism.gap", town, data)

    async def dead() -> list[dict[str, Any]]:
        return await deliveries(fast, coordinator, subscription_id=subscription["id"], status="dead")

    [delivery] = await wait_for(dead, timeout=20, what="a dead-lettered delivery")
    assert delivery["attempts"] == MAX_ATTEMPTS and delivery["event_id"] == event["id"]
    assert len(webhook_receiver.at(path)) == MAX_ATTEMPTS
    assert await deliveries(fast, coordinator, subscription_id=subscription["id"], status="pending") == []

    consumer = AIOKafkaConsumer(
        fast.settings.topic("mkr.notifications.events"),
        bootstrap_servers=fast.settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    try:
        failed: dict[str, Any] | None = None
        deadline = asyncio.get_running_loop().time() + 15
        while failed is None and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    value = json.loads(record.value or b"{}")
                    if value.get("type") == "notification.failed" and value["data"]["delivery_id"] == delivery["id"]:
                        failed = value
    finally:
        await asyncio.wait_for(consumer.stop(), timeout=10)
    assert failed is not None, "notification.failed was not published"
    assert failed["municipality"] == town and failed["source"] == "mkr/notifications"
    assert failed["data"] == {
        "delivery_id": delivery["id"],
        "subscription_id": subscription["id"],
        "event_id": event["id"],
        "event_type": "mechanism.gap",
        "channel": "webhook",
        "attempts": MAX_ATTEMPTS,
    }

    async def failure_alert() -> list[dict[str, Any]]:
        response = await fast.stack.notifications.get("/v1/inbox", headers=coordinator)
        return [a for a in response.json()["items"] if a["type"] == "notification.failed"]

    await wait_for(failure_alert, timeout=10, what="the coordinator's notification.failed alert")


async def test_institution_subscription_receives_only_events_naming_its_member(
    fast: FastStack, webhook_receiver: WebhookReceiver
) -> None:
    town = new_municipality()
    member, other = str(uuid.uuid4()), str(uuid.uuid4())
    path = f"/member/{town}"
    await subscribe(
        fast, fast.stack.auth("police", town, member_id=member), webhook_receiver.url(path), ["referral.created"]
    )

    def referral(to: str) -> dict[str, Any]:
        return {
            "referral_id": str(uuid.uuid4()),
            "case_id": str(uuid.uuid4()),
            "case_number": "ELB-2026-00079",
            "to_member_id": to,
            "to_member_kind": "police",
            "service": "police",
            "urgency": "normal",
            "reason": "routing",
            "status": "pending",
            "ack_due_at": datetime.now(UTC).isoformat(),
            "consent_override": False,
            "legal_exception": None,
        }

    await fast.produce("referral", "referral.created", town, referral(other))
    mine = await fast.produce("referral", "referral.created", town, referral(member))
    await fast.produce("referral", "referral.created", new_municipality(), referral(member))
    await wait_for(lambda: _at(webhook_receiver, path, 1), timeout=20, what="the member's referral")
    await asyncio.sleep(1.0)
    assert [r.headers["x-mkr-event-id"] for r in webhook_receiver.at(path)] == [mine["id"]]


async def test_email_alert_reaches_the_members_address_over_smtp(fast: FastStack, mailbox: Mailbox) -> None:
    town = new_municipality()
    member = str(uuid.uuid4())
    address = f"contact-{town}@police.test.invalid"
    await fast.produce(
        "referral",
        "member.saved",
        town,
        {"member_id": member, "name": "Policia Test", "kind": "police", "services": [], "email": address},
        key=member,
    )
    await asyncio.sleep(0.5)
    case_id = str(uuid.uuid4())
    await fast.produce(
        "referral",
        "referral.sla_breached",
        town,
        {
            "referral_id": str(uuid.uuid4()),
            "case_id": case_id,
            "case_number": "ELB-2026-00080",
            "to_member_id": member,
            "to_member_kind": "police",
            "urgency": "high",
            "ack_due_at": datetime.now(UTC).isoformat(),
        },
        key=member,
    )

    async def arrived() -> list[Any]:
        return [m for m in mailbox.messages if m["X-Rcpt-To"] == address]

    [message] = await wait_for(arrived, timeout=20, what="the e-mail at the loopback SMTP server")
    assert "ELB-2026-00080" in message["Subject"]
    text = message.get_payload(decode=True).decode()
    assert "ELB-2026-00080" in text and "Referral not acknowledged" in text


async def test_protection_order_expiring_within_fourteen_days_alerts_coordinator_and_police_once(
    fast: FastStack,
) -> None:
    """The coordinator and the police member involved in the case (referred to it) are alerted once;
    other police users are not (an expiring order names a survivor's case to whoever is told)."""
    stack, town = fast.stack, new_municipality()
    now = datetime.now(UTC)
    soon, later, requested = (case_data() for _ in range(3))
    police_member, other_police = str(uuid.uuid4()), str(uuid.uuid4())
    await fast.produce(
        "referral",
        "referral.created",
        town,
        {"referral_id": str(uuid.uuid4()), "case_id": soon["case_id"], "case_number": soon["case_number"],
         "to_member_id": police_member, "to_member_kind": "police", "urgency": "normal", "reason": "routing",
         "status": "pending", "ack_due_at": now.isoformat()},
    )  # fmt: skip

    async def involved() -> bool:
        engine = stack.apps["notifications"].state.runtime.engine
        async with engine.connect() as conn:
            found = await conn.scalar(
                sa.text("SELECT referred_member_id FROM case_police WHERE case_id = :c"), {"c": soon["case_id"]}
            )
        return found == police_member

    await wait_for(involved, timeout=15, what="the case's police member")

    def order(case: dict[str, Any], status: str, expires: datetime) -> dict[str, Any]:
        return {
            "case_id": case["case_id"],
            "case_number": case["case_number"],
            "order_id": str(uuid.uuid4()),
            "kind": "protection",
            "status": status,
            "issued_at": now.isoformat(),
            "expires_at": expires.isoformat(),
            "court": "Gjykata e Rrethit Gjyqësor Elbasan",
        }

    expiring = order(soon, "issued", now + timedelta(days=5))
    await fast.produce("intake", "case.protection_order_recorded", town, expiring)
    await fast.produce("intake", "case.protection_order_recorded", town, expiring)  # a repeat, new event id
    await fast.produce(
        "intake", "case.protection_order_recorded", town, order(later, "issued", now + timedelta(days=60))
    )
    await fast.produce("intake", "case.protection_order_recorded", town, order(requested, "requested", now))
    for headers in (stack.auth("coordinator", town), stack.auth("police", town, member_id=police_member)):

        async def alerts(headers: dict[str, str] = headers) -> list[dict[str, Any]]:
            response = await stack.notifications.get("/v1/inbox", headers=headers)
            return [a for a in response.json()["items"] if a["type"] == "protection_order.expiring"]

        [alert] = await wait_for(alerts, timeout=15, what="the protection-order expiry alert")
        assert alert["case_id"] == soon["case_id"] and soon["case_number"] in alert["body"]
    await asyncio.sleep(1.5)  # several scans later: still one alert each
    for headers in (stack.auth("coordinator", town), stack.auth("police", town, member_id=police_member)):
        response = await stack.notifications.get("/v1/inbox", headers=headers)
        assert len([a for a in response.json()["items"] if a["type"] == "protection_order.expiring"]) == 1
    for headers in (stack.auth("police", town), stack.auth("police", town, member_id=other_police)):
        response = await stack.notifications.get("/v1/inbox", headers=headers)
        assert [a for a in response.json()["items"] if a["type"] == "protection_order.expiring"] == []


async def test_two_delivery_workers_send_each_event_exactly_once(
    fast: FastStack, webhook_receiver: WebhookReceiver
) -> None:
    from services.notifications.delivery import Broadcaster, DeliveryWorker, Notifier

    town = new_municipality()
    path = f"/replicas/{town}"
    await subscribe(fast, fast.stack.auth("coordinator", town), webhook_receiver.url(path), ["mechanism.gap"])
    runtime = fast.stack.apps["notifications"].state.runtime
    second = asyncio.create_task(DeliveryWorker(fast.config, Notifier(Broadcaster())).run(runtime))
    try:
        events = await asyncio.gather(
            *(
                fast.produce(
                    "referral",
                    "mechanism.gap",
                    town,
                    {
                        "case_id": str(uuid.uuid4()),
                        "case_number": f"ELB-2026-{n:05d}",
                        "missing_kind": "legal_aid",
                        "rule": "r",
                    },
                )
                for n in range(30)
            )
        )
        await wait_for(lambda: _at(webhook_receiver, path, 30), timeout=30, what="thirty deliveries")
        await asyncio.sleep(1.0)
    finally:
        second.cancel()
        with contextlib.suppress(BaseException):
            await second
    ids = [r.headers["x-mkr-event-id"] for r in webhook_receiver.at(path)]
    assert sorted(ids) == sorted(e["id"] for e in events)


def test_webhook_requests_go_to_the_checked_address_under_the_receivers_own_name() -> None:
    from services.notifications.delivery import pinned

    assert pinned("https://hooks.example.org:8443/in?x=1", "203.0.113.7") == (
        "https://203.0.113.7:8443/in?x=1",
        {"Host": "hooks.example.org:8443"},
        {"sni_hostname": "hooks.example.org"},
    )
    assert pinned("http://hooks.example.org/in", "2001:db8::5") == (
        "http://[2001:db8::5]/in",
        {"Host": "hooks.example.org"},
        {},
    )


async def test_webhook_to_a_host_name_is_delivered_with_that_name_in_host(
    fast: FastStack, webhook_receiver: WebhookReceiver
) -> None:
    town = new_municipality()
    coordinator = fast.stack.auth("coordinator", town)
    url = f"http://localhost:{webhook_receiver.port}/named/{town}"
    await subscribe(fast, coordinator, url, ["case.reported"])
    await fast.produce("intake", "case.reported", town, case_data())
    [received] = await wait_for(
        lambda: _at(webhook_receiver, f"/named/{town}", 1), timeout=20, what="a webhook delivery to a host name"
    )
    assert received.headers["host"] == f"localhost:{webhook_receiver.port}"

"""Every event type of the contract is subscribable, and the ones added after the first list reach a webhook."""

from __future__ import annotations

import uuid
from typing import Any

from services.notifications import domain
from shared.contracts import EVENT_TYPES
from tests.notifications.conftest import FastStack, WebhookReceiver
from tests.notifications.test_webhooks import _at, subscribe
from tests.support import new_municipality, wait_for


def test_every_contract_type_is_subscribable() -> None:
    assert set(EVENT_TYPES) == domain.SUBSCRIBABLE_EVENT_TYPES


async def test_a_subscription_to_every_type_receives_links_erasures_and_payments(
    fast: FastStack, webhook_receiver: WebhookReceiver
) -> None:
    town = new_municipality()
    coordinator = fast.stack.auth("coordinator", town)
    path = f"/all/{town}"
    subscription = await subscribe(fast, coordinator, webhook_receiver.url(path), sorted(EVENT_TYPES))
    assert sorted(subscription["event_types"]) == sorted(EVENT_TYPES)

    case_id = str(uuid.uuid4())
    case: dict[str, Any] = {"case_id": case_id, "case_number": "ELB-2026-00091"}
    sent = [
        await fast.produce("intake", "case.linked", town, {**case, "repeat": True, "linked_count": 1}),
        await fast.produce("intake", "case.unlinked", town, {**case, "repeat": False}),
        await fast.produce("intake", "case.anonymised", town, {**case, "cause": "request"}),
        await fast.produce(
            "shelter",
            "rent_bonus.payment_paid",
            town,
            {"application_id": str(uuid.uuid4()), "payment_id": str(uuid.uuid4()), "case_id": case_id,
             "month": "2026-11"},
        ),
    ]
    received = await wait_for(lambda: _at(webhook_receiver, path, len(sent)), timeout=20, what="four deliveries")
    assert sorted(r.headers["x-mkr-event-id"] for r in received) == sorted(event["id"] for event in sent)

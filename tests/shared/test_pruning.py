"""Pruning (issue #17, shared/pruning.py): old rows go in batches, each table counted; what is inside its
window stays, so a redelivered event or a retried request inside it is still applied once."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY

from services.notifications.config import NotificationsConfig
from services.notifications.main import prune_targets
from shared.events import INTAKE_TOPIC
from shared.pruning import prune_all, prune_once, shared_targets
from tests.support import Stack, contract_report, new_municipality, wait_for

OLD = timedelta(days=60)


def _pruned(service: str, table: str) -> float:
    return REGISTRY.get_sample_value("mkr_pruned_rows_total", {"service": service, "table": table}) or 0.0


async def _scalar(stack: Stack, service: str, sql: str, **params: Any) -> Any:
    async with stack.apps[service].state.runtime.engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar()


async def _age(stack: Stack, service: str, sql: str, **params: Any) -> None:
    async with stack.apps[service].state.runtime.engine.begin() as conn:
        await conn.execute(sa.text(sql), {"at": datetime.now(UTC) - OLD, **params})


async def _report(stack: Stack, m: str, key: str | None = None) -> Any:
    headers = stack.auth("coordinator", m, sub=f"coordinator-{m}") | ({"Idempotency-Key": key} if key else {})
    return await stack.intake.post("/v1/cases", json=contract_report(m), headers=headers)


async def test_old_rows_are_pruned_in_batches_and_counted(stack: Stack) -> None:
    m = new_municipality()
    old_key, new_key = f"k-{uuid.uuid4()}", f"k-{uuid.uuid4()}"
    old_case, new_case = (await _report(stack, m, old_key)).json(), (await _report(stack, m, new_key)).json()

    async def published() -> bool:
        return not await _scalar(stack, "intake", "SELECT count(*) FROM outbox WHERE published_at IS NULL")

    await wait_for(published, what="intake's outbox published")
    await _age(stack, "intake", "UPDATE outbox SET published_at = :at WHERE key = :k", k=old_case["id"])
    await _age(stack, "intake", "UPDATE idempotency_keys SET created_at = :at WHERE key = :k", k=old_key)
    old_event, new_event = uuid.uuid4(), uuid.uuid4()
    for event_id in (old_event, new_event):
        await _age(stack, "intake", "INSERT INTO processed_events (consumer, event_id, event_type, processed_at) "
                                    "VALUES ('test', :e, 'referral.created', :at)", e=event_id)
    await _age(stack, "intake", "UPDATE processed_events SET processed_at = now() WHERE event_id = :e", e=new_event)
    before = {t: _pruned("intake", t) for t in ("outbox", "idempotency_keys", "processed_events")}
    runtime = stack.apps["intake"].state.runtime
    targets = shared_targets(stack.settings, idempotency=True)
    async with runtime.engine.begin() as conn:  # a batch is bounded
        assert await prune_once(conn, targets[0], 0) == 0
    while await prune_all(runtime, targets, 1):  # batches of one row until nothing old is left
        pass
    assert _pruned("intake", "outbox") - before["outbox"] >= 1
    assert _pruned("intake", "idempotency_keys") - before["idempotency_keys"] >= 1
    assert _pruned("intake", "processed_events") - before["processed_events"] >= 1
    assert not await _scalar(stack, "intake", "SELECT count(*) FROM outbox WHERE key = :k", k=old_case["id"])
    assert await _scalar(stack, "intake", "SELECT count(*) FROM outbox WHERE key = :k", k=new_case["id"])
    assert not await _scalar(stack, "intake", "SELECT count(*) FROM idempotency_keys WHERE key = :k", k=old_key)
    inbox = "SELECT count(*) FROM processed_events WHERE event_id = :e"
    assert not await _scalar(stack, "intake", inbox, e=old_event) and await _scalar(stack, "intake", inbox, e=new_event)
    # Inside the 24 hours the retry still answers the first response and creates nothing.
    again = await _report(stack, m, new_key)
    assert again.status_code == 201 and again.json()["id"] == new_case["id"]
    assert await _scalar(stack, "intake", "SELECT count(*) FROM cases WHERE municipality = :m", m=m) == 2


async def test_finished_deliveries_are_pruned_after_their_keep_days(stack: Stack) -> None:
    m = new_municipality()
    rows = {("succeeded", 40): None, ("succeeded", 1): None, ("dead", 40): None, ("pending", 40): None}
    async with stack.apps["notifications"].state.runtime.engine.begin() as conn:
        for state, days in rows:
            row_id = uuid.uuid4()
            rows[(state, days)] = row_id
            at = datetime.now(UTC) - timedelta(days=days)
            await conn.execute(
                sa.text(
                    "INSERT INTO deliveries (id, dedupe_key, channel, event_id, event_type, municipality, payload, "
                    "state, attempts, next_attempt_at, last_attempt_at, delivered_at, history, created_at) VALUES "
                    "(:id, :dk, 'webhook', :ev, 'case.reported', :m, '{}', :state, 1, :at, :at, "
                    " CASE WHEN :state = 'succeeded' THEN CAST(:at AS timestamptz) END, '[]', :at)"
                ),
                {"id": row_id, "dk": str(row_id), "ev": uuid.uuid4(), "m": m, "state": state, "at": at},
            )
    before = _pruned("notifications", "deliveries")
    targets = prune_targets(stack.settings, NotificationsConfig(delivery_keep_days=30))
    runtime = stack.apps["notifications"].state.runtime
    while await prune_all(runtime, targets, 100):
        pass
    left = await _scalar(stack, "notifications", "SELECT array_agg(state ORDER BY state) FROM deliveries "
                                                 "WHERE municipality = :m", m=m)
    assert left == ["pending", "succeeded"]  # the recent delivery and the one still to send stay
    assert _pruned("notifications", "deliveries") - before >= 2


async def test_a_replay_inside_the_window_is_still_applied_once(stack: Stack) -> None:
    m = new_municipality()
    case = (await _report(stack, m)).json()
    payload = await _scalar(stack, "intake", "SELECT payload FROM outbox WHERE key = :k AND "
                                             "payload::jsonb->>'type' = 'case.reported'", k=case["id"])

    async def consumed() -> bool:
        return bool(await _scalar(stack, "referral", "SELECT count(*) FROM processed_events WHERE event_id = :e",
                                  e=json.loads(payload)["id"]))

    await wait_for(consumed, what="referral consuming case.reported")
    decisions = "SELECT count(*) FROM routing_decisions WHERE case_id = :c"
    routed = await _scalar(stack, "referral", decisions, c=case["id"])
    referrals = await _scalar(stack, "referral", "SELECT count(*) FROM referrals WHERE case_id = :c", c=case["id"])
    runtime = stack.apps["referral"].state.runtime
    while await prune_all(runtime, shared_targets(stack.settings, idempotency=False), 1000):
        pass
    producer = AIOKafkaProducer(bootstrap_servers=stack.settings.kafka_bootstrap)
    await producer.start()
    try:  # the broker redelivers the event (a consumer restart before its commit looks the same)
        await producer.send_and_wait(stack.settings.topic(INTAKE_TOPIC), payload.encode(), key=case["id"].encode())
    finally:
        await producer.stop()
    closed = await stack.intake.post(f"/v1/cases/{case['id']}/close", json={"reason": "done"},
                                     headers=stack.auth("coordinator", m))
    assert closed.status_code == 200

    async def after_replay() -> bool:  # same key, same partition: the close comes after the replay
        return await _scalar(stack, "referral", "SELECT status FROM case_facts WHERE case_id = :c",
                             c=case["id"]) == "closed"

    await wait_for(after_replay, what="referral applying the close after the replay")
    assert await _scalar(stack, "referral", decisions, c=case["id"]) == routed
    assert await _scalar(stack, "referral", "SELECT count(*) FROM referrals WHERE case_id = :c",
                         c=case["id"]) == referrals

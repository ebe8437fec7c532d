"""Consumers validate every envelope before applying it (CONTRACT §9, issue #11).

A malformed record, an event whose `source` is not the topic's service (forged), a type that no
service publishes, a type on another service's topic and data without the shape consumers rely on
are rejected the same way by every consumer of all four services: recorded in processed_events
as `rejected:<reason>`, counted in mkr_events_rejected_total{reason}, never applied, never retried
— the next event of the same partition is applied as usual. Against the real broker and databases.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from shared.contracts import EVENT_TYPES, REJECTION_REASONS, TOPIC_SOURCES, EventRejected, contracts_for
from shared.events import _REJECTED_NAMESPACE, EVENTS_REJECTED, INTAKE_TOPIC, REFERRAL_TOPIC, make_event
from shared.kafka import client_options
from tests.referral.helpers import reported
from tests.support import Stack, new_municipality, wait_for

# Each service's consumer and the topics the test feeds it.
CONSUMERS = {
    "intake": ("intake.case-access", (REFERRAL_TOPIC,)),
    "referral": ("referral.routing", (INTAKE_TOPIC,)),
    "shelter": ("shelter.cases", (INTAKE_TOPIC, REFERRAL_TOPIC)),
    "notifications": ("notifications.alerts", (INTAKE_TOPIC, REFERRAL_TOPIC)),
}


def _referral_created(m: str, case_id: str, *, source: str = "mkr/referral") -> dict[str, Any]:
    data = {
        "referral_id": str(uuid.uuid4()),
        "case_id": case_id,
        "case_number": "T-2026-000001",
        "to_member_id": str(uuid.uuid4()),
        "to_member_kind": "police",
        "service": "police",
        "urgency": "standard",
        "status": "pending",
        "ack_due_at": "2026-12-01T10:00:00+00:00",
    }
    return make_event(type_="referral.created", source=source, subject=case_id, municipality=m, data=data).model_dump(
        mode="json"
    )


def _case_event(m: str, type_: str, data: dict[str, Any], *, source: str = "mkr/intake") -> dict[str, Any]:
    return make_event(type_=type_, source=source, subject=data["case_id"], municipality=m, data=data).model_dump(
        mode="json"
    )


def _legacy(envelope: dict[str, Any]) -> dict[str, Any]:
    old = {name: value for name, value in envelope.items() if name not in ("specversion", "datacontenttype")}
    old["schema_version"] = old.pop("schemaversion")
    return old


def _bad_records(m: str, topic: str, key: str) -> list[tuple[bytes, str, str | None]]:
    """(value, expected reason, the case id it would have created if applied) for one topic."""
    if topic == INTAKE_TOPIC:
        forged = reported(m, case_id=key)
        bad_level = reported(m, risk_level="extreme")
        bad_id = reported(m, case_id="not-a-uuid")
        unknown = reported(m)
        wrong = _referral_created(m, key, source="mkr/intake")
        return [
            (b'{"type": "case.reported", "data": ', "malformed", None),
            (b"\xff\xfe not json at all", "malformed", None),
            (json.dumps(_case_event(m, "case.reported", forged, source="mkr/notifications")).encode(), "forged_source",
             forged["case_id"]),
            (json.dumps(_case_event(m, "case.reported", bad_level)).encode(), "invalid_data", bad_level["case_id"]),
            (json.dumps(_case_event(m, "case.reported", bad_id)).encode(), "invalid_data", None),
            (json.dumps(_case_event(m, "case.deleted", unknown)).encode(), "unknown_type", unknown["case_id"]),
            (json.dumps(wrong).encode(), "wrong_topic", None),
        ]  # fmt: skip
    forged_grant = _referral_created(m, key, source="mkr/shelter")
    no_member = _referral_created(m, key)
    del no_member["data"]["to_member_id"]
    return [
        (b"[1, 2, 3]", "malformed", None),
        (b"[" * 100_000, "malformed", None),  # deeper than any parser's recursion limit
        (json.dumps(forged_grant).encode(), "forged_source", key),
        (json.dumps(no_member).encode(), "invalid_data", key),
    ]


async def _statuses(stack: Stack, service: str, consumer: str, ids: list[uuid.UUID]) -> dict[uuid.UUID, str]:
    async with stack.apps[service].state.runtime.engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT event_id, status FROM processed_events WHERE consumer = :c AND event_id = ANY(:ids)"),
            {"c": consumer, "ids": ids},
        )
        return {row.event_id: row.status for row in rows}


def _acts_on(stack: Stack, service: str, consumer: str) -> Callable[[str], bool]:
    """Which event types the service's running consumer applies (a registry's `acts_on`; a plain handler: all)."""
    running = next(c for c in stack.apps[service].state.runtime.consumers if c.name == consumer)
    acts_on: Callable[[str], bool] | None = getattr(running.handler, "acts_on", None)
    return acts_on if acts_on is not None else (lambda _type: True)


async def _count(stack: Stack, service: str, sql: str, **params: Any) -> int:
    async with stack.apps[service].state.runtime.engine.connect() as conn:
        return int(await conn.scalar(sa.text(sql), params) or 0)


async def test_malformed_and_forged_events_are_rejected_the_same_way_by_every_consumer(stack: Stack) -> None:
    settings = stack.settings
    m = new_municipality()
    key = str(uuid.uuid4())  # one key: one partition, so the valid event after them comes after them
    before = {reason: EVENTS_REJECTED.labels(reason)._value.get() for reason in REJECTION_REASONS}
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=False, acks="all", **client_options(settings)
    )
    await producer.start()
    sent: dict[str, list[tuple[uuid.UUID, str, str | None]]] = {}
    valid: dict[str, list[tuple[str, uuid.UUID]]] = {}  # topic -> (type, id) of the valid events after the bad
    try:
        for topic in (INTAKE_TOPIC, REFERRAL_TOPIC):
            sent[topic] = []
            for value, reason, case_id in _bad_records(m, topic, key):
                meta = await producer.send_and_wait(settings.topic(topic), value, key=key.encode())
                position = uuid.uuid5(_REJECTED_NAMESPACE, f"{meta.topic}/{meta.partition}/{meta.offset}")
                sent[topic].append((position, reason, case_id))
            # Valid events behind them on the same partition: the consumers are not held up.
            if topic == INTAKE_TOPIC:
                events = [_case_event(m, "case.reported", reported(m))]
            else:
                # As a producer of the previous release wrote it: `schema_version`, no specversion or
                # datacontenttype; every consumer still applies it (for one release). And a directory change,
                # which the consumers without a handler for referral.created act on (shelter).
                member = make_event(type_="member.saved", source="mkr/referral", subject=key, municipality=m,
                                    data={"member_id": str(uuid.uuid4()), "kind": "shelter"}).model_dump(mode="json")
                events = [_legacy(_referral_created(m, str(uuid.uuid4()))), member]  # fmt: skip
            for event in events:
                await producer.send_and_wait(settings.topic(topic), json.dumps(event).encode(), key=key.encode())
            valid[topic] = [(event["type"], uuid.UUID(event["id"])) for event in events]
    finally:
        await producer.stop()

    for service, (consumer, topics) in CONSUMERS.items():
        acts_on = _acts_on(stack, service, consumer)
        for topic in topics:
            ids = [position for position, _, _ in sent[topic]]
            # The valid events this consumer has something to do for (it records no others: shared/dispatch.py).
            applied = [event_id for type_, event_id in valid[topic] if acts_on(type_)]
            assert applied, f"{consumer} acts on none of the valid events of {topic}"

            async def handled(
                service: str = service, consumer: str = consumer, applied: list[uuid.UUID] = applied
            ) -> bool:
                done = await _statuses(stack, service, consumer, applied)
                return all(done.get(event_id) == "done" for event_id in applied)

            await wait_for(handled, timeout=40, what=f"{consumer} to apply the valid events after the bad ones")
            statuses = await _statuses(stack, service, consumer, ids)
            expected = {position: f"rejected:{reason}" for position, reason, _ in sent[topic]}
            assert statuses == expected, f"{consumer} on {topic}"

    # Never applied: no projection, no routing, no access from any of them.
    intake_cases = [c for _, _, c in sent[INTAKE_TOPIC] if c]
    assert await _count(stack, "referral", "SELECT count(*) FROM case_facts WHERE municipality = :m", m=m) == 1
    assert await _count(stack, "shelter", "SELECT count(*) FROM case_projection WHERE municipality = :m", m=m) == 1
    for case_id in intake_cases:
        for service, table in (("referral", "case_facts"), ("shelter", "case_projection")):
            sql = f"SELECT count(*) FROM {table} WHERE case_id = CAST(:c AS uuid)"
            assert await _count(stack, service, sql, c=case_id) == 0, (service, case_id)
    sql = "SELECT count(*) FROM referral_access WHERE case_id = CAST(:c AS uuid)"
    assert await _count(stack, "intake", sql, c=key) == 0, "a forged referral.created granted access"
    # Not retried: each record is recorded once, and counted once per consumer that read it.
    expected_counts: dict[str, int] = dict.fromkeys(REJECTION_REASONS, 0)
    for _consumer, topics in CONSUMERS.values():
        for topic in topics:
            for _, reason, _ in sent[topic]:
                expected_counts[reason] += 1
    after = {reason: EVENTS_REJECTED.labels(reason)._value.get() for reason in REJECTION_REASONS}
    assert {r: after[r] - before[r] for r in REJECTION_REASONS} == expected_counts


# --- the contract itself, without a broker ----------------------------------------------------------


def _envelope(type_: str, source: str, data: dict[str, Any], municipality: str = "elbasan") -> Any:
    return make_event(type_=type_, source=source, subject="s", municipality=municipality, data=data)


def test_events_as_the_services_publish_them_pass_the_contract() -> None:
    contracts = contracts_for("t1.")
    contracts.check("t1.mkr.intake.events", _envelope("case.reported", "mkr/intake", reported("elbasan")))
    referral = _referral_created("elbasan", str(uuid.uuid4()))
    contracts.check("t1.mkr.referral.events", _envelope("referral.created", "mkr/referral", referral["data"]))


@pytest.mark.parametrize(
    ("topic", "type_", "source", "data", "municipality", "reason"),
    [
        ("t1.other.topic", "case.reported", "mkr/intake", {}, "elbasan", "unknown_topic"),
        ("mkr.intake.events", "case.reported", "mkr/intake", {}, "elbasan", "unknown_topic"),  # prefix missing
        ("t1.mkr.intake.events", "case.renamed", "mkr/intake", {}, "elbasan", "unknown_type"),
        ("t1.mkr.intake.events", "referral.created", "mkr/referral", {}, "elbasan", "wrong_topic"),
        ("t1.mkr.intake.events", "case.reported", "mkr/referral", {}, "elbasan", "forged_source"),
        ("t1.mkr.intake.events", "case.reported", "mkr/intake", {"case_id": "x"}, "elbasan", "invalid_data"),
        ("t1.mkr.intake.events", "case.closed", "mkr/intake", {"case_id": str(uuid.uuid4())}, "elbasan",
         "invalid_data"),  # no case number
        ("t1.mkr.intake.events", "case.reopened", "mkr/intake", {}, "Elbasan; DROP", "malformed"),
    ],
)  # fmt: skip
def test_the_contract_names_why_an_event_is_refused(
    topic: str, type_: str, source: str, data: dict[str, Any], municipality: str, reason: str
) -> None:
    with pytest.raises(EventRejected) as refused:
        contracts_for("t1.").check(topic, _envelope(type_, source, data, municipality))
    assert refused.value.reason == reason


def test_every_topic_has_its_service_and_every_type_a_home_topic() -> None:
    from shared.events import ALL_TOPICS

    assert set(TOPIC_SOURCES) == set(ALL_TOPICS)
    assert {topic for topic, _ in EVENT_TYPES.values()} == set(ALL_TOPICS)
    assert {source.removeprefix("mkr/") for source in TOPIC_SOURCES.values()} == {
        "intake", "referral", "shelter", "notifications"
    }  # fmt: skip


def test_every_event_type_the_services_publish_is_in_the_contract() -> None:
    """Services publish typed models only (`emit`/`event_of` of a model of shared/contracts), never a
    type string: every model they build is an event type of the contract or data nested in one."""
    import ast
    from pathlib import Path

    from shared.contracts import events as contract

    root = Path(__file__).resolve().parents[2]
    published: dict[str, str] = {}
    untyped: list[str] = []
    for path in (root / "services").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
            if name in {"make_event", "Envelope", "publish", "publish_many"}:
                untyped.append(f"{path.relative_to(root)}:{node.lineno} {name}(...)")
            # contract.CaseReported(...): a model of shared/contracts/events.py built by a producer.
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "contract":
                published[func.attr] = f"{path.relative_to(root)}:{node.lineno}"
    assert not untyped, f"events published from a dict and a type string: {untyped}"
    registered = {model.__name__ for _, model in EVENT_TYPES.values()}
    nested = {"PlanActionData"}  # the actions inside etn.minutes_recorded
    assert len(set(published) & registered) >= 15, published
    missing = {model: where for model, where in published.items() if model not in registered | nested}
    assert not missing, f"published but not in shared/contracts/events.py EVENT_TYPES: {missing}"
    for model in (contract.CaseReported, contract.ShelterFull, contract.NotificationFailed):
        assert EVENT_TYPES[model.TYPE] == (model.TOPIC, model)
    from services.notifications import domain

    assert domain.SUBSCRIBABLE_EVENT_TYPES <= set(EVENT_TYPES)

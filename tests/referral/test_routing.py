"""Automatic routing: intake's events (produced on the real broker) become referrals by the rules."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from aiokafka import AIOKafkaProducer

from services.referral.config import ReferralConfig
from services.referral.consumer import make_handler
from shared.events import Envelope, EventConsumer, make_event
from tests.referral.helpers import add_member, produce, published, referrals_of, reported, routing_of
from tests.support import Stack, counting_consumer, new_municipality


async def test_high_risk_case_with_children_is_referred_to_child_protection_shelter_and_social_services_within_2s(
    stack: Stack, producer: AIOKafkaProducer
) -> None:
    m = new_municipality()
    members = {kind: await add_member(stack, m, kind) for kind in ("social_services", "child_protection", "shelter")}
    data = reported(
        m, risk_level="high", children_count=2, children_ages=[4, 9], consent_share_with=["social_services", "shelter"]
    )
    started = time.monotonic()
    await produce(producer, stack.settings, "case.reported", m, data)
    found = await referrals_of(stack, m, data["case_id"], 3, timeout=2)
    assert time.monotonic() - started < 2
    by_kind = {r["to_member_kind"]: r for r in found}
    assert set(by_kind) == {"social_services", "child_protection", "shelter"}
    for kind, referral in by_kind.items():
        assert referral["to_member_id"] == members[kind]["id"]
        assert referral["urgency"] == "emergency"
        assert referral["status"] == "pending"
        assert referral["case_number"] == data["case_number"]
        due = datetime.fromisoformat(referral["ack_due_at"]) - datetime.fromisoformat(referral["created_at"])
        assert abs(due - timedelta(hours=1)) < timedelta(seconds=1)
        assert referral["history"][0]["status"] == "pending"
    assert by_kind["child_protection"]["reason"] == "children_child_protection"
    # Not in the consent: referred under the child-at-risk exception, recorded as such.
    assert by_kind["child_protection"]["legal_exception"] == "child_at_risk"
    assert by_kind["shelter"]["legal_exception"] is None
    created = await published(stack, "referral.created", case_id=data["case_id"])
    assert {e["data"]["to_member_kind"] for e in created} == set(by_kind)
    assert all("name" not in e["data"] for e in created)


async def test_repeated_or_rereported_event_creates_nothing_twice(stack: Stack, producer: AIOKafkaProducer) -> None:
    m = new_municipality()
    await add_member(stack, m, "social_services")
    await add_member(stack, m, "legal_aid")
    data = reported(m, needs=["legal_aid"], consent_share_with=["social_services", "legal_aid"])
    event = await produce(producer, stack.settings, "case.reported", m, data)
    await referrals_of(stack, m, data["case_id"], 2)
    await produce(producer, stack.settings, "case.reported", m, data, event=event)  # the same event again
    await produce(producer, stack.settings, "case.reported", m, data)  # a new event for the same case
    routing = await routing_of(stack, m, data["case_id"])

    async def settled() -> bool:
        nonlocal routing
        routing = await routing_of(stack, m, data["case_id"])
        return len(routing["decisions"]) >= 4

    deadline = time.monotonic() + 10
    while not await settled() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    outcomes = sorted(d["outcome"] for d in routing["decisions"])
    assert outcomes == ["already_referred", "already_referred", "referred", "referred"]
    found = await referrals_of(stack, m, data["case_id"], 2)
    assert len(found) == 2


async def test_two_rules_for_one_member_make_one_referral_with_merged_reasons(
    stack: Stack, producer: AIOKafkaProducer
) -> None:
    m = new_municipality()
    await add_member(stack, m, "social_services")
    health = await add_member(stack, m, "health")
    data = reported(
        m, violence_types=["sexual"], needs=["psychological"], consent_share_with=["social_services", "health"]
    )
    await produce(producer, stack.settings, "case.reported", m, data)
    found = await referrals_of(stack, m, data["case_id"], 2)
    to_health = [r for r in found if r["to_member_id"] == health["id"]]
    assert len(to_health) == 1
    assert to_health[0]["urgency"] == "emergency"
    assert to_health[0]["reason"] == "sexual_violence_health+health_need"


async def test_risk_rise_routes_again_without_doubling(stack: Stack, producer: AIOKafkaProducer) -> None:
    m = new_municipality()
    for kind in ("social_services", "police", "shelter"):
        await add_member(stack, m, kind)
    data = reported(m, source="ngo", consent_share_with=["social_services"])
    await produce(producer, stack.settings, "case.reported", m, data)
    await referrals_of(stack, m, data["case_id"], 1)
    rise = {"case_id": data["case_id"], "case_number": data["case_number"], "risk_level": "high",
            "previous_risk_level": "low", "yes_count": 3, "red_flags": ["threats_to_kill"]}  # fmt: skip
    await produce(producer, stack.settings, "case.risk_assessed", m, rise)
    found = await referrals_of(stack, m, data["case_id"], 2)
    by_kind = {r["to_member_kind"]: r for r in found}
    assert by_kind["police"]["urgency"] == "emergency"
    assert by_kind["police"]["legal_exception"] == "threat_to_life"
    assert by_kind["police"]["reason"] == "high_risk_police"
    # The pending social-services referral is escalated, not doubled: emergency, due within the hour.
    assert by_kind["social_services"]["urgency"] == "emergency"
    due = datetime.fromisoformat(by_kind["social_services"]["ack_due_at"]) - datetime.now(UTC)
    assert due <= timedelta(hours=1)
    # A level that does not rise routes nothing.
    same = {**rise, "previous_risk_level": "high"}
    await produce(producer, stack.settings, "case.risk_assessed", m, same)
    await asyncio.sleep(0.5)
    after = await referrals_of(stack, m, data["case_id"], 2)
    assert sorted(r["to_member_kind"] for r in after) == ["police", "social_services"]
    routing = await routing_of(stack, m, data["case_id"])
    shelter = [d for d in routing["decisions"] if d["kind"] == "shelter"]
    assert [d["outcome"] for d in shelter] == ["no_consent"]  # shelter is not consented and has no exception
    social = [d["outcome"] for d in routing["decisions"] if d["kind"] == "social_services"]
    assert social == ["referred", "escalated"]


async def test_missing_member_kind_raises_mechanism_gap_once(stack: Stack, producer: AIOKafkaProducer) -> None:
    m = new_municipality()
    data = reported(m, consent_share_with=["social_services"])
    await produce(producer, stack.settings, "case.reported", m, data)
    routing = await routing_of(stack, m, data["case_id"])
    assert [(d["kind"], d["outcome"]) for d in routing["decisions"]] == [("social_services", "no_member")]
    await produce(producer, stack.settings, "case.reported", m, data)

    async def two_decisions() -> bool:
        return len((await routing_of(stack, m, data["case_id"]))["decisions"]) == 2

    deadline = time.monotonic() + 10
    while not await two_decisions() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    gaps = await published(stack, "mechanism.gap", case_id=data["case_id"])
    assert len(gaps) == 1
    assert gaps[0]["data"] == {
        "case_id": data["case_id"],
        "case_number": data["case_number"],
        "missing_kind": "social_services",
        "rule": "always_social_services",
    }


async def test_kind_without_consent_is_not_referred_and_the_decision_says_why(
    stack: Stack, producer: AIOKafkaProducer
) -> None:
    m = new_municipality()
    await add_member(stack, m, "social_services")
    await add_member(stack, m, "legal_aid")
    data = reported(m, needs=["legal_aid"], consent_share_with=["social_services"])
    await produce(producer, stack.settings, "case.reported", m, data)
    routing = await routing_of(stack, m, data["case_id"])
    outcomes = {d["kind"]: d["outcome"] for d in routing["decisions"]}
    assert outcomes == {"social_services": "referred", "legal_aid": "no_consent"}
    found = await referrals_of(stack, m, data["case_id"], 1)
    assert [r["to_member_kind"] for r in found] == ["social_services"]


async def test_inactive_member_is_skipped_and_next_of_kind_gets_referral(
    stack: Stack, producer: AIOKafkaProducer
) -> None:
    m = new_municipality()
    first = await add_member(stack, m, "social_services", "first office")
    second = await add_member(stack, m, "social_services", "second office")
    patched = await stack.referral.patch(
        f"/v1/members/{first['id']}", json={"active": False}, headers=stack.auth("coordinator", m)
    )
    assert patched.status_code == 200 and patched.json()["active"] is False
    data = reported(m)
    await produce(producer, stack.settings, "case.reported", m, data)
    found = await referrals_of(stack, m, data["case_id"], 1)
    assert found[0]["to_member_id"] == second["id"]


async def test_municipality_routing_rules_replace_the_defaults(stack: Stack, producer: AIOKafkaProducer) -> None:
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    defaults = await stack.referral.get("/v1/routing-rules", headers=coordinator)
    assert defaults.status_code == 200 and defaults.json()["is_default"] is True
    assert defaults.json()["rules"][0]["name"] == "always_social_services"
    ngo = await add_member(stack, m, "ngo")
    rules = {"rules": [{"name": "all_to_ngo", "when": [{}], "refer_to": "ngo", "urgency": "high"}]}
    put = await stack.referral.put("/v1/routing-rules", json=rules, headers=coordinator)
    assert put.status_code == 200, put.text
    data = reported(m, consent_share_with=["ngo"])
    await produce(producer, stack.settings, "case.reported", m, data)
    found = await referrals_of(stack, m, data["case_id"], 1)
    assert (found[0]["to_member_id"], found[0]["reason"], found[0]["urgency"]) == (ngo["id"], "all_to_ngo", "high")


async def test_routing_rules_are_validated_and_coordinator_only(stack: Stack) -> None:
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    twice = {"rules": [{"name": "a", "when": [{}], "refer_to": "ngo", "urgency": "high"}] * 2}
    assert (await stack.referral.put("/v1/routing-rules", json=twice, headers=coordinator)).status_code == 422
    bad_kind = {"rules": [{"name": "a", "when": [{}], "refer_to": "astrologer", "urgency": "high"}]}
    response = await stack.referral.put("/v1/routing-rules", json=bad_kind, headers=coordinator)
    assert response.status_code == 422 and response.json()["errors"]
    police = stack.auth("police", m)
    assert (await stack.referral.get("/v1/routing-rules", headers=police)).status_code == 403


async def test_a_routing_table_changed_meanwhile_is_not_overwritten(stack: Stack) -> None:
    m = new_municipality()
    coordinator = stack.auth("coordinator", m)
    read = await stack.referral.get("/v1/routing-rules", headers=coordinator)
    seen = read.headers["etag"]
    assert seen.startswith('W/"') and (await stack.referral.get("/v1/routing-rules", headers=coordinator)
                                        ).headers["etag"] == seen  # the same table, the same tag
    first = {"rules": [{"name": "all_to_ngo", "when": [{}], "refer_to": "ngo", "urgency": "high"}]}
    put = await stack.referral.put("/v1/routing-rules", json=first, headers=coordinator | {"If-Match": seen})
    assert put.status_code == 200, put.text
    now = put.headers["etag"]
    assert now != seen and (await stack.referral.get("/v1/routing-rules", headers=coordinator)).headers["etag"] == now

    second = {"rules": [{"name": "all_to_police", "when": [{}], "refer_to": "police", "urgency": "normal"}]}
    stale = await stack.referral.put("/v1/routing-rules", json=second, headers=coordinator | {"If-Match": seen})
    assert stale.status_code == 412 and stale.headers["etag"] == now
    assert stale.headers["content-type"].startswith("application/problem+json")
    table = (await stack.referral.get("/v1/routing-rules", headers=coordinator)).json()
    assert [r["name"] for r in table["rules"]] == ["all_to_ngo"]  # the stale write changed nothing
    assert (await stack.referral.put("/v1/routing-rules", json=second,
                                     headers=coordinator | {"If-Match": now})).status_code == 200
    assert (await stack.referral.put("/v1/routing-rules", json=first, headers=coordinator)).status_code == 200


async def test_case_routing_of_another_municipality_is_404(stack: Stack, producer: AIOKafkaProducer) -> None:
    m = new_municipality()
    data = reported(m)
    await produce(producer, stack.settings, "case.reported", m, data)
    await routing_of(stack, m, data["case_id"])
    other = stack.auth("coordinator", new_municipality())
    assert (await stack.referral.get(f"/v1/cases/{data['case_id']}/routing", headers=other)).status_code == 404


async def test_a_batch_of_events_is_routed_in_one_transaction_with_a_fixed_number_of_statements(
    stack: Stack,
) -> None:
    """What the consumer does with the records a fetch brings for one partition: one transaction, the
    directory read once, and per case.reported the same few statements whatever the decisions."""
    m = new_municipality()
    members = {kind: await add_member(stack, m, kind) for kind in ("social_services", "police", "child_protection",
                                                                    "shelter")}  # fmt: skip
    engine, statements, consumer, case_event = _counting_consumer(stack, m, "batch")

    facts = {"source": "ngo", "needs": ["shelter"], "children_count": 1, "children_ages": [7],
             "consent_share_with": ["social_services", "shelter"]}  # fmt: skip
    alone, a, b = reported(m, **facts), reported(m, **facts), reported(m, **facts)
    rise = {"case_id": a["case_id"], "case_number": a["case_number"], "risk_level": "high",
            "previous_risk_level": "low", "yes_count": 3, "red_flags": ["threats_to_kill"]}  # fmt: skip
    try:
        assert await consumer.apply(case_event("case.reported", alone)) is True
        single = len(statements)
        statements.clear()
        batch = [case_event("case.reported", a), case_event("case.reported", b), case_event("case.risk_assessed", rise)]
        assert await consumer.apply_batch(batch) == [True, True, True]
        batched = len(statements)
    finally:
        await engine.dispose()
    # Inbox row, projection upsert, directory, active referrals, new referrals, their events, decisions:
    # 7 for three referrals and a no-consent decision (17 when each decision had its own statements).
    assert single <= 7, statements
    # One inbox statement and one directory read for the batch; the risk rise reads and updates the case.
    assert batched <= 1 + 6 + 5 + 8, statements

    for case, count in ((alone, 3), (b, 3)):
        found = await referrals_of(stack, m, case["case_id"], count)
        assert sorted(r["to_member_kind"] for r in found) == ["child_protection", "shelter", "social_services"]
    found = await referrals_of(stack, m, a["case_id"], 4)
    by_kind = {r["to_member_kind"]: r for r in found}
    assert {kind: r["to_member_id"] for kind, r in by_kind.items()} == {k: v["id"] for k, v in members.items()}
    # The rise applied after the report in the same transaction: three pending referrals escalated, police added.
    assert {r["urgency"] for r in found} == {"emergency"}
    routing = await routing_of(stack, m, a["case_id"])
    assert sorted(d["outcome"] for d in routing["decisions"]) == ["escalated"] * 3 + ["referred"] * 4
    assert len(await published(stack, "referral.created", case_id=a["case_id"])) == 4


async def test_a_batch_of_new_cases_is_projected_and_routed_in_a_fixed_number_of_statements(
    stack: Stack,
) -> None:
    """The reports of new cases that no other event of the batch names are upserted together, and their
    referrals, events and decisions go in at the batch's end: the same statements for 3 cases as for 6, the
    same effects, in order, as one by one. A case another event of the batch names keeps the batch's order;
    a re-reported case (referred already) still reads its referrals and gets none twice."""
    m = new_municipality()
    for kind in ("social_services", "shelter", "child_protection"):
        await add_member(stack, m, kind)
    engine, statements, consumer, case_event = _counting_consumer(stack, m, "newcases")

    facts = {"source": "ngo", "needs": ["shelter"], "children_count": 1, "children_ages": [7],
             "consent_share_with": ["social_services", "shelter"]}  # fmt: skip
    known = reported(m, **facts)
    counts = []
    try:
        assert await consumer.apply(case_event("case.reported", known)) is True
        batches = [[reported(m, **facts) for _ in range(n)] for n in (3, 6)]
        for cases in batches:
            statements.clear()
            assert await consumer.apply_batch([case_event("case.reported", c) for c in cases]) == [True] * len(cases)
            counts.append(len(statements))
        closed = reported(m, **facts)
        closure = {"case_id": closed["case_id"], "case_number": closed["case_number"], "closed_at": _iso_now()}
        again = reported(m, **{**facts, "case_id": known["case_id"], "case_number": known["case_number"]})
        mixed = [case_event("case.reported", closed), case_event("case.closed", closure),
                 case_event("case.reported", again), *(case_event("case.reported", reported(m, **facts)) for _ in "ab")]
        assert await consumer.apply_batch(mixed) == [True] * 5  # fmt: skip
        async with engine.connect() as conn:
            outbox = (await conn.execute(sa.text(
                "SELECT payload::json->'data'->>'case_id' FROM outbox "
                "WHERE payload::json->>'type' = 'referral.created' AND payload::json->>'municipality' = :m ORDER BY id"
            ), {"m": m})).scalars().all()  # fmt: skip
            status = await conn.scalar(
                sa.text("SELECT status FROM case_facts WHERE case_id = :c"), {"c": closed["case_id"]}
            )
    finally:
        await engine.dispose()
    # Inbox, the reports' upsert, the directory, then the referrals, their events and the decisions.
    assert counts[0] == counts[1] <= 6, statements
    # Three referrals per new case, announced in the batch's order; the known case's, once.
    new_cases = [c["case_id"] for cases in batches for c in cases]
    assert outbox[3 : 3 + 3 * len(new_cases)] == [case_id for case_id in new_cases for _ in range(3)]
    assert outbox[:3] == [known["case_id"]] * 3
    assert len(await referrals_of(stack, m, known["case_id"], 3)) == 3
    assert outbox.count(known["case_id"]) == 3
    routing = await routing_of(stack, m, again["case_id"])
    assert [d["outcome"] for d in routing["decisions"]].count("already_referred") == 3
    assert status == "closed"  # reported, then closed: in the batch's order
    for case_id in [*new_cases, closed["case_id"]]:
        assert len(await referrals_of(stack, m, case_id, 3)) == 3


def _counting_consumer(
    stack: Stack, m: str, name: str
) -> tuple[Any, list[str], EventConsumer, Callable[[str, dict[str, Any]], Envelope]]:
    """Referral's consumer on an engine of its own whose statements are listed as they are sent, and a maker
    of municipality m's intake events (the caller disposes of the engine)."""
    engine, statements, consumer = counting_consumer(
        stack.settings, "referral", f"referral.{name}-{m}", make_handler(stack.settings, ReferralConfig())
    )

    def case_event(type_: str, data: dict[str, Any]) -> Envelope:
        return make_event(type_=type_, source="mkr/intake", subject=data["case_id"], municipality=m, data=data)

    return engine, statements, consumer, case_event


def _iso_now() -> str:
    return datetime.now(UTC).isoformat()

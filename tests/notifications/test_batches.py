"""The consumer applies a partition's events in batches (one transaction each): two batches never deadlock,
a batch reads rules and subscriptions once, and an event sees what the events before it in its batch wrote."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.notifications.config import NotificationsConfig
from services.notifications.events import EventHandler
from shared.events import Envelope, EventConsumer, make_event
from tests.notifications.test_alerts import case_reported
from tests.support import Stack, counting_consumer, new_municipality


def _event(type_: str, municipality: str, data: dict[str, Any], source: str = "mkr/intake") -> Envelope:
    subject = str(data.get("case_id") or data.get("shelter_id") or data.get("member_id") or municipality)
    return make_event(type_=type_, source=source, subject=subject, municipality=municipality, data=data)


def _beds(municipality: str, shelter_id: str, free_beds: int, member_id: str | None = None) -> Envelope:
    data = {"shelter_id": shelter_id, "member_id": member_id, "capacity": 4, "free_beds": free_beds}
    return _event("shelter.availability_changed", municipality, data, source="mkr/shelter")


def _referral(municipality: str, member_id: str, kind: str = "shelter") -> Envelope:
    data = {
        "case_id": str(uuid.uuid4()), "case_number": "ELB-2026-00001", "referral_id": str(uuid.uuid4()),
        "to_member_id": member_id, "to_member_kind": kind, "status": "pending", "urgency": "emergency",
        "ack_due_at": (datetime.now(UTC) + timedelta(hours=4)).isoformat(),
    }  # fmt: skip
    return _event("referral.created", municipality, data, source="mkr/referral")


def _consumer(stack: Stack, name: str, handler: Any) -> EventConsumer:
    runtime = stack.apps["notifications"].state.runtime
    return EventConsumer(
        name=f"{name}-{uuid.uuid4().hex[:8]}", settings=stack.settings, topics=[], sessions=runtime.sessions,
        handler=handler,
    )  # fmt: skip


class PausedAfterFirst:
    """The notifications handler, pausing after each batch's first event until the other batch has applied
    its first event too (or `patience` seconds passed): the two batches interleave if the locks let them."""

    def __init__(self, handler: EventHandler, mine: asyncio.Event, theirs: asyncio.Event, first: uuid.UUID) -> None:
        self.handler, self.mine, self.theirs, self.first = handler, mine, theirs, first
        self.patience = 3.0

    async def __call__(self, session: AsyncSession, event: Envelope) -> None:
        await self.handler(session, event)
        if event.id == self.first:
            self.mine.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.theirs.wait(), self.patience)


async def _rows(stack: Stack, sql: str, **params: Any) -> list[Any]:
    async with stack.apps["notifications"].state.runtime.sessions() as session:
        return list((await session.execute(sa.text(sql), params)).all())


async def test_two_batches_in_opposite_orders_do_not_deadlock(stack: Stack) -> None:
    """Batch A raises an alert (the alert lock) and then watches a municipality's beds (its row lock); batch
    B does the same in the opposite order. Had each taken its locks as its events came, A would hold the
    alert lock and wait for the row, B the row and wait for the alert lock: PostgreSQL's deadlock error
    (this test failed so with the lock taken at the first alert). Both batches apply, every effect once."""
    alerts_in, beds_in = new_municipality(), new_municipality()
    shelter = str(uuid.uuid4())
    case_a, case_b = case_reported("high"), case_reported("high")
    batch_a = [_event("case.reported", alerts_in, case_a), _beds(beds_in, shelter, 0)]
    batch_b = [_beds(beds_in, shelter, 1), _event("case.reported", alerts_in, case_b)]
    a_started, b_started = asyncio.Event(), asyncio.Event()
    handler = EventHandler(stack.settings, NotificationsConfig())
    first = _consumer(stack, "deadlock-a", PausedAfterFirst(handler, a_started, b_started, batch_a[0].id))
    second = _consumer(stack, "deadlock-b", PausedAfterFirst(handler, b_started, a_started, batch_b[0].id))

    async def b_after_a() -> list[bool]:
        await a_started.wait()  # A holds what its first event locked before B begins
        return await second.apply_batch(batch_b)

    done = await asyncio.wait_for(asyncio.gather(first.apply_batch(batch_a), b_after_a()), timeout=30)

    assert done == [[True, True], [True, True]]
    alerts = await _rows(stack, "SELECT case_id, type FROM alerts WHERE municipality = :m", m=alerts_in)
    assert sorted((str(a.case_id), a.type) for a in alerts) == sorted(
        [(case_a["case_id"], "case.high_risk"), (case_b["case_id"], "case.high_risk")]
    )
    # B applied after A: the last word on the shelter is B's (one free bed), the watch saw none free once.
    beds = await _rows(stack, "SELECT free_beds FROM shelter_free_beds WHERE shelter_id = :s", s=shelter)
    assert [b.free_beds for b in beds] == [1]
    watch = await _rows(stack, "SELECT episode, none_free_since FROM municipality_bed_alerts WHERE municipality = :m",
                        m=beds_in)  # fmt: skip
    assert [(w.episode, w.none_free_since) for w in watch] == [(1, None)]


async def test_a_batch_reads_rules_and_subscriptions_once_and_locks_first(stack: Stack) -> None:
    """Twenty events of a batch: one alert lock (its first statement after the inbox row, with the reads
    generation), one read of the rules and one of the subscriptions, one insert of all its alerts; per event
    only its own projection writes. The next batch reads neither again while no rule or subscription changed."""
    municipality = new_municipality()
    engine, statements, consumer = counting_consumer(
        stack.settings, "notifications", f"statements-{municipality}",
        EventHandler(stack.settings, NotificationsConfig()),
    )
    reports = [case_reported("high" if n % 2 else "low") for n in range(10)]
    events = [_event("case.reported", municipality, r) for r in reports]
    events += [_referral(municipality, str(uuid.uuid4()), "police") for _ in range(10)]
    try:
        assert await consumer.apply_batch(events) == [True] * 20
        first = list(statements)
        statements.clear()
        assert await consumer.apply_batch([_event("case.reported", municipality, case_reported("low"))]) == [True]
        again = list(statements)
    finally:
        await engine.dispose()
    assert [s.split()[:3] for s in again] == [
        ["INSERT", "INTO", "processed_events"], ["SELECT", "pg_advisory_xact_lock($1::INTEGER)", "AS"],
        ["INSERT", "INTO", "case_police"], ["INSERT", "INTO", "alerts"],
    ], again
    statements = first
    assert "processed_events" in statements[0]
    assert "pg_advisory_xact_lock" in statements[1]
    assert sum("pg_advisory_xact_lock" in s for s in statements) == 1
    assert sum("FROM alert_rules" in s for s in statements) == 1
    assert sum("FROM subscriptions" in s for s in statements) == 1
    # The batch's twenty alerts in one statement as it commits; per report the reporting police member, per
    # referral its police member and that member's shelter (none: each referral names another member).
    assert sum(s.startswith("INSERT INTO alerts") for s in statements) == 1
    assert len(statements) == 2 + 2 + 1 + 10 + 10 + 10, statements
    alerts = await _rows(stack, "SELECT type FROM alerts WHERE municipality = :m", m=municipality)
    assert sorted(a.type for a in alerts) == sorted(["case.high_risk"] * 5 + ["case.new"] * 6 + ["referral.new"] * 10)


async def test_an_event_sees_what_the_events_before_it_in_its_batch_wrote(stack: Stack) -> None:
    """A member's e-mail address and its shelter, looked up once per batch, are looked up again after an
    event of the batch changed them: the referral after the change is e-mailed to the new address and
    reaches the shelter's staff, though the batch's alerts are all inserted as it commits."""
    municipality, member, shelter = new_municipality(), str(uuid.uuid4()), str(uuid.uuid4())
    config = NotificationsConfig(smtp_host="127.0.0.1")  # e-mail rows are queued (this test sends none)
    consumer = _consumer(stack, "sees", EventHandler(stack.settings, config))

    def saved(email: str) -> Envelope:
        data = {"member_id": member, "kind": "shelter", "email": email}
        return _event("member.saved", municipality, data, source="mkr/referral")

    before, after = _referral(municipality, member), _referral(municipality, member)
    batch = [saved("old@example.org"), before, saved("new@example.org"), _beds(municipality, shelter, 2, member),
             after]  # fmt: skip
    assert await consumer.apply_batch(batch) == [True] * 5

    alerts = await _rows(
        stack, "SELECT id, event_id, shelter_id FROM alerts WHERE municipality = :m AND type = 'referral.new'",
        m=municipality,
    )  # fmt: skip
    shelter_of = {a.event_id: a.shelter_id for a in alerts}
    assert shelter_of == {before.id: None, after.id: shelter}
    mails = await _rows(stack, "SELECT event_id, address FROM deliveries WHERE channel = 'email' AND municipality = :m",
                        m=municipality)  # fmt: skip
    assert sorted((m.event_id == after.id, m.address) for m in mails) == [
        (False, "old@example.org"), (True, "new@example.org")
    ]


async def test_a_rule_changed_between_batches_is_read_again(stack: Stack) -> None:
    """The rules kept between batches are read again once a rule changed (the reads generation moved): a rule
    added after a first batch raises its alert in the next."""
    municipality = new_municipality()
    consumer = _consumer(stack, "rules", EventHandler(stack.settings, NotificationsConfig()))
    probe = case_reported("low")
    assert await consumer.apply_batch([_event("case.reported", municipality, case_reported("low"))]) == [True]
    runtime = stack.apps["notifications"].state.runtime
    async with runtime.sessions() as session, session.begin():
        rule_id = await session.scalar(
            sa.text(
                "INSERT INTO alert_rules (event_type, alert_type, recipient_kind, recipient_ref, severity, channels,"
                " condition, priority, enabled) VALUES ('case.reported', 'case.batch_probe', 'role', 'coordinator',"
                " 'info', ARRAY['inbox'], CAST(:condition AS jsonb), 50, true) RETURNING id"
            ),
            {"condition": json.dumps({"case_number": {"in": [probe["case_number"]]}})},
        )
    try:
        assert await consumer.apply_batch([_event("case.reported", municipality, probe)]) == [True]
    finally:
        async with runtime.sessions() as session, session.begin():
            await session.execute(sa.text("DELETE FROM alert_rules WHERE id = :id"), {"id": rule_id})
    alerts = await _rows(stack, "SELECT type FROM alerts WHERE case_id = :c", c=uuid.UUID(probe["case_id"]))
    assert sorted(a.type for a in alerts) == ["case.batch_probe", "case.new"]

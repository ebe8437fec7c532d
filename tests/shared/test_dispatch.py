"""One registry `{event model: handler}` per consumer, handlers receive typed models, one rule for poison.

A poison event is recorded as `rejected:<reason>`, counted in mkr_events_rejected_total{reason} and never
retried, whether the envelope's check refused it on arrival (tests/shared/test_event_contracts.py, every
service's consumer) or the registry or a handler found it unusable (here, on a real database).
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from aiokafka.structs import ConsumerRecord
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.contracts import EventRejected
from shared.contracts import events as contract
from shared.dispatch import EventHandlers, Received
from shared.events import EVENTS_REJECTED, Envelope, EventConsumer, event_of, make_event
from shared.observability import EVENTS_CONSUMED
from shared.settings import Settings


def _reopened(case_id: uuid.UUID) -> Envelope:
    return event_of(contract.CaseReopened(case_id=case_id, case_number="T-1"), subject=str(case_id),
                    municipality="elbasan")  # fmt: skip


async def _statuses(engine: AsyncEngine, consumer: str) -> dict[uuid.UUID, str]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT event_id, status FROM processed_events WHERE consumer = :c"), {"c": consumer}
        )
        return {row.event_id: row.status for row in rows}


async def test_handlers_receive_typed_models_and_a_poison_event_is_rejected_once(
    settings: Settings, event_db: AsyncEngine
) -> None:
    seen: list[Received[Any]] = []
    calls: dict[uuid.UUID, int] = {}
    poison_case = uuid.uuid4()

    async def on_reopened(session: AsyncSession, event: Received[contract.CaseReopened]) -> None:
        calls[event.id] = calls.get(event.id, 0) + 1
        if event.data.case_id == poison_case:
            raise EventRejected("invalid_data")
        seen.append(event)

    handlers = EventHandlers({contract.CaseReopened: on_reopened})
    assert handlers.topics == (contract.INTAKE_TOPIC,) and handlers.types == {"case.reopened"}
    name = f"dispatch-{uuid.uuid4().hex[:6]}"
    consumer = EventConsumer(
        name=name, settings=settings, topics=[], sessions=async_sessionmaker(event_db, expire_on_commit=False),
        handler=handlers, max_attempts=3,
    )  # fmt: skip
    good, poison = _reopened(uuid.uuid4()), _reopened(poison_case)
    # Data that is not the model's: what a consumer reading without the envelope check would get.
    bad_data = make_event(type_="case.reopened", source="mkr/intake", subject="s", municipality="elbasan",
                          data={"case_id": "not-a-uuid"})  # fmt: skip
    # A contract event this registry has no handler for: acknowledged, no effect.
    other = event_of(contract.CaseClosed(case_id=uuid.uuid4(), case_number="T-2"), subject="s", municipality="elbasan")
    before = EVENTS_REJECTED.labels("invalid_data")._value.get()
    for event in (poison, bad_data, good, other):
        await consumer._handle(event)
    await consumer._handle(poison)  # redelivered: already recorded, the handler does not run again

    assert calls[poison.id] == 1, "a rejected event must not be retried"
    assert [event.id for event in seen] == [good.id]
    assert isinstance(seen[0].data, contract.CaseReopened) and isinstance(seen[0].data.case_id, uuid.UUID)
    assert seen[0].municipality == "elbasan" and seen[0].type == "case.reopened"
    assert await _statuses(event_db, name) == {
        poison.id: "rejected:invalid_data",
        bad_data.id: "rejected:invalid_data",
        good.id: "done",
        other.id: "done",
    }
    assert EVENTS_REJECTED.labels("invalid_data")._value.get() - before == 2


async def test_a_registry_s_consumer_records_only_the_events_it_acts_on(
    settings: Settings, event_db: AsyncEngine
) -> None:
    """Events of a type the registry has no handler (and no `every`) for are acknowledged with no transaction
    and no inbox row, and counted as `ignored`; those it acts on are applied and recorded as before."""
    applied: list[uuid.UUID] = []

    async def on_reopened(session: AsyncSession, event: Received[contract.CaseReopened]) -> None:
        applied.append(event.id)

    handlers = EventHandlers({contract.CaseReopened: on_reopened})
    assert handlers.acts_on("case.reopened") and not handlers.acts_on("case.closed")
    name = f"ignoring-{uuid.uuid4().hex[:6]}"
    consumer = EventConsumer(
        name=name, settings=settings, topics=[], sessions=async_sessionmaker(event_db, expire_on_commit=False),
        handler=handlers,
    )  # fmt: skip

    def closed() -> Envelope:
        case_id = uuid.uuid4()
        return event_of(contract.CaseClosed(case_id=case_id, case_number="T-3"), subject=str(case_id),
                        municipality="elbasan")  # fmt: skip

    events = [closed(), _reopened(uuid.uuid4()), closed(), _reopened(uuid.uuid4())]
    topic = settings.topic(contract.INTAKE_TOPIC)
    records = [
        ConsumerRecord(topic=topic, partition=0, offset=offset, timestamp=0, timestamp_type=0, key=None,
                       value=event.model_dump_json().encode(), checksum=None, serialized_key_size=-1,
                       serialized_value_size=len(event.model_dump_json()), headers=())
        for offset, event in enumerate(events)
    ]  # fmt: skip
    before = EVENTS_CONSUMED.labels(name, "ignored")._value.get()
    await consumer._handle_all(records)
    assert applied == [events[1].id, events[3].id]
    assert await _statuses(event_db, name) == {events[1].id: "done", events[3].id: "done"}
    assert EVENTS_CONSUMED.labels(name, "ignored")._value.get() - before == 2
    await consumer._handle_all(records[:1])  # a batch of ignored events only: still nothing recorded
    assert await _statuses(event_db, name) == {events[1].id: "done", events[3].id: "done"}


def test_a_registry_takes_only_the_contracts_event_models() -> None:
    async def handler(session: AsyncSession, event: Received[Any]) -> None:
        return None

    with pytest.raises(TypeError):
        EventHandlers({contract.CaseEventData: handler})  # a base of event models, not an event type
    both = EventHandlers({contract.ShelterFull: handler}, every=handler, topics=contract.ALL_TOPICS)
    assert both.acts_on("case.closed")  # `every` runs for every contract event it reads
    assert both.topics == (contract.SHELTER_TOPIC, *[t for t in contract.ALL_TOPICS if t != contract.SHELTER_TOPIC])

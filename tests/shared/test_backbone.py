"""The outbox relay and the idempotent consumer, on a real database and a real broker."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiokafka import AIOKafkaProducer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared import db
from shared.embedded import free_port, start_broker, stop_process
from shared.events import (
    Envelope,
    EventConsumer,
    OutboxRelay,
    ensure_topics,
    event_metadata,
    flush_deferred,
    publish,
)
from shared.observability import EVENTS_CONSUMED
from shared.settings import Settings
from tests.support import read_envelopes, read_topic, wait_for

# On event_metadata, so the `event_db` fixture (tests/conftest.py) creates it with the event tables.
effects = sa.Table(
    "effects",
    event_metadata,
    sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
    sa.Column("event_id", sa.Uuid, nullable=False),
)
TOPIC = "mkr.intake.events"


def _event(key: str, n: int) -> Envelope:
    return Envelope(type="test.step", source="tests", subject=key, municipality="elbasan", data={"n": n})


@pytest.mark.timeout(300)  # generous waits for a loaded machine; each ends as soon as its condition holds
async def test_relay_survives_a_broker_outage_without_loss_or_reordering(
    settings: Settings, event_db: AsyncEngine, tmp_path: Path
) -> None:
    port = free_port()
    broker = start_broker(port, tmp_path / "tansu.log")
    settings = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{port}", "kafka_topic_prefix": f"o{uuid.uuid4().hex[:6]}."}
    )
    relay = OutboxRelay(settings, event_db, db.asyncpg_dsn(event_db.url))
    sessions = async_sessionmaker(event_db, expire_on_commit=False)
    await relay.start()
    try:
        stop_process(broker)  # the broker goes away while changes keep being accepted
        keys = [f"case-{i}" for i in range(3)]
        for n in range(10):
            async with sessions() as session, session.begin():
                for key in keys:
                    await publish(session, settings, TOPIC, _event(key, n), key=key)
            relay.wake()
        await asyncio.sleep(1.5)  # the relay tries and fails meanwhile
        async with event_db.connect() as conn:
            pending = await conn.scalar(sa.text("SELECT count(*) FROM outbox WHERE published_at IS NULL"))
        assert pending == 30

        broker = start_broker(port, tmp_path / "tansu.log")  # back, and empty (memory only)

        async def drained() -> bool:
            async with event_db.connect() as conn:
                return await conn.scalar(sa.text("SELECT count(*) FROM outbox WHERE published_at IS NULL")) == 0

        await wait_for(drained, timeout=90, what="the outbox to drain after the broker returned")
        events = await read_envelopes(settings, TOPIC, want=30, timeout=60)
        assert len(events) == 30
        for key in keys:
            steps = [e.data["n"] for e in events if e.subject == key]
            assert steps == list(range(10)), f"{key} out of order or incomplete: {steps}"
    finally:
        await relay.stop()
        stop_process(broker)


async def test_same_event_twice_has_one_effect(settings: Settings, event_db: AsyncEngine) -> None:
    await ensure_topics(settings)
    sessions = async_sessionmaker(event_db, expire_on_commit=False)

    async def record_effect(session: AsyncSession, event: Envelope) -> None:
        await session.execute(effects.insert().values(event_id=event.id))

    name = f"dup-{uuid.uuid4().hex[:6]}"
    consumer = EventConsumer(
        name=name, settings=settings, topics=[TOPIC], sessions=sessions, handler=record_effect, validate=False
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    await consumer.start()
    try:
        twice, once = _event("k", 1), _event("k", 2)
        for event in (twice, twice, once):
            await producer.send_and_wait(settings.topic(TOPIC), event.model_dump_json().encode(), key=b"k")

        async def mine() -> list[uuid.UUID]:
            async with event_db.connect() as conn:
                rows = (await conn.execute(sa.select(effects.c.event_id))).scalars().all()
            return [r for r in rows if r in {twice.id, once.id}]

        async def all_seen() -> bool:
            # The repeat was consumed (counted as a duplicate) and the event after it was applied.
            return EVENTS_CONSUMED.labels(name, "duplicate")._value.get() >= 1 and once.id in await mine()

        await wait_for(all_seen, timeout=60, what="the repeated and the following event to be consumed")
        assert sorted(map(str, await mine())) == sorted([str(twice.id), str(once.id)])
    finally:
        await consumer.stop()
        await producer.stop()


async def test_failed_effect_leaves_no_trace_and_is_retried(settings: Settings, event_db: AsyncEngine) -> None:
    sessions = async_sessionmaker(event_db, expire_on_commit=False)
    calls = 0

    async def flaky(session: AsyncSession, event: Envelope) -> None:
        nonlocal calls
        calls += 1
        await session.execute(effects.insert().values(event_id=event.id))
        if calls == 1:
            raise RuntimeError("first attempt fails after writing")

    consumer = EventConsumer(name="flaky", settings=settings, topics=[TOPIC], sessions=sessions, handler=flaky)
    event = _event("k", 1)
    with pytest.raises(RuntimeError):
        await consumer.apply(event)
    async with event_db.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(effects)) == 0
        assert await conn.scalar(sa.text("SELECT count(*) FROM processed_events")) == 0
    assert await consumer.apply(event) is True
    assert await consumer.apply(event) is False  # a redelivery after the effect changes nothing
    async with event_db.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(effects)) == 1


async def test_a_batch_applies_each_event_once_and_in_order(settings: Settings, event_db: AsyncEngine) -> None:
    sessions = async_sessionmaker(event_db, expire_on_commit=False)

    async def record_effect(session: AsyncSession, event: Envelope) -> None:
        await session.execute(effects.insert().values(event_id=event.id))

    consumer = EventConsumer(name="batch", settings=settings, topics=[TOPIC], sessions=sessions, handler=record_effect)
    first, second, third = _event("k", 1), _event("k", 2), _event("k", 3)
    assert await consumer.apply(second) is True
    # A repeat inside the batch and an event applied before are both duplicates; the rest is applied in order.
    assert await consumer.apply_batch([first, first, second, third]) == [True, False, False, True]
    assert await consumer.apply_batch([third, first]) == [False, False]
    async with event_db.connect() as conn:
        rows = (await conn.execute(sa.select(effects.c.event_id).order_by(effects.c.id))).scalars().all()
        inbox = await conn.scalar(sa.text("SELECT count(*) FROM processed_events WHERE consumer = 'batch'"))
    assert list(rows) == [second.id, first.id, third.id]
    assert inbox == 3


async def test_a_batch_publishes_its_events_in_one_statement_at_its_end(
    settings: Settings, event_db: AsyncEngine
) -> None:
    """What a batch's handlers publish goes into the outbox in one INSERT, in the events' order, inside the
    batch's transaction: a batch that fails leaves none of it; a reader that needs the rows flushes them."""
    sessions = async_sessionmaker(event_db, expire_on_commit=False)
    statements: list[str] = []
    sa.event.listen(event_db.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    seen: list[int] = []

    async def announce(session: AsyncSession, event: Envelope) -> None:
        if event.data["n"] < 0:
            raise RuntimeError("a bad event after the others published")
        await publish(session, settings, TOPIC, _event("k", event.data["n"]), "k")
        await publish(session, settings, TOPIC, _event("k", event.data["n"] * 10), "k")
        if event.data["n"] == 3:  # a reader of the outbox inside the batch sees what the batch wrote so far
            await flush_deferred(session)
            seen.append(await session.scalar(sa.text("SELECT count(*) FROM outbox")) or 0)

    consumer = EventConsumer(name="announce", settings=settings, topics=[TOPIC], sessions=sessions, handler=announce)
    with pytest.raises(RuntimeError):
        await consumer.apply_batch([_event("k", 1), _event("k", -1)])
    async with event_db.connect() as conn:
        assert await conn.scalar(sa.text("SELECT count(*) FROM outbox")) == 0
    statements.clear()
    assert await consumer.apply_batch([_event("k", n) for n in (1, 2, 3, 4)]) == [True] * 4
    assert seen == [6]
    assert sum(1 for text in statements if text.startswith("INSERT INTO outbox")) == 2  # the flush, the end
    async with event_db.connect() as conn:
        payloads = (await conn.execute(sa.text("SELECT payload FROM outbox ORDER BY id"))).scalars().all()
    assert [json.loads(p)["data"]["n"] for p in payloads] == [1, 10, 2, 20, 3, 30, 4, 40]


async def test_a_failing_event_in_a_batch_holds_back_nothing(settings: Settings, event_db: AsyncEngine) -> None:
    """The batch's transaction fails as a whole; its events are then applied one by one: each good one once,
    in order, the bad one recorded as failed."""
    settings = settings.model_copy(update={"kafka_topic_prefix": f"b{uuid.uuid4().hex[:6]}."})
    await ensure_topics(settings)
    sessions = async_sessionmaker(event_db, expire_on_commit=False)
    good = [_event("case-b", n) for n in range(3)]
    poison = _event("case-b", 99)
    calls: dict[uuid.UUID, int] = {}

    async def handler(session: AsyncSession, event: Envelope) -> None:
        calls[event.id] = calls.get(event.id, 0) + 1
        await session.execute(effects.insert().values(event_id=event.id))
        if event.id == poison.id:
            raise ValueError("this event cannot be applied")

    name = f"poison-{uuid.uuid4().hex[:6]}"
    consumer = EventConsumer(
        name=name, settings=settings, topics=[TOPIC], sessions=sessions, handler=handler, max_attempts=2,
        validate=False,
    )
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        # On the topic before the consumer starts: its first fetch brings all four, one partition, one batch.
        for event in (good[0], poison, good[1], good[2]):
            await producer.send_and_wait(settings.topic(TOPIC), event.model_dump_json().encode(), key=b"case-b")
        await consumer.start()

        async def settled() -> list[str]:
            async with event_db.connect() as conn:
                rows = (
                    await conn.execute(sa.text("SELECT status FROM processed_events WHERE consumer = :c"), {"c": name})
                ).scalars().all()
                return list(rows) if len(rows) == 4 else []

        statuses = await wait_for(settled, timeout=60, what="all four events to be settled")
    finally:
        await consumer.stop()
        await producer.stop()
    assert sorted(statuses) == ["done", "done", "done", "failed"]
    async with event_db.connect() as conn:
        rows = (await conn.execute(sa.select(effects.c.event_id).order_by(effects.c.id))).scalars().all()
    assert [r for r in rows if r in {e.id for e in good} | {poison.id}] == [e.id for e in good]
    # The first good event ran in the failed batch and again on its own; the bad one once there, twice alone.
    assert calls[good[0].id] == 2
    assert calls[poison.id] == 3
    assert EVENTS_CONSUMED.labels(name, "failed")._value.get() == 1


async def test_event_rows_never_hold_personal_fields() -> None:
    envelope = Envelope(type="t", source="s", subject="x", municipality="m")
    assert set(json.loads(envelope.model_dump_json())) == {
        "specversion", "id", "type", "source", "time", "subject", "municipality", "schemaversion",
        "datacontenttype", "data",
    }


@pytest.mark.timeout(300)  # its waits are generous for a loaded machine, and end as soon as the events are there
async def test_relay_replays_events_a_restarted_empty_broker_lost(
    settings: Settings, event_db: AsyncEngine, tmp_path: Path
) -> None:
    port = free_port()
    broker = start_broker(port, tmp_path / "tansu.log")
    settings = settings.model_copy(
        update={"kafka_bootstrap": f"127.0.0.1:{port}", "kafka_topic_prefix": f"r{uuid.uuid4().hex[:6]}."}
    )
    relay = OutboxRelay(settings, event_db, db.asyncpg_dsn(event_db.url))
    sessions = async_sessionmaker(event_db, expire_on_commit=False)
    await relay.start()

    async def add(n: int) -> None:
        async with sessions() as session, session.begin():
            await publish(session, settings, TOPIC, _event("case-x", n), key="case-x")
        relay.wake()

    async def drained() -> bool:
        async with event_db.connect() as conn:
            return await conn.scalar(sa.text("SELECT count(*) FROM outbox WHERE published_at IS NULL")) == 0

    try:
        for n in range(5):
            await add(n)
        # Generous limits (a loaded machine): each wait ends as soon as its condition holds.
        await wait_for(drained, timeout=60, what="the first events to be acknowledged")
        assert len(await read_envelopes(settings, TOPIC, want=5, timeout=60)) == 5

        stop_process(broker)  # acknowledged, and now gone with the memory broker
        broker = start_broker(port, tmp_path / "tansu.log")
        await add(5)

        def replayed(values: list[bytes]) -> bool:
            steps = [Envelope.model_validate_json(value).data["n"] for value in values]
            # The first event after the restart may arrive before the replay; the replay then re-sends
            # everything from the start in order (consumers drop the repeats by event id).
            return steps[-6:] == list(range(6))

        async def complete() -> bool:
            # One reader per attempt, reading until the replay is all there (it may subscribe before the
            # relay has recreated the topic on the empty broker: then the next attempt sees it).
            return replayed(await read_topic(settings, TOPIC, until=replayed, timeout=15))

        await wait_for(complete, timeout=120, interval=0.5, what="the lost events to be published again, in order")
    finally:
        await relay.stop()
        stop_process(broker)

"""The watchdog's "no progress" clock measures time spent behind, not time spent idle or frozen.

Issue #12's stalls under load: a consumer caught up for longer than the stall limit, then one new record,
was recreated ("fetched nothing for 15 s while 1 records wait") at the first check that saw the record
before the loop had drained it, because the clock ran from the last progress, idle time included. The
same happened after the event loop had been frozen (a synchronous test on the session's loop, a starved
process) with a record waiting. And each such recreation cost ~18 s on Tansu: aiokafka sends LeaveGroup
only from generation 1 on, Tansu's first generation is 0, so the old member stayed in the group until its
session timed out and the new one waited for it. Real broker, real database; the positive control shows
the watchdog still recreates a consumer that is truly stuck.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.events import _FROZEN_GAP, ConsumerStalled, Envelope, EventConsumer, ensure_topics
from shared.settings import Settings
from tests.support import wait_for

TOPIC = "mkr.intake.events"
STALL = 3.0


@pytest.fixture
async def private(settings: Settings) -> Settings:
    private = settings.model_copy(update={"kafka_topic_prefix": f"wc{uuid.uuid4().hex[:6]}.",
                                          "kafka_consumer_stall_seconds": STALL})
    await ensure_topics(private, [TOPIC])
    return private


async def _send(settings: Settings, n: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        event = Envelope(type="test.step", source="tests", subject="case-1", municipality="elbasan", data={"n": n})
        await producer.send_and_wait(settings.topic(TOPIC), event.model_dump_json().encode(), key=b"case-1")
    finally:
        await producer.stop()


async def _drain(consumer: AIOKafkaConsumer, seconds: float) -> int:
    got = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        got += sum(len(r) for r in (await consumer.getmany(timeout_ms=200)).values())
    return got


async def test_a_record_arriving_after_a_long_idle_spell_is_not_a_stall(private: Settings) -> None:
    watched = EventConsumer(name="clock", settings=private, topics=[TOPIC], sessions=None,  # type: ignore[arg-type]
                            handler=None, validate=False)  # type: ignore[arg-type]
    consumer = watched._new_consumer()
    await consumer.start()
    try:
        await _send(private, 0)

        async def assigned_and_read() -> bool:
            return bool(consumer.assignment()) and await _drain(consumer, 0.5) > 0

        await wait_for(assigned_and_read, timeout=45, what="the consumer to hold its partitions and read")
        # Caught up and idle for longer than the stall limit, checked as the consumer loop checks.
        idle_until = time.monotonic() + STALL + 1.5
        while time.monotonic() < idle_until:
            assert await watched._watch(consumer, force=True) is False
            await _drain(consumer, 0.5)
        # One new record, seen by the check before the loop drained it: behind for 0 s, not a stall.
        await _send(private, 1)
        assert await watched._watch(consumer, force=True) is False
        # Then the loop frozen (a synchronous stretch) past the stall limit: nobody could fetch meanwhile.
        time.sleep(_FROZEN_GAP + 1.0)  # the freeze is the point
        assert await watched._watch(consumer, force=True) is False
        assert await _drain(consumer, 2.0) == 1
        assert await watched._watch(consumer, force=True) is False

        # The positive control: behind and not reading (paused), the watchdog still recreates it.
        consumer.pause(*consumer.assignment())
        await _send(private, 2)
        deadline = time.monotonic() + STALL + 10
        with pytest.raises(ConsumerStalled) as stalled:
            while time.monotonic() < deadline:
                await watched._watch(consumer, force=True)
                await _drain(consumer, 0.5)
        assert stalled.value.code == "no_progress"
    finally:
        await consumer.stop()


async def test_a_frozen_event_loop_with_a_record_waiting_is_not_a_stall(
    private: Settings, event_db: AsyncEngine
) -> None:
    handled: list[int] = []

    async def handler(session: AsyncSession, event: Envelope) -> None:
        handled.append(int(event.data["n"]))

    consumer = EventConsumer(name="frozen", settings=private, topics=[TOPIC], handler=handler, validate=False,
                             sessions=async_sessionmaker(event_db, expire_on_commit=False))
    await consumer.start()
    try:
        await _send(private, 0)

        async def first() -> bool:
            return handled == [0]

        await wait_for(first, timeout=45, what="the first event handled")
        await asyncio.sleep(STALL + 1.5)  # caught up, idle longer than the stall limit
        await _send(private, 1)
        # A synchronous stretch on the consumer's loop (a sync test on the session's loop, a starved
        # process): the consumer has no chance to fetch for longer than the stall limit.
        time.sleep(STALL + 1.0)  # the freeze is the point
        started = time.monotonic()

        async def second() -> bool:
            return handled == [0, 1]

        await wait_for(second, timeout=15, what="the waiting event handled after the freeze")
        assert time.monotonic() - started < 5, "the event waited for a recreation"
        await asyncio.sleep(STALL)
        assert consumer.last_recreated_reason is None, consumer.last_recreated_reason
    finally:
        await consumer.stop()


async def _members(settings: Settings, group: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
        [described] = response.groups
        return [member[0] for member in described[5]]
    finally:
        await admin.close()


async def test_a_retired_consumer_leaves_its_group_in_tansus_generation_0(private: Settings) -> None:
    watched = EventConsumer(name="leaver", settings=private, topics=[TOPIC], sessions=None,  # type: ignore[arg-type]
                            handler=None, validate=False)  # type: ignore[arg-type]
    old = watched._new_consumer()
    await old.start()
    try:
        async def assigned() -> bool:
            return bool(old.assignment())

        await wait_for(assigned, timeout=45, what="the first member to hold its partitions")
        assert old._coordinator.generation == 0  # Tansu's first generation; Apache Kafka's is 1
        assert len(await _members(private, watched.group_id)) == 1
    finally:
        await watched._retire(old)
    # Gone at once, not after its session timeout: a replacement is assigned after one join.
    assert await _members(private, watched.group_id) == []
    new = watched._new_consumer()
    started = time.monotonic()
    await new.start()
    try:
        async def replaced() -> bool:
            return bool(new.assignment())

        await wait_for(replaced, timeout=45, what="the replacement to hold the partitions")
        assert time.monotonic() - started < 12, "the replacement waited for the old member's session"
    finally:
        await watched._retire(new)

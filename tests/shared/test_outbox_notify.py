"""A committed outbox row wakes the relay by itself: the NOTIFY trigger every service's migrations create.

So no route, consumer or scan calls `relay.wake()` after its commit. Each service's database is migrated
to head, a relay polls only every two minutes, and a row written with `publish` (no wake) must be on the
broker within seconds; with the trigger disabled the same row stays put, so the NOTIFY is what moved it.
"""

from __future__ import annotations

import asyncio
import importlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

from mkr.registry import SERVICES, spec
from shared import db
from shared.events import Envelope, OutboxRelay, ensure_topics, outbox_table, publish
from shared.settings import Settings
from tests.support import read_envelopes, wait_for

POLL_SECONDS = 120.0  # far longer than the test waits: only the NOTIFY can explain a prompt publication
PROMPT_SECONDS = 10.0


@pytest.fixture
async def quiet_relay(settings: Settings, request: pytest.FixtureRequest) -> AsyncIterator[
    tuple[Settings, AsyncEngine, OutboxRelay]
]:
    service = request.param
    own = settings.model_copy(update={
        "database_prefix": f"mkrn_{uuid.uuid4().hex[:8]}_",
        "kafka_topic_prefix": f"n{uuid.uuid4().hex[:6]}.",
        "outbox_poll_seconds": POLL_SECONDS,
    })
    await db.ensure_database(own, service)
    engine = db.create_engine(own, service)
    relay = OutboxRelay(own, engine, db.asyncpg_dsn(db.service_url(own, service)), name=f"{service}-notify")
    try:
        await db.migrate(engine, db_migrations(service))
        await ensure_topics(own)
        await relay.start()
        # Idle: LISTENing, the first batch (nothing) done, the relay waits for a NOTIFY or its long poll.
        await asyncio.wait_for(relay.listener.connected.wait(), timeout=30)
        await wait_for(lambda: _healthy(relay), timeout=30, what="the relay's first (empty) batch")
        await asyncio.sleep(0.5)
        yield own, engine, relay
    finally:
        await relay.stop()
        await engine.dispose()
        await db.drop_database(own, service)


async def _healthy(relay: OutboxRelay) -> bool:
    return relay.healthy


def db_migrations(service: str) -> Path:
    package = importlib.import_module(spec(service).package)
    return Path(package.__file__ or "").parent / "migrations"


async def _published(engine: AsyncEngine, event_id: uuid.UUID) -> bool:
    async with engine.connect() as conn:
        at = await conn.scalar(sa.select(outbox_table.c.published_at).where(outbox_table.c.event_id == event_id))
    return at is not None


async def _write_without_wake(settings: Settings, engine: AsyncEngine, service: str) -> Envelope:
    topic = spec(service).topic
    assert topic is not None
    event = Envelope(type="test.notify", source=f"mkr/{service}", subject="s", municipality="elbasan", data={})
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    async with sessions() as session, session.begin():
        await publish(session, settings, topic, event, key="s")
    return event


@pytest.mark.parametrize("quiet_relay", SERVICES, indirect=True)
async def test_a_committed_outbox_row_is_published_without_wake(
    quiet_relay: tuple[Settings, AsyncEngine, OutboxRelay], request: pytest.FixtureRequest
) -> None:
    settings, engine, _ = quiet_relay
    service = request.node.callspec.params["quiet_relay"]
    started = time.monotonic()
    event = await _write_without_wake(settings, engine, service)
    await wait_for(lambda: _published(engine, event.id), timeout=PROMPT_SECONDS, what="the NOTIFY to wake the relay")
    assert time.monotonic() - started < PROMPT_SECONDS < POLL_SECONDS
    topic = spec(service).topic
    assert topic is not None
    received = await read_envelopes(settings, topic, want=1, timeout=20)
    assert [e.id for e in received] == [event.id]


@pytest.mark.parametrize("quiet_relay", ["intake"], indirect=True)
async def test_without_the_trigger_the_row_waits_for_the_poll(
    quiet_relay: tuple[Settings, AsyncEngine, OutboxRelay],
) -> None:
    settings, engine, _ = quiet_relay
    async with engine.begin() as conn:
        await conn.execute(sa.text("ALTER TABLE outbox DISABLE TRIGGER USER"))
    event = await _write_without_wake(settings, engine, "intake")
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        assert not await _published(engine, event.id), "published without a NOTIFY: the test proves nothing"
        await asyncio.sleep(0.2)

"""Test helpers: the running stack, tokens, waiting for asynchronous effects."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from fastapi import FastAPI
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from mkr.registry import SERVICES, spec
from shared.keys import issue_token
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.events import EventConsumer

T = TypeVar("T")


def token(settings: Settings, role: str, municipality: str = "elbasan", **claims: Any) -> str:
    return issue_token(settings, role=role, municipality=municipality, **claims)


def auth(settings: Settings, role: str, municipality: str = "elbasan", **claims: Any) -> dict[str, str]:
    return {"Authorization": f"Bearer {token(settings, role, municipality, **claims)}"}


async def wait_for(
    probe: Callable[[], Awaitable[T]], *, timeout: float = 10.0, interval: float = 0.05, what: str = "condition"
) -> T:
    """Poll `probe` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = await probe()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last value: {last!r}")


def create_app(service: str, settings: Settings, **options: Any) -> FastAPI:
    app: FastAPI = spec(service).create_app(settings, **options)
    return app


@dataclass
class Stack:
    """The four services running in this process, each with an HTTP client."""

    settings: Settings
    apps: dict[str, FastAPI] = field(default_factory=dict)
    clients: dict[str, httpx.AsyncClient] = field(default_factory=dict)

    @property
    def intake(self) -> httpx.AsyncClient:
        return self.clients["intake"]

    @property
    def referral(self) -> httpx.AsyncClient:
        return self.clients["referral"]

    @property
    def shelter(self) -> httpx.AsyncClient:
        return self.clients["shelter"]

    @property
    def notifications(self) -> httpx.AsyncClient:
        return self.clients["notifications"]

    def auth(self, role: str, municipality: str = "elbasan", **claims: Any) -> dict[str, str]:
        return auth(self.settings, role, municipality, **claims)


@asynccontextmanager
async def running_stack(
    settings: Settings,
    services: tuple[str, ...] = SERVICES,
    options: dict[str, dict[str, Any]] | None = None,
) -> AsyncIterator[Stack]:
    """Start the named services in this process; `options` are extra keyword arguments per factory.

    They start one after another (each migrates its database, and Alembic's context is process-global)
    and stop all at once: each stop is mostly waiting (consumers leaving their groups, the relay, the
    pools), so stopping them together takes as long as the slowest, not the sum."""
    stack = Stack(settings)
    lifespans: list[Any] = []

    async def stop_all() -> None:
        outcomes = await asyncio.gather(
            *(lifespan.__aexit__(None, None, None) for lifespan in reversed(lifespans)), return_exceptions=True
        )
        lifespans.clear()
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            raise failures[0]

    try:
        async with AsyncExitStack() as exits:
            for name in services:
                app = create_app(name, settings, **(options or {}).get(name, {}))
                lifespan = app.router.lifespan_context(app)
                await lifespan.__aenter__()
                lifespans.append(lifespan)
                client = httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url=f"http://{name}.test", timeout=30
                )
                await exits.enter_async_context(client)
                stack.apps[name] = app
                stack.clients[name] = client
            yield stack
    finally:
        await stop_all()


@asynccontextmanager
async def throwaway_event_database(
    settings: Settings, prefix: str = "events", metadata: MetaData | None = None
) -> AsyncIterator[AsyncEngine]:
    """A database of its own with `metadata`'s tables, by default `shared.events.event_metadata`'s (outbox,
    inbox, offsets, and any table a test module adds to that metadata), dropped afterwards: for the relay,
    consumer and idempotency tests that must not share the services' databases."""
    import uuid

    from shared import db
    from shared.events import event_metadata

    name = f"{prefix}{uuid.uuid4().hex[:6]}"
    await db.ensure_database(settings, name)
    engine = db.create_engine(settings, name)
    try:
        async with engine.begin() as conn:
            await conn.run_sync((metadata if metadata is not None else event_metadata).create_all)
        yield engine
    finally:
        await engine.dispose()
        await db.drop_database(settings, name)


def counting_consumer(
    settings: Settings, service: str, name: str, handler: Any
) -> tuple[AsyncEngine, list[str], EventConsumer]:
    """A consumer of `service`'s database on an engine of its own whose statements are listed as they are sent
    (the caller disposes of the engine): for tests that a batch costs a fixed number of statements."""
    from sqlalchemy import event as sa_event

    from shared import db
    from shared.events import EventConsumer

    engine = db.create_engine(settings, service)
    statements: list[str] = []
    sa_event.listen(engine.sync_engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    consumer = EventConsumer(
        name=name, settings=settings, topics=[], sessions=db.session_factory(engine), handler=handler
    )
    return engine, statements, consumer


def new_municipality() -> str:
    """A municipality slug of its own, so tests sharing the session's stack never see each other's data."""
    import uuid

    return f"m{uuid.uuid4().hex[:10]}"


def contract_report(municipality: str, **overrides: Any) -> dict[str, Any]:
    """A full report body of CONTRACT §5 with invented people."""
    body: dict[str, Any] = {
        "municipality": municipality,
        "source": "police",
        "survivor": {
            "first_name": "Ermira",
            "last_name": "Hoxha",
            "sex": "female",
            "date_of_birth": "1991-04-02",
            "ethnicity": "roma",
            "phone": "+355690000000",
            "address": "Rruga e Testit 1",
            "disability": False,
        },
        "children": [{"sex": "male", "age": 7}],
        "incident": {
            "occurred_at": "2026-11-20T21:30:00+01:00",
            "violence_types": ["physical", "psychological"],
            "perpetrator_relationship": "spouse",
            "description": "invented narrative for tests",
        },
        "needs": ["shelter", "legal_aid"],
        "risk_answers": {"threats_to_kill": False, "strangulation": False},
        "consent": {"share_with": ["police", "social_services", "shelter"], "given_at": "2026-11-21T09:00:00+01:00"},
    }
    body.update(overrides)
    return body


async def read_topic(
    settings: Settings, topic: str, *, until: Callable[[list[bytes]], bool], timeout: float = 20
) -> list[bytes]:
    """The raw values on a contract topic, read from the start, until `until(values)` holds or time runs out."""
    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(
        settings.topic(topic), bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, group_id=None,
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(values):
            for records in (await consumer.getmany(timeout_ms=300)).values():
                values.extend(record.value or b"" for record in records)
    finally:
        await asyncio.wait_for(consumer.stop(), timeout=10)
    return values


async def read_envelopes(settings: Settings, topic: str, want: int, timeout: float = 20) -> list[Any]:
    """At least `want` envelopes from a topic (fewer if time runs out), in topic order per partition."""
    from shared.events import Envelope

    values = await read_topic(settings, topic, until=lambda v: len(v) >= want, timeout=timeout)
    return [Envelope.model_validate_json(value) for value in values]


async def dump_database(stack: Stack, service: str) -> str:
    """Every row of every table of a service's database as JSON text (what a stolen dump would show)."""
    import sqlalchemy as sa

    engine = stack.apps[service].state.runtime.engine
    async with engine.connect() as conn:
        tables = (
            await conn.execute(sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"))
        ).scalars().all()
        rows: list[str] = []
        for table in tables:
            result = await conn.execute(sa.text(f'SELECT row_to_json(t)::text FROM "{table}" t'))
            rows.extend(f"{table}: {row}" for row in result.scalars().all())
    return "\n".join(rows)

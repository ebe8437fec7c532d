"""What every service's app factory shares: lifespan (database, outbox relay, consumers) and probes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared import db
from shared.auth import TokenVerifier
from shared.docs import install_offline_docs
from shared.errors import PROBLEM_RESPONSES, install_error_handlers
from shared.events import EventConsumer, Handler, OutboxRelay, broker_reachable, ensure_topics
from shared.observability import OUTBOX_PENDING, RequestContextMiddleware, metrics_endpoint
from shared.settings import ServiceName, Settings

log = logging.getLogger("mkr.app")


@dataclass
class ConsumerSpec:
    """A consumer a service runs: its name (the dedupe scope), topics and handler."""

    name: str
    topics: Sequence[str]
    handler: Handler
    # Events applied per transaction (None: EventConsumer.MAX_BATCH). 1 for a handler whose events take
    # shared locks in differing orders, where batches of two partitions could deadlock.
    max_batch: int | None = None


BackgroundJob = Callable[["ServiceRuntime"], Awaitable[None]]


@dataclass
class ServiceRuntime:
    """The live parts of one service process, on `app.state.runtime`."""

    name: ServiceName
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    consumers: list[EventConsumer] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


def create_service_app(
    *,
    name: ServiceName,
    settings: Settings,
    routers: Sequence[APIRouter],
    migrations: Path,
    consumers: Sequence[ConsumerSpec] = (),
    background: Sequence[BackgroundJob] = (),
    title: str,
    version: str = "1.0.0",
) -> FastAPI:
    """Build a service: routers, error handlers, probes, and a lifespan that migrates and starts workers."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await db.ensure_database(settings, name)
        engine = db.create_engine(settings, name)
        await db.migrate(engine, migrations)
        relay = OutboxRelay(settings, engine, db.asyncpg_dsn(db.service_url(settings, name)))
        runtime = ServiceRuntime(
            name=name, settings=settings, engine=engine, sessions=db.session_factory(engine), relay=relay
        )
        app.state.runtime = runtime
        with contextlib.suppress(Exception):
            # Topics now if the broker is up; the relay and consumers retry otherwise.
            await asyncio.wait_for(ensure_topics(settings), timeout=10)
        await relay.start()
        for spec in consumers:
            consumer = EventConsumer(
                name=f"{name}.{spec.name}",
                settings=settings,
                topics=spec.topics,
                sessions=runtime.sessions,
                handler=spec.handler,
                max_batch=spec.max_batch,
            )
            runtime.consumers.append(consumer)
            await consumer.start()
        for job in background:
            runtime.tasks.append(asyncio.create_task(_guarded(job, runtime), name=getattr(job, "__name__", "job")))
        try:
            yield
        finally:
            runtime.stopping.set()
            for task in runtime.tasks:
                task.cancel()
            for task in runtime.tasks:
                with contextlib.suppress(BaseException):
                    await asyncio.wait_for(task, timeout=10)
            for consumer in runtime.consumers:
                await consumer.stop()
            await relay.stop()
            await engine.dispose()

    app = FastAPI(title=title, version=version, lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.settings = settings
    app.state.verifier = TokenVerifier(settings)
    install_error_handlers(app)
    app.add_middleware(RequestContextMiddleware, service=name)

    @app.get("/healthz", tags=["probes"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", tags=["probes"], summary="200 only when the database and the broker answer")
    async def readyz() -> JSONResponse:
        runtime: ServiceRuntime = app.state.runtime
        database_ok, broker_ok = await asyncio.gather(
            db.ping(runtime.engine), broker_reachable(settings)
        )
        OUTBOX_PENDING.set(runtime.relay.pending)
        body = {
            "status": "ready" if database_ok and broker_ok else "unready",
            "checks": {"database": database_ok, "broker": broker_ok},
        }
        return JSONResponse(body, status_code=200 if database_ok and broker_ok else 503)

    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    install_offline_docs(app)  # /docs and /redoc from local assets (no CDN)
    for router in routers:
        app.include_router(router, responses=PROBLEM_RESPONSES)
    return app


async def _guarded(job: BackgroundJob, runtime: ServiceRuntime) -> None:
    """Run a periodic job for the service's life; a failure is logged and the job restarted."""
    attempt = 0
    while not runtime.stopping.is_set():
        try:
            await job(runtime)
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            attempt += 1
            log.warning("background job failed", extra={"error_class": type(exc).__name__})
            await asyncio.sleep(min(30, 0.5 * 2 ** min(attempt, 6)))

"""What every service's app factory shares: lifespan (database, outbox relay, consumers) and probes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import db
from shared.auth import TokenVerifier
from shared.docs import install_offline_docs
from shared.errors import PROBLEM_RESPONSES, install_error_handlers, problem_response
from shared.events import EventConsumer, Handler, OutboxRelay, broker_reachable, ensure_topics
from shared.observability import (
    OUTBOX_PENDING,
    RequestContextMiddleware,
    TracingMiddleware,
    configure_tracing,
    metrics_endpoint,
    tracing_enabled,
)
from shared.settings import Settings

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

    name: str
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    relay: OutboxRelay
    consumers: list[EventConsumer] = field(default_factory=list)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)


def create_service_app(
    *,
    name: str,
    settings: Settings,
    routers: Sequence[APIRouter],
    migrations: Path,
    consumers: Sequence[ConsumerSpec] = (),
    background: Sequence[BackgroundJob] = (),
    resources: Sequence[Callable[[], contextlib.AbstractAsyncContextManager[Any]]] = (),
    title: str,
    version: str = "1.0.0",
) -> FastAPI:
    """Build a service: routers, error handlers, probes, and a lifespan that migrates and starts workers.
    `resources`: opened before the migrations (which may need them: intake's key store), closed last."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with contextlib.AsyncExitStack() as opened:
            for resource in resources:
                await opened.enter_async_context(resource())
            async with _running(app) as running:
                yield running

    @asynccontextmanager
    async def _running(app: FastAPI) -> AsyncIterator[None]:
        await db.ensure_database(settings, name)
        engine = db.create_engine(settings, name)
        await db.migrate(engine, migrations, settings)
        relay = OutboxRelay(settings, engine, db.asyncpg_dsn(db.service_url(settings, name)), name=name)
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
    app.state.consumer_specs = tuple(consumers)  # what it consumes, for the registry's check (tests/test_layers.py)
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)  # inside: 413s are logged
    app.add_middleware(RequestContextMiddleware, service=name)
    configure_tracing(name)  # OTEL_* variables; off by default
    if tracing_enabled():
        app.add_middleware(TracingMiddleware, service=name)

    @app.get("/healthz", tags=["probes"], summary="The process is alive")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        tags=["probes"],
        summary="200 only when the database and the broker answer, consumers hold partitions, the relay publishes",
    )
    async def readyz() -> JSONResponse:
        runtime: ServiceRuntime = app.state.runtime
        database_ok, broker_ok = await asyncio.gather(
            db.ping(runtime.engine), broker_reachable(settings)
        )
        OUTBOX_PENDING.set(runtime.relay.pending)
        problems = _worker_problems(runtime)
        checks = {
            "database": database_ok,
            "broker": broker_ok,
            "consumers": not any(p["component"] == "consumer" for p in problems),
            "relay": not any(p["component"] == "relay" for p in problems),
        }
        ok = all(checks.values())
        body: dict[str, object] = {"status": "ready" if ok else "unready", "checks": checks}
        if problems:
            body["problems"] = problems
        return JSONResponse(body, status_code=200 if ok else 503)

    app.add_route("/metrics", metrics_endpoint, include_in_schema=False)
    install_offline_docs(app)  # /docs and /redoc from local assets (no CDN)
    for router in routers:
        app.include_router(router, responses=PROBLEM_RESPONSES)
    return app


def _worker_problems(runtime: ServiceRuntime) -> list[dict[str, object]]:
    """What keeps the consumers or the relay from working for longer than MKR_READY_STALL_SECONDS."""
    limit = runtime.settings.ready_stall_seconds
    problems: list[dict[str, object]] = []
    relay = runtime.relay
    if relay.idempotence_unsupported:
        # At once, not after the delay: it will not fix itself.
        problems.append({
            "component": "relay", "problem": "idempotence_unsupported",
            "detail": "the broker has no idempotent producer; set MKR_KAFKA_ENABLE_IDEMPOTENCE=false "
                      "or use a broker that has one",
        })
    elif relay.failing_for() > limit:
        problems.append({
            "component": "relay", "problem": "failing", "seconds": round(relay.failing_for()),
            "last_error": relay.last_error,
        })
    for consumer in runtime.consumers:
        if consumer.unassigned_for() > limit:
            problems.append({
                "component": "consumer", "consumer": consumer.name, "problem": "no_assignment",
                "seconds": round(consumer.unassigned_for()), "last_recreated": consumer.last_recreated_reason,
            })
    return problems


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


class BodyLimitMiddleware:
    """413 for a request body above `max_bytes`, before any route, authentication or parsing runs.

    A declared `Content-Length` above the limit is refused unread. Otherwise (chunked bodies have no
    length) the body is received and counted here, and refused as soon as the count passes the limit;
    a body within it is handed on whole, so nothing behind this middleware sees a partial body.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [value for name, value in scope.get("headers") or [] if name == b"content-length"]
        if any(not value.strip().isdigit() or int(value) > self.max_bytes for value in declared):
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left: nobody to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay() -> Message:
            if pending:
                return pending.pop()
            return await receive()  # after the body: wait for the disconnect, as a server would

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem_response(
            413,
            f"The request body is larger than {self.max_bytes} bytes.",
            headers={"Connection": "close"},  # the rest of the body is not read
        )
        await response(scope, receive, send)

"""What every service's app factory shares: lifespan (database, outbox relay, consumers) and probes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
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
from shared.leader import Leadership
from shared.observability import (
    OUTBOX_PENDING,
    WORKER_LEADER,
    RequestContextMiddleware,
    TracingMiddleware,
    configure_tracing,
    mark_this_process_dead,
    metrics_endpoint,
    prune_dead_processes,
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
    tasks: list[asyncio.Task[None]] = field(default_factory=list)  # every worker's (election, per-worker jobs)
    leader_tasks: list[asyncio.Task[None]] = field(default_factory=list)  # the leader's background jobs
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    leadership: Leadership | None = None  # None: no election, this process runs everything

    @property
    def is_leader(self) -> bool:
        return self.leadership is None or self.leadership.is_leader

    @property
    def role(self) -> str:
        return "leader" if self.is_leader else "follower"


@functools.cache
def _freeze_startup_objects() -> None:
    """Once per process, when the first service has started: what it built (modules, models, compiled SQL,
    the app) moves out of the collector's reach (gc.freeze), so full collections under load scan only what
    requests create — fewer and shorter pauses. Once only: a test process starting many stacks freezes the
    first one's startup objects and no more."""
    gc.collect()
    gc.freeze()


def create_service_app(
    *,
    name: str,
    settings: Settings,
    routers: Sequence[APIRouter],
    migrations: Path,
    consumers: Sequence[ConsumerSpec] = (),
    background: Sequence[BackgroundJob] = (),
    per_worker: Sequence[BackgroundJob] = (),
    resources: Sequence[Callable[[], contextlib.AbstractAsyncContextManager[Any]]] = (),
    title: str,
    version: str = "1.0.0",
) -> FastAPI:
    """Build a service: routers, error handlers, probes, and a lifespan that migrates and starts workers.

    `background` jobs, the consumers and the relay run in one process per service database when leader
    election is on (several workers, MKR_LEADER_ELECTION): the leader's. `per_worker` jobs run in every
    worker (what serves that worker's own clients, such as notifications' SSE notifier).
    `resources`: opened before the migrations (which may need them: intake's key store), closed last.
    """

    async def start_leader_work(runtime: ServiceRuntime) -> None:
        """What runs in one process per service: the relay, the consumers, the leader's background jobs."""
        relay = OutboxRelay(settings, runtime.engine, db.asyncpg_dsn(db.service_url(settings, name)), name=name)
        runtime.relay = relay
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
            runtime.leader_tasks.append(
                asyncio.create_task(_guarded(job, runtime), name=getattr(job, "__name__", "job"))
            )
        WORKER_LEADER.labels(name).set(1)

    async def stop_leader_work(runtime: ServiceRuntime) -> None:
        WORKER_LEADER.labels(name).set(0)
        await _stop_tasks(runtime.leader_tasks)
        for consumer in runtime.consumers:
            await consumer.stop()
        runtime.consumers.clear()
        await runtime.relay.stop()

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
        prune_dead_processes()
        with contextlib.suppress(Exception):
            # Topics now if the broker is up; the relay and consumers retry otherwise.
            await asyncio.wait_for(ensure_topics(settings), timeout=10)
        if settings.elects_leader:
            runtime.leadership = Leadership(
                name, db.asyncpg_dsn(db.service_url(settings, name)), retry_seconds=settings.leader_retry_seconds,
                on_gain=lambda: start_leader_work(runtime), on_loss=lambda: stop_leader_work(runtime),
                stopping=runtime.stopping,
            )
            WORKER_LEADER.labels(name).set(0)
            await runtime.leadership.try_acquire()  # the first worker up leads at once
            runtime.tasks.append(asyncio.create_task(runtime.leadership.run(), name="leader-election"))
        else:
            await start_leader_work(runtime)
        for job in per_worker:
            runtime.tasks.append(asyncio.create_task(_guarded(job, runtime), name=getattr(job, "__name__", "job")))
        _freeze_startup_objects()
        try:
            yield
        finally:
            runtime.stopping.set()
            await _stop_tasks(runtime.tasks)
            if runtime.is_leader:
                await stop_leader_work(runtime)
            if runtime.leadership is not None:
                await runtime.leadership.release()
            await engine.dispose()
            mark_this_process_dead()

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
        # A follower serves HTTP only: the relay and the consumers are the leader's, checked by its /readyz.
        leader = runtime.is_leader
        if leader:
            OUTBOX_PENDING.set(runtime.relay.pending)
        problems = _worker_problems(runtime) if leader else []
        checks = {"database": database_ok, "broker": broker_ok}
        if leader:
            checks["consumers"] = not any(p["component"] == "consumer" for p in problems)
            checks["relay"] = not any(p["component"] == "relay" for p in problems)
        ok = all(checks.values())
        body: dict[str, object] = {
            "status": "ready" if ok else "unready", "checks": checks, "role": runtime.role, "pid": os.getpid(),
        }
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


async def _stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(task, timeout=10)
    tasks.clear()


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

"""The intake service: reporting cases, risk, protection orders, consent, the audit trail."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlmodel import col
from starlette.background import BackgroundTask

from services.intake import domain, erasure, links_api, service, survivor_api
from services.intake.api import router
from services.intake.config import IntakeConfig
from services.intake.events import on_referral_event
from services.intake.keystore import KeyStore
from services.intake.models import Case
from services.intake.transfers import router as transfers_router
from shared.app import ConsumerSpec, ServiceRuntime, create_service_app
from shared.auth import Principal
from shared.crypto import FieldCipher, SearchIndexer
from shared.errors import Problem, problem_response
from shared.events import REFERRAL_TOPIC
from shared.pruning import pruning_job, shared_targets
from shared.scheduler import periodic
from shared.settings import Settings, get_settings

log = logging.getLogger("mkr.intake")


def key_census(config: IntakeConfig) -> Callable[[ServiceRuntime], Awaitable[None]]:
    """Recount which keyed trigrams are rare (the duplicate search probes with those) every few minutes."""

    async def scan(runtime: ServiceRuntime) -> int:
        async with runtime.sessions() as session, session.begin():
            await service.count_survivor_keys(session)
        return 0  # never "more to do at once": under steady reporting a municipality is always a little stale

    return periodic("key_census", scan, lambda: config.key_census_seconds)


async def prune_orphan_keys(runtime: ServiceRuntime, keys: KeyStore, grace: timedelta) -> int:
    """Delete the key store's keys of reports whose data write failed (keystore.py); how many."""

    async def existing(case_ids: list[uuid.UUID]) -> set[uuid.UUID]:
        async with runtime.sessions() as session:
            rows = await session.execute(sa.select(col(Case.id)).where(col(Case.id).in_(case_ids)))
            return set(rows.scalars())

    return await keys.prune_orphans(existing, grace=grace)


def orphan_keys(config: IntakeConfig, keys: KeyStore) -> Callable[[ServiceRuntime], Awaitable[None]]:
    async def scan(runtime: ServiceRuntime) -> int:
        pruned = await prune_orphan_keys(runtime, keys, timedelta(seconds=config.orphan_key_grace_seconds))
        if pruned:
            log.info("orphan case keys pruned", extra={"count": pruned})
        return 0

    return periodic("orphan_keys", scan, lambda: config.orphan_key_scan_seconds)


async def _audited_denial(request: Request, exc: service.CaseHidden) -> JSONResponse:
    """The 404 of a hidden case, then the attempt written to the case's audit trail: after the answer is
    sent (so its timing does not tell a hidden case from a missing one), in a transaction of its own (the
    request's was rolled back by the error)."""
    runtime: ServiceRuntime = request.app.state.runtime

    async def record() -> None:
        try:
            async with runtime.sessions() as session, session.begin():
                await service.record_denied(session, exc)
        except Exception as error:  # logged by class only: the message could name the caller or the case
            log.error("could not audit a denied case access", extra={"error_class": type(error).__name__})

    response = problem_response(exc.status, exc.detail, title=exc.title, type_=exc.type, instance=request.url.path)
    response.background = BackgroundTask(record)
    return response


def _audited_refusal(default: Any) -> Callable[..., Any]:
    """The app's own problem answer; a 403 to an authenticated caller is also written to the audit trail
    (of the case the path names, if any), after the answer and in a transaction of its own."""

    async def handler(request: Request, exc: Problem) -> Response:
        response = await default(request, exc)
        principal = getattr(request.state, "principal", None)
        if exc.status != 403 or not isinstance(principal, Principal):
            return response
        try:
            case_id: uuid.UUID | None = uuid.UUID(str(request.path_params["case_id"]))
        except (KeyError, ValueError):
            case_id = None
        runtime: ServiceRuntime = request.app.state.runtime

        async def record() -> None:
            try:
                async with runtime.sessions() as session, session.begin():
                    await service.record_forbidden(session, principal, case_id)
            except Exception as error:  # logged by class only: the message could name the caller or the case
                log.error("could not audit a refused request", extra={"error_class": type(error).__name__})

        response.background = BackgroundTask(record)
        return response

    return handler


def create_app(settings: Settings | None = None, config: IntakeConfig | None = None) -> FastAPI:
    settings = settings or get_settings()
    config = (config or IntakeConfig()).for_profile(settings.country)
    cipher = FieldCipher.from_settings(settings)
    keys = KeyStore(settings, cipher)
    app = create_service_app(
        name="intake",
        settings=settings,
        routers=[router, transfers_router, survivor_api.router, links_api.router],
        migrations=Path(__file__).parent / "migrations",
        consumers=[ConsumerSpec("case-access", [REFERRAL_TOPIC], on_referral_event)],
        background=[
            key_census(config),
            erasure.retention_job(settings, keys),
            erasure.tombstone_job(settings, keys),
            orphan_keys(config, keys),
            pruning_job(settings, shared_targets(settings, idempotency=True)),
        ],
        resources=[keys.opened],
        title="MKR intake",
    )
    app.state.intake_config = config
    app.state.default_screen = domain.default_screen(settings.country)
    app.add_exception_handler(service.CaseHidden, _audited_denial)  # type: ignore[arg-type]
    app.add_exception_handler(Problem, _audited_refusal(app.exception_handlers[Problem]))
    app.state.cipher = cipher
    app.state.keys = keys
    app.state.indexer = SearchIndexer.from_settings(settings)
    return app

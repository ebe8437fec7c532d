"""The intake service: reporting cases, risk, protection orders, consent, the audit trail."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI

from services.intake import service
from services.intake.api import router
from services.intake.config import IntakeConfig
from services.intake.events import on_referral_event
from shared.app import ConsumerSpec, ServiceRuntime, create_service_app
from shared.crypto import FieldCipher, SearchIndexer
from shared.events import REFERRAL_TOPIC
from shared.scheduler import periodic
from shared.settings import Settings, get_settings


def key_census(config: IntakeConfig) -> Callable[[ServiceRuntime], Awaitable[None]]:
    """Recount which keyed trigrams are rare (the duplicate search probes with those) every few minutes."""

    async def scan(runtime: ServiceRuntime) -> int:
        async with runtime.sessions() as session, session.begin():
            await service.count_survivor_keys(session)
        return 0  # never "more to do at once": under steady reporting a municipality is always a little stale

    return periodic("key_census", scan, lambda: config.key_census_seconds)


def create_app(settings: Settings | None = None, config: IntakeConfig | None = None) -> FastAPI:
    settings = settings or get_settings()
    config = config or IntakeConfig()
    app = create_service_app(
        name="intake",
        settings=settings,
        routers=[router],
        migrations=Path(__file__).parent / "migrations",
        consumers=[ConsumerSpec("case-access", [REFERRAL_TOPIC], on_referral_event)],
        background=[key_census(config)],
        title="MKR intake",
    )
    app.state.intake_config = config
    app.state.cipher = FieldCipher.from_settings(settings)
    app.state.indexer = SearchIndexer.from_settings(settings)
    return app

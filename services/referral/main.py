"""The referral service: the MKR/ETN directory, routing cases to members, meetings, plans and reports."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.referral.api import router
from services.referral.config import ReferralConfig
from services.referral.consumer import CONSUMED_TOPICS, make_handler
from services.referral.scheduler import deadline_scheduler
from shared.app import ConsumerSpec, create_service_app
from shared.pruning import pruning_job, shared_targets
from shared.sealed import TextSealer
from shared.settings import Settings, get_settings


def create_app(settings: Settings | None = None, config: ReferralConfig | None = None) -> FastAPI:
    settings = settings or get_settings()
    config = config or ReferralConfig()
    app = create_service_app(
        name="referral",
        settings=settings,
        routers=[router],
        migrations=Path(__file__).parent / "migrations",
        consumers=[ConsumerSpec("routing", CONSUMED_TOPICS, make_handler(settings, config))],
        background=[deadline_scheduler(config), pruning_job(settings, shared_targets(settings, idempotency=False))],
        title="MKR referral",
    )
    app.state.referral_config = config
    app.state.sealer = TextSealer.from_settings(settings, "referral")
    return app

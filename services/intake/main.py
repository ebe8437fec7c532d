"""The intake service: reporting cases, risk, protection orders, consent, the audit trail."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.intake.api import router
from services.intake.config import IntakeConfig
from services.intake.events import on_referral_event
from shared.app import ConsumerSpec, create_service_app
from shared.crypto import FieldCipher, SearchIndexer
from shared.events import REFERRAL_TOPIC
from shared.settings import Settings, get_settings


def create_app(settings: Settings | None = None, config: IntakeConfig | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = create_service_app(
        name="intake",
        settings=settings,
        routers=[router],
        migrations=Path(__file__).parent / "migrations",
        consumers=[ConsumerSpec("case-access", [REFERRAL_TOPIC], on_referral_event)],
        title="MKR intake",
    )
    app.state.intake_config = config or IntakeConfig()
    app.state.cipher = FieldCipher.from_settings(settings)
    app.state.indexer = SearchIndexer.from_settings(settings)
    return app

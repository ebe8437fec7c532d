"""The referral service: routing cases to MKR/ETN members."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.referral.api import router
from services.referral.events import CONSUMED_TOPICS, make_handler
from shared.app import ConsumerSpec, create_service_app
from shared.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    return create_service_app(
        name="referral",
        settings=settings,
        routers=[router],
        migrations=Path(__file__).parent / "migrations",
        consumers=[ConsumerSpec("routing", CONSUMED_TOPICS, make_handler(settings))],
        title="MKR referral",
    )

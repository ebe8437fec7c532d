"""The notifications service: inbox, live stream, webhooks and e-mail."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.notifications.api import router
from services.notifications.events import CONSUMED_TOPICS, on_event
from shared.app import ConsumerSpec, create_service_app
from shared.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        name="notifications",
        settings=settings or get_settings(),
        routers=[router],
        migrations=Path(__file__).parent / "migrations",
        consumers=[ConsumerSpec("alerts", CONSUMED_TOPICS, on_event)],
        title="MKR notifications",
    )

"""The intake service: reporting cases."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.intake.api import router
from shared.app import create_service_app
from shared.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        name="intake",
        settings=settings or get_settings(),
        routers=[router],
        migrations=Path(__file__).parent / "migrations",
        title="MKR intake",
    )

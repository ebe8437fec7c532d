"""The shelter service: beds, placements and the rent bonus."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.shelter.api import router
from shared.app import create_service_app
from shared.settings import Settings, get_settings


def create_app(settings: Settings | None = None) -> FastAPI:
    return create_service_app(
        name="shelter",
        settings=settings or get_settings(),
        routers=[router],
        migrations=Path(__file__).parent / "migrations",
        title="MKR shelter",
    )

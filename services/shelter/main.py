"""The shelter service: beds, placements and the rent bonus."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from services.shelter import api, rent_bonus
from services.shelter.config import ShelterConfig
from services.shelter.contact import ContactSealer
from services.shelter.events import CONSUMED_TOPICS, make_handler
from services.shelter.scheduler import rent_bonus_scheduler
from shared.app import ConsumerSpec, create_service_app
from shared.crypto import FieldCipher
from shared.pruning import pruning_job, shared_targets
from shared.sealed import TextSealer
from shared.settings import Settings, get_settings


def create_app(settings: Settings | None = None, config: ShelterConfig | None = None) -> FastAPI:
    settings = settings or get_settings()
    config = config or ShelterConfig()
    app = create_service_app(
        name="shelter",
        settings=settings,
        routers=[api.router, rent_bonus.router],
        migrations=Path(__file__).parent / "migrations",
        consumers=[ConsumerSpec("cases", CONSUMED_TOPICS, make_handler(settings))],
        background=[rent_bonus_scheduler(config), pruning_job(settings, shared_targets(settings, idempotency=True))],
        title="MKR shelter",
    )
    app.state.shelter_config = config
    cipher = FieldCipher.from_settings(settings)
    app.state.shelter_sealer = ContactSealer(cipher)
    app.state.text_sealer = TextSealer(cipher, "shelter")
    return app

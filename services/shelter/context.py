"""What the shelter's routes share (api.py, rent_bonus.py): the app's config and sealer, the case a write is about."""

from __future__ import annotations

import uuid

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from services.shelter.config import ShelterConfig
from services.shelter.models import CaseProjection
from shared.errors import Problem, conflict, not_found
from shared.sealed import TextSealer


def config_of(request: Request) -> ShelterConfig:
    config: ShelterConfig = request.app.state.shelter_config
    return config


def text_sealer_of(request: Request) -> TextSealer:
    """Free text at rest (discharge and decision reasons): sealed like names (shared/sealed.py)."""
    sealer: TextSealer = request.app.state.text_sealer
    return sealer


async def known_case(
    session: AsyncSession, case_id: uuid.UUID, municipality: str, config: ShelterConfig
) -> CaseProjection | None:
    """The projected case for a new placement or application, or None while intake's event has not arrived
    (allowed unless configured); 409 while the case is closed."""
    case = await session.get(CaseProjection, case_id)
    if case is not None and case.municipality != municipality:
        raise not_found("case")
    if case is None and config.require_known_case:
        raise Problem(404, "Unknown case: intake has not reported it (yet).", title="Unknown case")
    if case is not None and case.closed_at is not None:
        raise conflict("The case is closed; reopen it at intake first.")
    return case

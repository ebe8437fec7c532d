"""What the shelter's routes share (api.py, rent_bonus.py): the app's config and sealer, the case a write is about
(read-your-writes: `await_case` before the transaction, `known_case` inside it)."""

from __future__ import annotations

import uuid

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from services.shelter.config import ShelterConfig
from services.shelter.models import CaseProjection
from shared.db import table_of
from shared.errors import conflict, not_found
from shared.projection import ProjectionBehind, require_known, row_exists
from shared.sealed import TextSealer


def config_of(request: Request) -> ShelterConfig:
    config: ShelterConfig = request.app.state.shelter_config
    return config


def text_sealer_of(request: Request) -> TextSealer:
    """Free text at rest (discharge and decision reasons): sealed like names (shared/sealed.py)."""
    sealer: TextSealer = request.app.state.text_sealer
    return sealer


async def await_case(session: AsyncSession, request: Request, case_id: uuid.UUID) -> None:
    """Read-your-writes (shared/projection.py), where the case is required (`MKR_SHELTER_REQUIRE_KNOWN_CASE`):
    wait for the projection, else 409 with Retry-After. Otherwise an unknown case is accepted at once, so a
    broker outage never blocks an emergency placement."""
    if config_of(request).require_known_case:
        wait = request.app.state.settings.projection_wait_seconds
        await require_known(session, row_exists(table_of(CaseProjection).c.case_id, case_id), wait_seconds=wait)


async def known_case(
    session: AsyncSession, case_id: uuid.UUID, municipality: str, config: ShelterConfig
) -> CaseProjection | None:
    """The projected case for a new placement or application, or None while intake's event has not arrived
    (allowed unless configured); 409 while the case is closed."""
    case = await session.get(CaseProjection, case_id)
    if case is not None and case.municipality != municipality:
        raise not_found("case")
    if case is None and config.require_known_case:
        raise ProjectionBehind("case")  # the wait before the transaction (await_case) ran out
    if case is not None and case.closed_at is not None:
        raise conflict("The case is closed; reopen it at intake first.")
    return case

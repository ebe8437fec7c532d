"""The shelter tests need only the shelter service: a session stack of it alone (real PostgreSQL and
broker from the session's settings), so they start fast and do not depend on the other services."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.shelter.config import ShelterConfig
from shared.settings import Settings
from tests.support import Stack, running_stack


@pytest.fixture(scope="session")
async def stack(settings: Settings) -> AsyncIterator[Stack]:
    # The scheduler's periodic scan stays out of the way; scheduler tests run their own (short) ones.
    options = {"shelter": {"config": ShelterConfig(scan_seconds=3600)}}
    async with running_stack(settings, ("shelter",), options) as running:
        yield running

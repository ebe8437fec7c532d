"""Intake alone, in-process, on the session's real PostgreSQL and broker: what `mkr import` talks to."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from shared import db
from shared.settings import Settings
from tests.support import Stack, running_stack


@pytest.fixture(scope="package")
async def intake(settings: Settings) -> AsyncIterator[Stack]:
    """Its own database and topics, so that a thousand imported cases load no other test's services."""
    run = uuid.uuid4().hex[:4]
    own = settings.model_copy(update={"database_prefix": f"{settings.database_prefix}im{run}_",
                                      "kafka_topic_prefix": f"{settings.kafka_topic_prefix}im{run}."})
    try:
        async with running_stack(own, ("intake",)) as stack:
            yield stack
    finally:
        await db.drop_database(own, "intake")

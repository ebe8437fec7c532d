"""Referral's application layer: one function per command, called by the routes (`api.py`).

Each takes a unit of work (the session, settings, config, sealer and the caller) and a command (the
request's pydantic body, or a small dataclass naming the object it acts on), enforces the rules
(`access.py` for who, `domain.py` for what), writes the change and its events in one transaction, and
returns what it wrote; the route shapes the answer. They run without HTTP too (tests/referral/test_commands.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.referral.config import ReferralConfig
from services.referral.models import CaseFact
from shared.auth import Principal
from shared.projection import require_known, rows_exist
from shared.sealed import TextSealer
from shared.settings import Settings


@dataclass(frozen=True)
class UnitOfWork:
    """What a command works with: a session without a transaction yet (the command opens it), the
    settings, the service's config, the sealer of free text, and the caller."""

    session: AsyncSession
    settings: Settings
    config: ReferralConfig
    sealer: TextSealer
    principal: Principal


def now() -> datetime:
    return datetime.now(UTC)


async def await_cases(uow: UnitOfWork, case_ids: Sequence[uuid.UUID]) -> None:
    """Read-your-writes (shared/projection.py): a case reported a moment ago may not be projected yet;
    before the command's transaction, else 409 with `Retry-After`."""
    wait = uow.settings.projection_wait_seconds
    await require_known(uow.session, rows_exist(col(CaseFact.case_id), list(case_ids)), wait_seconds=wait)

"""Direct tests of referral's application layer (no HTTP, no broker): the running service's database,
a unit of work for a principal, and projected cases and members written straight into it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from services.referral.commands import UnitOfWork
from services.referral.models import CaseFact, Member
from shared.auth import Principal, Role
from tests.support import Stack


@asynccontextmanager
async def session_of(stack: Stack) -> AsyncIterator[AsyncSession]:
    """A session on referral's database (no transaction open: a command opens its own)."""
    async with stack.apps["referral"].state.runtime.sessions() as session:
        yield session


def unit_of_work(stack: Stack, session: AsyncSession, principal: Principal) -> UnitOfWork:
    app = stack.apps["referral"]
    return UnitOfWork(session, stack.settings, app.state.referral_config, app.state.sealer, principal)


def principal(role: str, municipality: str, *, member_id: uuid.UUID | None = None, **claims: Any) -> Principal:
    return Principal(
        sub=f"{role}-{uuid.uuid4().hex[:8]}",
        role=Role(role),
        municipality=municipality,
        member_id=None if member_id is None else str(member_id),
        **claims,
    )


async def seed_member(stack: Stack, municipality: str, kind: str, *, active: bool = True) -> Member:
    async with session_of(stack) as session, session.begin():
        member = Member(municipality=municipality, name=f"{kind} office", kind=kind, services=[kind], active=active)
        session.add(member)
    return member


async def seed_case(stack: Stack, municipality: str, **facts: Any) -> CaseFact:
    """A case as the projection holds it once intake's `case.reported` was consumed."""
    values: dict[str, Any] = {
        "case_id": uuid.uuid4(),
        "case_number": f"D-{uuid.uuid4().int % 10**6:06d}",
        "municipality": municipality,
        "reported_municipality": municipality,
        "reported_at": datetime.now(UTC),
        "risk_level": "low",
        "violence_types": ["physical"],
        "needs": [],
        "consent_share_with": ["social_services"],
    }
    values.update(facts)
    async with session_of(stack) as session, session.begin():
        case = CaseFact(**values)
        session.add(case)
    return case

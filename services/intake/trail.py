"""Writing and reading a case's audit trail (`audit_log`); `audit.py` verifies its hash chain."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from services.intake.access import CaseHidden
from services.intake.models import AuditEntry, Case
from shared.auth import Principal
from shared.db import table_of
from shared.paging import Keyset, fetch_page


async def record_audit(session: AsyncSession, principal: Principal, case: Case, action: str) -> None:
    await record_audit_many(session, principal, [case], action)


async def record_audit_many(session: AsyncSession, principal: Principal, cases: list[Case], action: str) -> None:
    if not cases:
        return
    now = datetime.now(UTC)
    table = table_of(AuditEntry)
    await session.execute(
        table.insert(),
        [
            {
                "at": now,
                "case_id": case.id,
                "municipality": case.municipality,
                "sub": principal.sub,
                "role": principal.role.value,
                "action": action,
            }
            for case in cases
        ],
    )


async def record_denied(session: AsyncSession, denied: CaseHidden) -> None:
    table = table_of(AuditEntry)
    await session.execute(
        table.insert().values(
            at=datetime.now(UTC),
            case_id=denied.case_id,
            municipality=denied.case_municipality,
            sub=denied.principal.sub,
            role=denied.principal.role.value,
            action="case.access_denied",
        )
    )


async def record_forbidden(session: AsyncSession, principal: Principal, case_id: uuid.UUID | None) -> None:
    """A 403: in the trail of the case the path names when there is one (and it exists), else of no case."""
    case = await session.get(Case, case_id) if case_id is not None else None
    table = table_of(AuditEntry)
    await session.execute(
        table.insert().values(
            at=datetime.now(UTC),
            case_id=case.id if case else None,
            municipality=case.municipality if case else principal.municipality,
            sub=principal.sub,
            role=principal.role.value,
            action="access.forbidden",
        )
    )


AUDIT_ORDER = Keyset("audit", (AuditEntry.id,))  # the order of the hash chain


async def audit_trail(
    session: AsyncSession, case_id: uuid.UUID, *, limit: int, cursor: str | None
) -> tuple[list[AuditEntry], str | None]:
    """One page of a case's trail, oldest first, and the next page's cursor."""
    stmt = sa.select(AuditEntry).where(col(AuditEntry.case_id) == case_id)
    return await fetch_page(session, stmt, AUDIT_ORDER, limit, cursor)

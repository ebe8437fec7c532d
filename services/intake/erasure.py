"""Erasing a case (CONTRACT §12; issue #17): on a lawful request, or by retention after closure.

The case's data key is destroyed (crypto-shredding: every copy of its ciphertext, backups included,
no longer opens), its identity/narrative/close-reason ciphertext and its blind-index row are deleted,
the free text of its protection orders (court, reference) is cleared. Coded facts, risk history,
consent records and the audit trail stay, so reports do not change. `case.anonymised` tells referral,
shelter and notifications to erase their own free text for the case.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from services.intake import casekeys
from services.intake.casefile import personal_context
from services.intake.events import case_anonymised
from services.intake.models import AuditEntry, Case, CaseTransfer, IdentityCorrection, ProtectionOrder, SurvivorIndex
from shared.crypto import FieldCipher
from shared.db import table_of
from shared.scheduler import claim_due, periodic
from shared.settings import Settings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from shared.app import ServiceRuntime

log = logging.getLogger("mkr.intake.erasure")

ERASED = "erased"  # what `cases.personal` holds once the case is erased: no ciphertext at all
RETENTION_BATCH = 50
RETENTION_SUB = "mkr-retention"


async def erase(
    session: AsyncSession,
    settings: Settings,
    master: FieldCipher,
    case: Case,
    *,
    reason: str,
    cause: str,
    sub: str,
    role: str,
) -> None:
    """Erase `case` in the caller's transaction (the row locked by the caller), audit it, publish it."""
    now = datetime.now(UTC)
    await casekeys.destroy(session, case.id)
    await session.execute(sa.delete(SurvivorIndex).where(SurvivorIndex.case_id == case.id))  # type: ignore[arg-type]
    await session.execute(
        sa.update(ProtectionOrder)
        .where(ProtectionOrder.case_id == case.id)  # type: ignore[arg-type]
        .values(court=None, reference=None)
    )
    await session.execute(
        sa.update(IdentityCorrection)
        .where(IdentityCorrection.case_id == case.id)  # type: ignore[arg-type]
        .values(previous=None)
    )
    await session.execute(  # a transfer's reasons may tell her circumstances: gone with the rest
        sa.update(CaseTransfer)
        .where(CaseTransfer.case_id == case.id)  # type: ignore[arg-type]
        .values(reason=ERASED, decline_reason=None)
    )
    case.personal = ERASED
    case.close_reason = None
    case.erased_at = now
    case.erasure_reason = master.encrypt(reason, personal_context(case.id, "erasure_reason"))
    session.add(case)
    await session.flush()
    table = table_of(AuditEntry)
    await session.execute(
        table.insert().values(
            at=now, case_id=case.id, municipality=case.municipality, sub=sub, role=role, action=f"case.erased.{cause}"
        )
    )
    await case_anonymised(session, settings, case, cause=cause)


def retention_cutoff(years: int, now: datetime) -> datetime:
    """Closed before this instant is past retention (a year counted as 365.25 days)."""
    return now - timedelta(days=365.25 * years)


async def anonymise_due(session: AsyncSession, settings: Settings, master: FieldCipher) -> int:
    """One batch of cases closed longer than the retention period, erased once (rows another replica
    holds are skipped). Returns how many were erased; 0 when retention is off."""
    years = settings.retention_years_after_closure
    if years <= 0:
        return 0
    stmt = sa.select(Case).where(
        Case.status == "closed",  # type: ignore[arg-type]
        Case.erased_at.is_(None),  # type: ignore[union-attr]
        Case.closed_at < retention_cutoff(years, datetime.now(UTC)),  # type: ignore[operator,arg-type]
    ).order_by(Case.closed_at)  # type: ignore[arg-type]
    due: list[Case] = await claim_due(session, stmt, limit=RETENTION_BATCH)
    for case in due:
        await erase(session, settings, master, case, reason="retention period after closure",
                    cause="retention", sub=RETENTION_SUB, role="system")
    return len(due)


def retention_job(settings: Settings, master: FieldCipher) -> Callable[[ServiceRuntime], Awaitable[None]]:
    """The scheduled, once-only anonymisation of cases past `MKR_RETENTION_YEARS_AFTER_CLOSURE`."""

    async def scan(runtime: ServiceRuntime) -> int:
        async with runtime.sessions() as session, session.begin():
            erased = await anonymise_due(session, settings, master)
        if erased:
            log.info("cases anonymised by retention", extra={"count": erased})
        return erased

    return periodic("retention", scan, lambda: settings.retention_scan_seconds)


def is_erased(case: Case) -> bool:
    return case.erased_at is not None


__all__ = ["ERASED", "anonymise_due", "erase", "is_erased", "retention_job"]
